"""GLUE tasks in their original TSV layout and on the hub (methods.md sections 3-4).

Original files (``glue_data/<TASK>/*.tsv`` of the GLUE download script): tab-separated with
quoting off, a header line except CoLA (4 columns: source, label, original judgement,
sentence), MRPC starting with a byte-order mark. Label orders follow the hub's class labels
(``nyu-mll/glue``), so hub rows and original rows give the same indices.
"""

from superpos.tasks.base import HOLD_OUT_TRAIN, MNLI_RULE, Task

HUB = "nyu-mll/glue"

COLA = Task(
    name="cola",
    prefix="cola",
    fields={"sentence": "sentence"},
    label_column="label",
    labels=("unacceptable", "acceptable"),
    raw_labels={"0": 0, "1": 1},
    metrics=("mcc",),
    file_format="tsv",
    hub=(HUB, "cola"),
    columns=("source", "label", "original_label", "sentence"),
    context="sentence",
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
    hub=(HUB, "sst2"),
    heldout=HOLD_OUT_TRAIN,
    context="sentence",
)

MRPC = Task(
    name="mrpc",
    prefix="mrpc",
    fields={"sentence1": "#1 String", "sentence2": "#2 String"},
    label_column="Quality",
    labels=("not_equivalent", "equivalent"),
    raw_labels={"0": 0, "1": 1},
    metrics=("f1", "accuracy"),
    file_format="tsv",
    hub=(HUB, "mrpc"),
)

QQP = Task(
    name="qqp",
    prefix="qqp",
    fields={"question1": "question1", "question2": "question2"},
    label_column="is_duplicate",
    labels=("not_duplicate", "duplicate"),
    raw_labels={"0": 0, "1": 1},
    metrics=("f1", "accuracy"),
    file_format="tsv",
    hub=(HUB, "qqp"),
    heldout=HOLD_OUT_TRAIN,
)

STSB = Task(
    name="stsb",
    prefix="stsb",
    fields={"sentence1": "sentence1", "sentence2": "sentence2"},
    label_column="score",
    labels=(),
    value_range=(0.0, 5.0),
    metrics=("pearson", "spearman"),
    file_format="tsv",
    hub=(HUB, "stsb"),
)

MNLI = Task(
    name="mnli",
    prefix="mnli",
    fields={"hypothesis": "sentence2", "premise": "sentence1"},
    label_column="gold_label",
    labels=("entailment", "neutral", "contradiction"),
    raw_labels={"entailment": 0, "neutral": 1, "contradiction": 2},
    metrics=("accuracy",),
    file_format="tsv",
    hub=(HUB, "mnli"),
    # "validation" is the matched split: Table 1 reports MNLI matched accuracy
    splits={
        "train": "train",
        "validation": "validation_matched",
        "validation_matched": "validation_matched",
        "validation_mismatched": "validation_mismatched",
    },
    heldout=MNLI_RULE,
    context="premise",
)

QNLI = Task(
    name="qnli",
    prefix="qnli",
    fields={"question": "question", "sentence": "sentence"},
    label_column="label",
    labels=("entailment", "not_entailment"),
    raw_labels={"entailment": 0, "not_entailment": 1},
    metrics=("accuracy",),
    file_format="tsv",
    hub=(HUB, "qnli"),
    heldout=HOLD_OUT_TRAIN,
    context="sentence",
)

RTE = Task(
    name="rte",
    prefix="rte",
    fields={"sentence1": "sentence1", "sentence2": "sentence2"},
    label_column="label",
    labels=("entailment", "not_entailment"),
    raw_labels={"entailment": 0, "not_entailment": 1},
    metrics=("accuracy",),
    file_format="tsv",
    hub=(HUB, "rte"),
    context="sentence1",
)

GLUE_TASKS = (QQP, QNLI, MNLI, SST2, STSB, MRPC, COLA, RTE)
