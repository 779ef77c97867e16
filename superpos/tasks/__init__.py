"""Task registry: every task by its CLI name (also its folder name in a data directory)."""

from superpos.errors import choose
from superpos.tasks.base import TEMPLATES, Example, Task
from superpos.tasks.glue import GLUE_TASKS
from superpos.tasks.superglue import SUPERGLUE_TASKS

TASKS: dict[str, Task] = {t.name: t for t in (*GLUE_TASKS, *SUPERGLUE_TASKS)}


def get_task(name: str, where: str = "") -> Task:
    choose("task", name, sorted(TASKS), where)
    return TASKS[name]


__all__ = ["TASKS", "TEMPLATES", "Example", "Task", "get_task"]
