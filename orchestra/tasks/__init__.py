"""Tasks: problems in fixed splits with their ground truth, loaded by spec string.

`load_task("reasoning_gym:chain_sum?max_terms=2")`; task kinds are registered
classes (`orchestra.tasks.base.TASK_KINDS`), plugins through the `orchestra.tasks`
entry-point group. See `orchestra.tasks.spec` for the spec syntax.
"""

from orchestra.tasks.base import SPLITS, TASK_KINDS, Split, Task, task_kind
from orchestra.tasks.humaneval_task import HumanEvalTask
from orchestra.tasks.jsonl_task import JsonlTask
from orchestra.tasks.reasoning_gym_task import ReasoningGymTask
from orchestra.tasks.spec import DEFAULT_TASK, known_task_kinds, load_task, parse_spec

__all__ = [
    "DEFAULT_TASK",
    "SPLITS",
    "TASK_KINDS",
    "HumanEvalTask",
    "JsonlTask",
    "ReasoningGymTask",
    "Split",
    "Task",
    "known_task_kinds",
    "load_task",
    "parse_spec",
    "task_kind",
]
