"""The recipe: schema (schema.py) and the only YAML reader (load.py). Filters and model blocks
are defined beside their code (synthfer/filters.py, synthfer/models/specs.py) and named here."""

from synthfer.filters import Band, Filters, Thresholds
from synthfer.models.specs import Preprocess, QualityPreprocess, QualitySpec, VAPreprocess, VASpec
from synthfer.recipe.load import LoadedRecipe, diff_inputs, load_recipe
from synthfer.recipe.schema import (FORMAT_VERSION, Execution, Identities, ImageSpec, Output, Recipe, Splits,
                                    Targets, point_key)

__all__ = ["FORMAT_VERSION", "Band", "Execution", "Filters", "Identities", "ImageSpec", "LoadedRecipe", "diff_inputs",
           "Output", "Preprocess", "QualityPreprocess", "QualitySpec", "Recipe", "Splits", "Targets", "Thresholds",
           "VAPreprocess", "VASpec", "load_recipe", "point_key"]
