"""Small GLUE/SuperGLUE data sets for tests: hub-schema records and their original-format files.

``hub_records(task, split)`` gives rows as the hub (``nyu-mll/glue``, ``aps/super_glue``)
serves them; ``write_original(root)`` writes the same rows in the original formats (GLUE TSV
with quoting off, MRPC's BOM, CoLA without header; SuperGLUE JSONL, MultiRC nested), laid
out like ../shared/data; ``write_parquet(root)`` writes them as hub-schema Parquet files.
Texts hold unbalanced ``"`` so that a reader with quoting on would fail.
"""

from __future__ import annotations

import json
from pathlib import Path

TASK_NAMES = ("qqp", "qnli", "mnli", "sst2", "stsb", "mrpc", "cola", "multirc", "rte", "cb", "copa", "wic", "boolq", "superglue_rte")
N = 8  # rows per split (MultiRC: answer options)

NAMES = {
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
    "superglue_rte": ("entailment", "not_entailment"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "cb": ("entailment", "contradiction", "neutral"),
}


def splits_of(task: str) -> tuple[str, ...]:
    return ("train", "validation_matched", "validation_mismatched") if task == "mnli" else ("train", "validation")


def hub_records(task: str, split: str, n: int = N) -> list[dict]:
    tag = f"{task} {split}"
    rows = []
    for i in range(n):

        def text(kind: str) -> str:
            return f'{kind} {i} of {tag} "quoted'

        label = i % (3 if task in ("mnli", "cb") else 2)
        if task in ("sst2", "cola"):
            row = {"sentence": text("sentence")}
        elif task in ("mrpc", "rte", "stsb"):
            row = {"sentence1": text("first"), "sentence2": text("second")}
        elif task == "qqp":
            row = {"question1": text("question one"), "question2": text("question two")}
        elif task == "qnli":
            row = {"question": text("question"), "sentence": text("sentence")}
        elif task in ("mnli", "cb", "superglue_rte"):
            row = {"premise": text("premise"), "hypothesis": text("hypothesis")}
        elif task == "boolq":
            row = {"question": text("question"), "passage": text("passage")}
        elif task == "copa":
            row = {"premise": text("premise"), "choice1": text("one"), "choice2": text("two"), "question": ("cause", "effect")[i % 2]}
        elif task == "wic":
            row = {"word": f"word{i}", "sentence1": text("first"), "sentence2": text("second"), "start1": 0, "end1": 4, "start2": 0, "end2": 4}
        elif task == "multirc":
            # 2 paragraphs x 2 questions x 2 answers; question idx counts over the file, as in SuperGLUE
            p, q, a = i // 4, i // 2, i % 2
            row = {"paragraph": f"paragraph {p} of {tag}", "question": f"question {q}?", "answer": f"answer {i}", "idx": {"paragraph": p, "question": q, "answer": a}}
            label = int(i % 3 == 0)
        else:
            raise KeyError(task)
        row["label"] = round(i * 0.7 % 5, 1) if task == "stsb" else label
        if task != "multirc":
            row["idx"] = i
        rows.append(row)
    return rows


def _tsv(path: Path, header: list[str] | None, rows: list[list], bom: bool = False) -> None:
    lines = ([header] if header else []) + rows
    text = "".join("\t".join(str(v) for v in line) + "\n" for line in lines)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_original_split(folder: Path, task: str, split: str, records: list[dict]) -> Path:
    """One split of one task in its original format; returns the file written."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = "tsv" if task in ("qqp", "qnli", "mnli", "sst2", "stsb", "mrpc", "cola", "rte") else "jsonl"
    path = folder / f"{split}.{ext}"
    R = records

    def name(r: dict) -> str:
        return NAMES[task][r["label"]]

    if task == "cola":
        _tsv(path, None, [[f"src{r['idx']}", r["label"], "" if r["label"] else "*", r["sentence"]] for r in R])
    elif task == "sst2":
        _tsv(path, ["sentence", "label"], [[r["sentence"], r["label"]] for r in R])
    elif task == "mrpc":
        _tsv(path, ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], [[r["label"], 100 + r["idx"], 200 + r["idx"], r["sentence1"], r["sentence2"]] for r in R], bom=True)
    elif task == "qqp":
        _tsv(path, ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], [[r["idx"], 1, 2, r["question1"], r["question2"], r["label"]] for r in R])
    elif task == "stsb":
        header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
        _tsv(path, header, [[r["idx"], "main-news", "f", "2012", r["idx"], "none", "none", r["sentence1"], r["sentence2"], f"{r['label']:.3f}"] for r in R])
    elif task == "mnli":
        labels = ["label1"] if split == "train" else ["label1", "label2", "label3", "label4", "label5"]
        header = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", *labels, "gold_label"]
        _tsv(path, header, [[r["idx"], 1, "1e", "fiction", "( a )", "( b )", "(ROOT a)", "(ROOT b)", r["premise"], r["hypothesis"], *[name(r)] * len(labels), name(r)] for r in R])
    elif task in ("qnli", "rte"):
        a, b = ("question", "sentence") if task == "qnli" else ("sentence1", "sentence2")
        _tsv(path, ["index", a, b, "label"], [[r["idx"], r[a], r[b], name(r)] for r in R])
    elif task in ("cb", "superglue_rte"):
        _jsonl(path, [{"premise": r["premise"], "hypothesis": r["hypothesis"], "label": name(r), "idx": r["idx"]} for r in R])
    elif task in ("boolq", "wic"):
        _jsonl(path, [{**r, "label": bool(r["label"])} for r in R])
    elif task == "copa":
        _jsonl(path, R)
    elif task == "multirc":
        lines: dict = {}
        for r in R:
            p = lines.setdefault(r["idx"]["paragraph"], {"idx": r["idx"]["paragraph"], "version": 1.1, "passage": {"text": r["paragraph"], "questions": []}})
            qs = p["passage"]["questions"]
            if not qs or qs[-1]["idx"] != r["idx"]["question"]:
                qs.append({"question": r["question"], "answers": [], "idx": r["idx"]["question"]})
            qs[-1]["answers"].append({"text": r["answer"], "idx": r["idx"]["answer"], "label": r["label"]})
        _jsonl(path, list(lines.values()))
    return path


def write_original(root: Path, n: int = N) -> Path:
    for task in TASK_NAMES:
        for split in splits_of(task):
            write_original_split(root / task, task, split, hub_records(task, split, n))
    return root


def write_parquet(root: Path, n: int = N) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for task in TASK_NAMES:
        (root / task).mkdir(parents=True, exist_ok=True)
        for split in splits_of(task):
            pq.write_table(pa.Table.from_pylist(hub_records(task, split, n)), root / task / f"{split}.parquet")
    return root
