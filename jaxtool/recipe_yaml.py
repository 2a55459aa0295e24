"""Reading YAML recipes strictly: PyYAML's `safe_load` plus three refusals, each a `ConfigError` that
names the file (and where it can, the key and line):

- a key given twice in one mapping (`batch_size: 8` ... `batch_size: 64`): PyYAML keeps the last one
  silently; here it is an error naming the key and both lines (YAML 1.2 §3.2.1.1: keys are unique);
- nesting deeper than `MAX_DEPTH` (PyYAML's recursive composer would die with a `RecursionError`);
- an integer of more than Python's 4300-digit conversion limit (a `ValueError` inside PyYAML's int
  constructor).

`jaxtool.config.read_yaml` calls `load(fh, path)`; the rest of the recipe rules live there."""

from __future__ import annotations

import yaml

from jaxtool.errors import ConfigError

MAX_DEPTH = 100   # real recipes nest three levels (loss.objective.*): 100 is far beyond any of them


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader whose mappings refuse duplicate keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merge keys may repeat
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: PyYAML's own error follows
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise ConfigError(f"{self.name}: key {key!r} is given twice, on line {first} and on line "
                                      f"{line}; keep one (YAML keeps only the last, silently)")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _depth(node, limit: int) -> int:
    """Nesting depth of a composed node tree, iteratively (no recursion to overflow)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        n, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(n, yaml.SequenceNode):
            stack.extend((c, d + 1) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            stack.extend((c, d + 1) for kv in n.value for c in kv)
    return deepest


def load(stream, path: str):
    """The document of `stream` (a text file or string), with the refusals above."""
    text = stream.read() if hasattr(stream, "read") else stream
    loader = _StrictLoader(text)
    loader.name = path
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError(f"{path}: nesting is too deep to be a recipe (more than {MAX_DEPTH} levels)") from None
        if node is None:
            return None
        if _depth(node, MAX_DEPTH) > MAX_DEPTH:
            raise ConfigError(f"{path}: nesting is too deep to be a recipe (more than {MAX_DEPTH} levels)")
        try:
            return loader.construct_document(node)
        except ConfigError:
            raise
        except ValueError as e:  # the int constructor: "Exceeds the limit (4300 digits) ..."
            raise ConfigError(f"{path}: a value cannot be read: {str(e).split(';')[0]}") from None
        except RecursionError:
            raise ConfigError(f"{path}: nesting is too deep to be a recipe") from None
    finally:
        loader.dispose()
