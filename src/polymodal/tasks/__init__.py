"""Tasks: one module per kind of target, registered into `TASKS`.

Add a task by subclassing `Task` in a module of its own and registering it; see
CONTRIBUTING.md. `infer_task` asks the registered tasks in their `inference_order`.
"""

from polymodal.tasks import (  # noqa: F401  (registration)
    binary,
    image,
    match,
    multiclass,
    multilabel,
    music,
    regression,
    text,
)
from polymodal.tasks.base import (
    TASKS,
    TargetPrediction,
    TargetState,
    Task,
    register_task,
    task_for,
)
from polymodal.tasks.targets import encode_targets, fit_target, generated_counts, infer_task

__all__ = [
    "TASKS",
    "TargetPrediction",
    "TargetState",
    "Task",
    "encode_targets",
    "fit_target",
    "generated_counts",
    "infer_task",
    "register_task",
    "task_for",
]
