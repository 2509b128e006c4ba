"""orchestra: inference-time compute as recipes.

    from orchestra import Recipe, run
    result = run("recipes/quickstart.yaml", task="reasoning_gym:basic_arithmetic", limit=10)
    print(result.accuracy)
"""

from orchestra.api import arun, run
from orchestra.backends import ModelSpec
from orchestra.budget import Budget, BudgetExceeded, Limits
from orchestra.candidate import Candidate
from orchestra.errors import RecipeError
from orchestra.problem import Message, Problem
from orchestra.recipe import Node, Recipe, load_recipe
from orchestra.results import ProblemResult, RunResult, RunSummary
from orchestra.tasks import Task, load_task
from orchestra.usage import Usage

__all__ = [
    "Budget",
    "BudgetExceeded",
    "Candidate",
    "Limits",
    "Message",
    "ModelSpec",
    "Node",
    "Problem",
    "ProblemResult",
    "Recipe",
    "RecipeError",
    "RunResult",
    "RunSummary",
    "Task",
    "Usage",
    "arun",
    "load_recipe",
    "load_task",
    "run",
]
