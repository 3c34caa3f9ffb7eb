"""The recipe language: schemas of every section of a recipe, and reading YAML into them.

Only schemas and parsing live here; what runs a recipe (passes, pipeline, search) lives above it, so a
recipe can be validated without importing any of that.
"""

from compress.recipe.loading import (
    apply_override,
    explain,
    load_recipe,
    parse_recipe,
    set_path,
)
from compress.recipe.schema import PassSpec, Recipe

__all__ = ["PassSpec", "Recipe", "apply_override", "explain", "load_recipe", "parse_recipe", "set_path"]
