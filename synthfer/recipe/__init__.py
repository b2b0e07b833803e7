"""The recipe: schema (schema.py) and the only YAML reader (load.py)."""

from synthfer.recipe.load import LoadedRecipe, diff_inputs, load_recipe
from synthfer.recipe.schema import (FORMAT_VERSION, Band, Execution, Filters, Identities, ImageSpec, Output,
                                    Preprocess, QualityPreprocess, QualitySpec, Recipe, Splits, Targets, Thresholds,
                                    VAPreprocess, VASpec, point_key)

__all__ = ["FORMAT_VERSION", "Band", "Execution", "Filters", "Identities", "ImageSpec", "LoadedRecipe", "diff_inputs",
           "Output", "Preprocess", "QualityPreprocess", "QualitySpec", "Recipe", "Splits", "Targets", "Thresholds",
           "VAPreprocess", "VASpec", "load_recipe", "point_key"]
