"""SuperGLUE tasks in their original JSONL layout and on the hub (methods.md sections 3-4).

Original files (``<TASK>/*.jsonl`` of the SuperGLUE zips): one JSON object a line; BoolQ and
WiC labels are JSON booleans, COPA labels integers, CB and RTE labels strings. MultiRC nests
a passage's questions and their answer options in one line; every answer option becomes one
example, grouped by question (``"<paragraph idx>-<question idx>"``, as the hub's ``idx``
struct gives it) so that EM can be computed per question. Label orders follow the hub's
class labels (``aps/super_glue``).
"""

from superpos.errors import DataError
from superpos.tasks.base import Task

HUB = "aps/super_glue"
BOOLEAN = {False: 0, True: 1}


def _list(node: dict, key: str, where: str) -> list:
    value = node.get(key) if isinstance(node, dict) else None
    if not isinstance(value, list):
        raise DataError(f"{where}: missing field {key!r} (expected a list)")
    return value


def flatten_multirc(row: dict, where: str) -> list[tuple[dict, str, str]]:
    """One MultiRC line -> one flat row per answer option: paragraph, question, answer, label."""
    passage = row.get("passage")
    if not isinstance(passage, dict) or passage.get("text") is None:
        raise DataError(f"{where}: missing field 'passage.text'")
    flat = []
    for i, q in enumerate(_list(passage, "questions", f"{where}, passage")):
        at_q = f"{where}, passage.questions[{i}]"
        group = f"{row.get('idx')}-{q.get('idx') if isinstance(q, dict) else None}"
        for j, a in enumerate(_list(q, "answers", at_q)):
            if not isinstance(a, dict):
                raise DataError(f"{at_q}.answers[{j}]: expected a JSON object")
            answer = {"paragraph": passage["text"], "question": q.get("question"), "answer": a.get("text"), "label": a.get("label")}
            flat.append((answer, f"{at_q}.answers[{j}]", group))
    return flat


def multirc_hub_group(row: dict) -> str:
    return f"{row['idx']['paragraph']}-{row['idx']['question']}"


BOOLQ = Task(
    name="boolq",
    prefix="boolq",
    fields={"passage": "passage", "question": "question"},
    label_column="label",
    labels=("False", "True"),
    raw_labels=BOOLEAN,
    metrics=("accuracy",),
    file_format="jsonl",
    hub=(HUB, "boolq"),
    context="passage",
)

CB = Task(
    name="cb",
    prefix="cb",
    fields={"hypothesis": "hypothesis", "premise": "premise"},
    label_column="label",
    labels=("entailment", "contradiction", "neutral"),
    raw_labels={"entailment": 0, "contradiction": 1, "neutral": 2},
    metrics=("macro_f1", "accuracy"),
    file_format="jsonl",
    hub=(HUB, "cb"),
    context="premise",
)

COPA = Task(
    name="copa",
    prefix="copa",
    fields={"choice1": "choice1", "choice2": "choice2", "premise": "premise", "question": "question"},
    label_column="label",
    labels=("choice1", "choice2"),
    raw_labels={0: 0, 1: 1},
    metrics=("accuracy",),
    file_format="jsonl",
    hub=(HUB, "copa"),
    context="premise",
)

MULTIRC = Task(
    name="multirc",
    prefix="multirc",
    fields={"question": "question", "answer": "answer", "paragraph": "paragraph"},
    label_column="label",
    labels=("False", "True"),
    raw_labels={0: 0, 1: 1},
    metrics=("f1a", "em"),
    file_format="jsonl",
    hub=(HUB, "multirc"),
    flatten=flatten_multirc,
    hub_group=multirc_hub_group,
    context="paragraph",
)

SUPERGLUE_RTE = Task(
    name="superglue_rte",
    prefix="rte",
    fields={"hypothesis": "hypothesis", "premise": "premise"},
    label_column="label",
    labels=("entailment", "not_entailment"),
    raw_labels={"entailment": 0, "not_entailment": 1},
    metrics=("accuracy",),
    file_format="jsonl",
    hub=(HUB, "rte"),
    context="premise",
)

WIC = Task(
    name="wic",
    prefix="wic",
    fields={"sentence1": "sentence1", "sentence2": "sentence2", "word": "word"},
    label_column="label",
    labels=("False", "True"),
    raw_labels=BOOLEAN,
    metrics=("accuracy",),
    file_format="jsonl",
    hub=(HUB, "wic"),
)

SUPERGLUE_TASKS = (MULTIRC, SUPERGLUE_RTE, CB, COPA, WIC, BOOLQ)
