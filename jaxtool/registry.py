"""One small registry helper for every table of named things jaxtool looks up: training objectives
(`jaxtool.objectives`), model families (`jaxtool.models.family`), data sources
(`jaxtool.data.sources`), chat formats (`jaxtool.data.formats`), command tables
(`jaxtool.commands._registry`) and evaluation suites (`jaxtool.eval.suite`).

    FORMATS = Registry("chat format", ConfigError)
    FORMATS.register("hermes", "jaxtool.data.formats.hermes:HermesFormat")   # lazy: imported on first get
    FORMATS.register("mine", MyFormat)                                       # or the object itself
    FORMATS.get("hermse")   # ConfigError: unknown chat format 'hermse' (did you mean 'hermes'?); known: ...

An entry is either the object or a `"package.module:attr"` string, imported the first time it is
asked for (so listing names costs nothing and a lower layer can name an entry that lives in a
higher one without importing it). Registering the same entry again is a no-op; another entry under
a taken name is a `ValueError` unless `replace=True`. An unknown name raises the registry's
`JaxtoolError` subclass with the closest registered names first (`difflib`'s ratio), so every table
answers a typo the same way. Another module adds its own entry with `<table>.register(name, entry)`
when it is imported (e.g. a new objective in its own module; see tests/test_registry.py).

The registry reads and writes the dict it is given (`entries`), so a module can keep exposing that
dict as its public table (`SOURCES`, `FAMILIES`, `objectives.REGISTRY`).
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Generic, Iterator, MutableMapping, TypeVar

from jaxtool.errors import ConfigError, JaxtoolError

T = TypeVar("T")

__all__ = ["Registry", "closest_names", "import_target", "split_target"]


def split_target(target: str) -> tuple[str, str]:
    """`"pkg.mod:attr"` -> `("pkg.mod", "attr")`; ValueError for anything else."""
    module, sep, attr = target.partition(":") if isinstance(target, str) else ("", "", "")
    if not sep or not module or not attr or ":" in attr:
        raise ValueError(f"expected a 'package.module:attr' target, got {target!r}")
    return module, attr


_ABSENT = object()


def import_target(target: str, *, what: str = "entry", name: str = "?",
                  error: type[JaxtoolError] = ConfigError, absent: Any = _ABSENT) -> Any:
    """Import `"pkg.mod:attr"` and return the attribute. A registered module that is absent from
    this installation is `error` naming the module (or returns `absent` when one is given); an
    import error inside a present module is raised as is (it is a bug, not a missing entry)."""
    module_name, attr = split_target(target)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            if absent is not _ABSENT:
                return absent
            raise error(f"{what} {name!r} is registered but its module {module_name} is not present in this "
                        "installation") from None
        raise
    try:
        return getattr(module, attr)
    except AttributeError:
        raise error(f"{what} {name!r} is registered as {target} but {module_name} has no {attr!r}") from None


def closest_names(name: Any, names, n: int | None = None) -> list[str]:
    """`names` ordered by similarity to `name` (closest first, ties alphabetical); the first `n`."""
    key = str(name).lower()
    ranked = sorted(names, key=lambda k: (-difflib.SequenceMatcher(None, key, str(k).lower()).ratio(), str(k)))
    return ranked if n is None else ranked[:n]


class Registry(Generic[T]):
    """A name -> entry table with lazy `"module:attr"` entries and closest-name errors.

    what    : what an entry is, for messages ("chat format", "data source").
    error   : the `JaxtoolError` subclass raised for an unknown name (ConfigError for settings,
              DataError for data specs).
    entries : the dict to read and write (default: a new one); a module may expose it as its table.
    check   : called as `check(name, obj)` on every object entry when it is registered or first
              resolved (e.g. an objective's `kind` must be "sft" or "preference"); raise to refuse.
    message : `message(name, ranked_names) -> str` for an unknown name, when a call site keeps its
              own wording; the default is "unknown <what> 'x' (did you mean 'y'?); known <what>s: ...".
    builtins: called once before the first lookup (imports that register the built-in entries).
    """

    def __init__(self, what: str, error: type[JaxtoolError] = ConfigError,
                 entries: MutableMapping[str, Any] | None = None, *, check: Callable[[str, Any], None] | None = None,
                 message: Callable[[Any, list[str]], str] | None = None, builtins: Callable[[], None] | None = None):
        if not (isinstance(error, type) and issubclass(error, JaxtoolError)):
            raise TypeError(f"Registry({what!r}): error must be a JaxtoolError subclass, got {error!r}")
        self.what, self.error = what, error
        self.entries: MutableMapping[str, Any] = {} if entries is None else entries
        self._check, self._message, self._builtins = check, message, builtins
        self._resolved: dict[tuple[str, str], Any] = {}

    # -- writing ----------------------------------------------------------------------------------
    def register(self, name: str, entry: T | str, *, replace: bool = False) -> T | str:
        """Add `entry` (an object or a `"module:attr"` string) under `name`; returns the entry, so
        `OBJ = table.register("x", Obj(...))` reads naturally."""
        if not isinstance(name, str) or not name or ":" in name:
            raise ValueError(f"register({name!r}, {entry!r}): expected a name without ':' (a {self.what} name is a "
                             "non-empty string)")
        if isinstance(entry, str):
            try:
                split_target(entry)
            except ValueError:
                raise ValueError(f"register({name!r}, {entry!r}): expected a name without ':' and a "
                                 "'package.module:attr' target") from None
        elif self._check is not None:
            self._check(name, entry)
        old = self.entries.get(name, entry)
        if old is not entry and old != entry and not replace:
            raise ValueError(f"{self.what} {name!r} is already registered as {_describe(old)}; not replacing it "
                             f"with {_describe(entry)}")
        self.entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove `name` (tests that register a temporary entry clean up with this)."""
        self.entries.pop(name, None)

    # -- reading ----------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._builtins is not None:
            load, self._builtins = self._builtins, None
            load()

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(self.entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return isinstance(name, str) and name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def target(self, name: str) -> Any:
        """The entry as registered (a `"module:attr"` string stays a string); unknown -> `error`."""
        if name not in self:
            raise self.unknown(name)
        return self.entries[name]

    def get(self, name: str, *, source: str | None = None) -> T:
        """The entry registered under `name`, importing a lazy one on first use. An unknown name is
        `self.error` with the closest names (prefixed `source: ` when given)."""
        if name not in self:
            raise self.unknown(name, source=source)
        entry = self.entries[name]
        if not isinstance(entry, str):
            return entry
        key = (name, entry)
        if key not in self._resolved:
            obj = import_target(entry, what=self.what, name=name, error=self.error)
            if self._check is not None:
                self._check(name, obj)
            self._resolved[key] = obj
        return self._resolved[key]

    def closest(self, name: Any, n: int | None = None) -> list[str]:
        return closest_names(name, self.names(), n)

    def unknown(self, name: Any, *, source: str | None = None) -> JaxtoolError:
        """The error for a name that is not registered (returned, for the caller to raise)."""
        ranked = self.closest(name)
        if self._message is not None:
            text = self._message(name, ranked)
        else:
            close = difflib.get_close_matches(str(name), ranked, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            text = f"unknown {self.what} {name!r}{hint}; known {self.what}s: {', '.join(ranked)}"
        return self.error(f"{source}: {text}" if source else text)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {len(self.entries)} entries)"


def _describe(entry: Any) -> str:
    if isinstance(entry, str):
        return entry
    return getattr(entry, "__qualname__", None) or getattr(entry, "name", None) or repr(entry)
