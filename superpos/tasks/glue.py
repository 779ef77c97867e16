"""GLUE tasks in their original TSV layout (methods.md sections 3-4)."""

from superpos.tasks.base import Task

RTE = Task(
    name="rte",
    prefix="rte",
    fields={"sentence1": "sentence1", "sentence2": "sentence2"},
    label_column="label",
    labels=("entailment", "not_entailment"),
    raw_labels={"entailment": 0, "not_entailment": 1},
    metrics=("accuracy",),
    file_format="tsv",
)

SST2 = Task(
    name="sst2",
    prefix="sst2",
    fields={"sentence": "sentence"},
    label_column="label",
    labels=("negative", "positive"),
    raw_labels={"0": 0, "1": 1},
    metrics=("accuracy",),
    file_format="tsv",
)

GLUE_TASKS = (RTE, SST2)
