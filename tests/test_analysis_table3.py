"""Table 3 (softmax on/off; original T5 vs T5v1.1), ATTEMPT runs without source prompts and the
inputs-over-the-limit table, from a synthetic MLflow store in the layout of docs/mlflow-layout.md."""

import pytest

from analysis.caveats import attempt_without_sources, inputs_table
from analysis.runs import load_experiment
from analysis.table3 import table3

SMALL, BASE, ORIGINAL = "google/t5-small-lm-adapt", "google/t5-base-lm-adapt", "t5-base"

# (model, task, method, softmax, sources tag, accuracy per evaluation)
RUNS = [
    (ORIGINAL, "rte", "superpos", False, None, [0.70, 0.80]),
    (SMALL, "rte", "superpos", False, None, [0.60, 0.65]),
    (SMALL, "rte", "superpos", True, None, [0.50, 0.52]),
    (BASE, "rte", "superpos", False, None, [0.66, 0.70]),
    (BASE, "rte", "superpos", True, None, [0.55, 0.60]),
    (SMALL, "rte", "attempt", False, "none", [0.50, 0.51]),
    (SMALL, "cb", "attempt", False, "sweep", [0.50, 0.51]),
]


def log_experiment(client, tmp_path, name, runs, counts=True):
    from mlflow.entities import Metric

    exp = client.create_experiment(name, artifact_location=(tmp_path / name).as_uri())
    parent = client.create_run(exp, tags={"superpos.role": "sweep", "superpos.sweep": name}).info.run_id
    for i, (model, task, method, softmax, sources, accuracy) in enumerate(runs):
        tags = {"mlflow.parentRunId": parent, "superpos.role": "trial", "superpos.trial_id": f"t{i}", "task": task, "method": method,
                "model": model, "dropout": "false", "softmax": str(softmax).lower(), "m": "128" if method == "superpos" else "",
                "seed": "0", "sweep": "t3", "status": "finished", **({"superpos.sources": sources} if sources else {})}
        rid = client.create_run(exp, tags=tags, run_name=f"{task}-{method}-{i}").info.run_id
        metrics = []
        for j, acc in enumerate(accuracy):
            values = {"accuracy": acc, "score": acc, "epoch": j + 1.0, "invalid_rate": 0.0}
            if counts:
                values |= {"shortened_train": 7.0 if task == "rte" else 0.0, "cut_train": 0.0, "shortened_validation": 2.0, "cut_validation": 0.0}
            metrics += [Metric(k, v, 1000 + j, 10 * (j + 1)) for k, v in values.items()]
        client.log_batch(rid, metrics=metrics)
        client.set_terminated(rid, "FINISHED")


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    """Experiment t3 (RUNS) and plain (T5v1.1 without softmax only, runs logged without counts)."""
    from mlflow import MlflowClient

    tmp = tmp_path_factory.mktemp("t3")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    log_experiment(client, tmp, "t3", RUNS)
    log_experiment(client, tmp, "plain", [r for r in RUNS if r[0] != ORIGINAL and not r[3]], counts=False)
    return uri


def test_table3_rows_softmax_and_original_t5_with_paper_rows_marked(uri):
    exp = load_experiment(uri, "t3")
    table = table3(exp.runs, exp.history)
    rows = {(r["Model"], r["Softmax"]): r for r in table.to_dict("records")}
    assert set(rows) == {("T5 Base", "✗"), ("T5v1.1 Small LM-Adapted", "✗"), ("T5v1.1 Small LM-Adapted", "✓"),
                         ("T5v1.1 Base LM-Adapted", "✗"), ("T5v1.1 Base LM-Adapted", "✓")}
    assert rows[("T5 Base", "✗")]["RTE Acc."] == "80.0" and rows[("T5v1.1 Small LM-Adapted", "✓")]["RTE Acc."] == "52.0"
    assert rows[("T5v1.1 Small LM-Adapted", "✓")]["Paper row"] == "yes"  # A.2 ran softmax on Small only
    assert rows[("T5v1.1 Base LM-Adapted", "✓")]["Paper row"] == "extension"
    assert set(table["Method"]) == {"SuperPos PT"} and "ATTEMPT" not in table.to_string()


def test_no_table3_without_softmax_or_original_t5_runs(uri):
    exp = load_experiment(uri, "plain")
    assert table3(exp.runs, exp.history) is None
    assert inputs_table(exp.runs, exp.history) is None


def test_attempt_without_sources_is_listed_and_inputs_counts_are_shown(uri):
    exp = load_experiment(uri, "t3")
    (line,) = attempt_without_sources(exp.runs)
    assert "1 ATTEMPT run(s) had no source prompts" in line and "rte-attempt-5" in line and "cb-attempt" not in line
    table = inputs_table(exp.runs, exp.history).set_index(["Model", "Task"])
    assert table.loc[("T5 Base", "RTE"), "Train: shortened / cut"] == "7 / 0"
    assert table.loc[("T5v1.1 Small LM-Adapted", "CB"), "Validation: shortened / cut"] == "2 / 0"


@pytest.mark.slow
def test_the_report_writes_table3_and_the_inputs_table(uri, tmp_path):
    from analysis.report import build_report

    report = build_report(uri, "t3", tmp_path / "report")
    assert {"table3", "inputs"} <= set(report.tables)
    assert (tmp_path / "report" / "table3.md").is_file() and "Table 3" in report.html.read_text()
    assert any("not the paper's ATTEMPT" in p for p in report.problems)
