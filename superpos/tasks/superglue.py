"""SuperGLUE tasks in their original JSONL layout (methods.md sections 3-4)."""

from superpos.tasks.base import Task

CB = Task(
    name="cb",
    prefix="cb",
    fields={"hypothesis": "hypothesis", "premise": "premise"},
    label_column="label",
    labels=("entailment", "contradiction", "neutral"),
    raw_labels={"entailment": 0, "contradiction": 1, "neutral": 2},
    metrics=("macro_f1", "accuracy"),
    file_format="jsonl",
)

SUPERGLUE_TASKS = (CB,)
