"""One convention for every command that takes a recipe (train, itool, experiment diatool, quickstart):
the YAML recipe is given positionally (`jaxtool itool configs/itool/smollm2.yaml iterations=1`) or as
`--config RECIPE`, followed by key=value overrides, in any order after the flags."""

from __future__ import annotations

from jaxtool.errors import ConfigError


def add_recipe_args(p, what: str = "YAML recipe") -> None:
    """A `--config` flag and the positional `[RECIPE] [key=value ...]` list."""
    p.add_argument("--config", dest="config_flag", metavar="RECIPE", default=None,
                   help=f"{what} (may also be given as the first positional argument)")
    p.add_argument("overrides", nargs="*", metavar="[RECIPE] key=value",
                   help="a recipe file first (optional), then config overrides")


def is_override(item: str) -> bool:
    return "=" in item and not item.endswith((".yaml", ".yml"))


def recipe_and_overrides(flag: str | None, positional: str | None, overrides) -> tuple[str | None, list[str]]:
    """(recipe path or None, overrides) from `--config`, an optional positional recipe and the
    overrides; a recipe given both ways is an error naming both."""
    items = ([positional] if positional else []) + list(overrides or [])
    path = None
    if items and not is_override(items[0]):
        path, items = items[0], items[1:]
    stray = [x for x in items if not is_override(x)]
    if stray:
        raise ConfigError(f"expected key=value overrides after the recipe, got {stray[0]!r} (one recipe per run: "
                          "give it first, or as --config)")
    if flag and path:
        raise ConfigError(f"two recipes: --config {flag} and {path}; give one (positionally or as --config)")
    return flag or path, items
