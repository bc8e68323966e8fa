"""The recipe: one YAML file that says what to build, test, describe and publish.

``load_recipe(path)`` reads a file and returns a validated :class:`Recipe`, or raises
:class:`~publisher.errors.RecipeError` whose lines each name the file, the YAML line and the
dotted field, e.g. ``recipes/x.yaml:12: quantize.types[3]: unknown quant type 'Q4_K_X'``.

``fields`` holds the shared field types; ``sections``, ``quantize``, ``smoke`` and ``gptq`` one model
per recipe section; ``schema`` the whole :class:`Recipe`; and ``loader`` the YAML reading and the
file:line errors.
"""

from publisher.recipe.fields import FieldProblem, branch_name_problem, slug
from publisher.recipe.loader import dump_recipe, load_recipe, parse_recipe, recipe_json_schema
from publisher.recipe.quantize import Imatrix, Quantize, QuantVariant
from publisher.recipe.schema import Recipe
from publisher.recipe.sections import Branch, Card, Convert, Model, Publish, Source
from publisher.recipe.smoke import Expectation, Quality, Smoke, SmokePrompt

__all__ = [
    "Branch",
    "Card",
    "Convert",
    "Expectation",
    "FieldProblem",
    "Imatrix",
    "Model",
    "Publish",
    "Quality",
    "QuantVariant",
    "Quantize",
    "Recipe",
    "Smoke",
    "SmokePrompt",
    "Source",
    "branch_name_problem",
    "dump_recipe",
    "load_recipe",
    "parse_recipe",
    "recipe_json_schema",
    "slug",
]
