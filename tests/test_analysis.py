"""analysis/: tables, figures and the HTML report from an MLflow store with known histories.

The store follows docs/mlflow-layout.md: one parent run (superpos.role = sweep) and one child
run per trial with the layout's tags, metrics logged at steps 10..40 (epochs 1..4) and a
prompt.safetensors artifact (SuperPos: p_prime, token_ids).
"""

import base64
import re
import struct

import numpy as np
import pytest

from analysis.environments import environments
from analysis.report import build_report
from analysis.runs import load_experiment
from superpos.cli import main
from superpos.errors import ConfigError

SMALL, BASE = "google/t5-small-lm-adapt", "google/t5-base-lm-adapt"
STEPS = [10, 20, 30, 40]
TOKENS = {"A8": np.arange(8), "B8": np.arange(100, 108), "C8": np.arange(200, 208), "A4": np.arange(4)}

# (model, task, method, dropout, m, seed, token set, metrics per evaluation, status); all invalid when metrics is None
TRIALS = [
    (SMALL, "rte", "superpos", False, 8, 0, "A8", {"accuracy": [0.50, 0.66, 0.70, 0.72]}, "finished"),
    (SMALL, "rte", "superpos", False, 8, 1, "B8", {"accuracy": [0.40, 0.60, 0.74, 0.70]}, "finished"),
    (SMALL, "rte", "superpos", True, 8, 0, "A8", {"accuracy": [0.50, 0.55, 0.60, 0.62]}, "finished"),
    (SMALL, "rte", "superpos", False, 4, 0, "A4", {"accuracy": [0.50, 0.60, 0.65, 0.66]}, "finished"),
    (SMALL, "rte", "simple", False, None, 0, None, None, "finished"),
    (SMALL, "rte", "attempt", False, None, 0, None, {"accuracy": [0.50, 0.50, 0.50, 0.55]}, "finished"),
    (SMALL, "rte", "residual", False, None, 0, None, {"accuracy": [0.55, 0.60]}, "running"),
    (SMALL, "cb", "superpos", False, 8, 0, "A8", {"macro_f1": [0.3, 0.5, 0.6, 0.55], "accuracy": [0.5, 0.7, 0.8, 0.9]}, "finished"),
    (SMALL, "cb", "superpos", True, 8, 0, "A8", {"macro_f1": [0.2, 0.3, 0.4, 0.4], "accuracy": [0.5, 0.5, 0.6, 0.6]}, "finished"),
    (SMALL, "cb", "superpos", False, 4, 0, "A4", {"macro_f1": [0.2, 0.3, 0.4, 0.5], "accuracy": [0.4, 0.5, 0.6, 0.7]}, "finished"),
    (SMALL, "cb", "simple", False, None, 0, None, {"macro_f1": [0.1, 0.2, 0.3, 0.3], "accuracy": [0.3, 0.4, 0.5, 0.5]}, "finished"),
    (BASE, "rte", "superpos", False, 8, 0, "A8", {"accuracy": [0.6, 0.7, 0.8, 0.8]}, "finished"),
    (BASE, "rte", "simple", False, None, 0, None, {"accuracy": [0.5, 0.55, 0.6, 0.6]}, "finished"),
    (BASE, "cb", "superpos", False, 8, 0, "A8", {"macro_f1": [0.5, 0.6, 0.7, 0.8], "accuracy": [0.6, 0.7, 0.8, 0.9]}, "finished"),
    (BASE, "cb", "simple", False, None, 0, None, {"macro_f1": [0.2] * 4, "accuracy": [0.4] * 4}, "finished"),
    # other sampled tokens than every other task: comparable in no Figure 2d heatmap
    (BASE, "copa", "superpos", False, 8, 0, "C8", {"accuracy": [0.5, 0.6, 0.6, 0.7]}, "finished"),
]


def _log_trial(client, exp_id, parent, i, trial, tmp_path):
    from mlflow.entities import Metric
    from safetensors.numpy import save_file

    model, task, method, dropout, m, seed, tokens, metrics, status = trial
    tags = {
        "mlflow.parentRunId": parent, "superpos.role": "trial", "superpos.trial_id": f"t{i}", "task": task, "method": method,
        "model": model, "dropout": str(dropout).lower(), "softmax": "false", "m": "" if m is None else str(m), "seed": str(seed),
        "sweep": "demo", "status": status,
    }
    run = client.create_run(exp_id, tags=tags, run_name=f"trial{i}")
    rid = run.info.run_id
    invalid = metrics is None
    metrics = metrics or {"accuracy": [0.0] * 4}
    batch = []
    for j in range(len(next(iter(metrics.values())))):
        values = {k: v[j] for k, v in metrics.items()}
        values.update(score=float(np.mean(list(values.values()))), epoch=j + 1.0, invalid_rate=1.0 if invalid else 0.0, train_loss=1.0 / (j + 1))
        batch += [Metric(k, v, 1000 + j, STEPS[j]) for k, v in values.items()]
    client.log_batch(rid, metrics=batch)
    if tokens:
        rng = np.random.default_rng(i)
        path = tmp_path / f"prompt{i}" / "prompt.safetensors"
        path.parent.mkdir()
        save_file({"p_prime": rng.normal(size=(3, m)).astype(np.float32), "token_ids": TOKENS[tokens].astype(np.int64)}, str(path))
        client.log_artifact(rid, str(path))
    if status != "running":
        client.set_terminated(rid, "FINISHED")
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An MLflow sqlite store: experiment ``demo`` (TRIALS plus one run without a task tag) and
    experiment ``plain`` (simple runs only, no superpos)."""
    from mlflow import MlflowClient

    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("demo", artifact_location=(tmp / "artifacts").as_uri())
    parent = client.create_run(exp_id, tags={"superpos.role": "sweep", "superpos.sweep": "demo", "superpos.spec": "demo.yaml"}, run_name="demo")
    ids = [_log_trial(client, exp_id, parent.info.run_id, i, t, tmp) for i, t in enumerate(TRIALS)]
    untagged = client.create_run(exp_id, tags={"mlflow.parentRunId": parent.info.run_id, "superpos.role": "trial", "method": "simple"}, run_name="untagged")
    plain_id = client.create_experiment("plain", artifact_location=(tmp / "artifacts_plain").as_uri())
    plain_parent = client.create_run(plain_id, tags={"superpos.role": "sweep"}, run_name="plain").info.run_id
    for i, trial in enumerate(TRIALS):
        if trial[2] == "simple":
            _log_trial(client, plain_id, plain_parent, i, trial, tmp / "plain")
    empty_id = client.create_experiment("empty", artifact_location=(tmp / "artifacts_empty").as_uri())
    client.create_run(empty_id, tags={"superpos.role": "sweep"}, run_name="empty")
    started_id = client.create_experiment("started", artifact_location=(tmp / "artifacts_started").as_uri())
    tags = {"superpos.role": "trial", "task": "rte", "method": "superpos", "model": SMALL, "dropout": "false", "m": "8", "seed": "0", "status": "running"}
    client.create_run(started_id, tags=tags, run_name="first")
    return {"uri": uri, "ids": ids, "untagged": untagged.info.run_id, "tmp": tmp}


@pytest.fixture(scope="module")
def report(store):
    return build_report(store["uri"], "demo", store["tmp"] / "report")


def test_load_experiment_tidy_frames(store):
    exp = load_experiment(store["uri"], "demo")
    assert len(exp.runs) == len(TRIALS)
    assert set(exp.runs["run_id"]) == set(store["ids"])
    assert exp.runs["dropout"].dtype == bool
    first = exp.runs.set_index("run_id").loc[store["ids"][0]]
    assert (first["task"], first["method"], first["m"], first["seed"], first["status"]) == ("rte", "superpos", 8, "0", "finished")
    curve = exp.history[exp.history["run_id"] == store["ids"][0]]
    assert list(curve["step"]) == STEPS
    assert list(curve["epoch"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(curve["score"], [0.50, 0.66, 0.70, 0.72])
    assert len(exp.history[exp.history["run_id"] == store["ids"][6]]) == 2  # still running
    assert len(exp.problems) == 1 and store["untagged"] in exp.problems[0] and "lacks tag(s) task, model, dropout, seed" in exp.problems[0]


def test_table1_values(report):
    t1 = report.tables["table1"]
    rows = {(r["Model"], r["Method"], r["Dropout"]): r for _, r in t1.iterrows()}
    s, b = "T5v1.1 Small LM-Adapted", "T5v1.1 Base LM-Adapted"
    assert list(t1.columns) == ["Model", "Method", "Dropout", "RTE Acc.", "CB F1/Acc.", "COPA Acc.", "Avg."]
    assert list(rows) == [
        (s, "Simple PT", "✗"), (s, "ATTEMPT", "✗"), (s, "Residual PT", "✗"), (s, "SuperPos PT", "✓"), (s, "SuperPos PT", "✗"),
        (b, "Simple PT", "✗"), (b, "SuperPos PT", "✗"),
    ]
    # seeds 0 and 1 (m = 8, the most common setting; the m = 4 run is left out): best 72 and 74
    assert rows[s, "SuperPos PT", "✗"]["RTE Acc."] == "73.0±1.4"
    # the evaluation with the best score (step 40: 0.725), not each metric's own best
    assert rows[s, "SuperPos PT", "✗"]["CB F1/Acc."] == "55.0/90.0 (72.5)"
    assert rows[s, "SuperPos PT", "✗"]["Avg."] == "72.8"
    # ties: the first evaluation with the best score
    assert rows[s, "SuperPos PT", "✓"]["CB F1/Acc."] == "40.0/60.0 (50.0)"
    assert rows[s, "SuperPos PT", "✓"]["RTE Acc."] == "62.0"
    # never a valid label: 0 with the dagger
    assert rows[s, "Simple PT", "✗"]["RTE Acc."] == "0.0 †"
    assert rows[s, "Simple PT", "✗"]["CB F1/Acc."] == "30.0/50.0 (40.0)"
    assert rows[s, "Simple PT", "✗"]["Avg."] == "20.0"
    # still running, two evaluations; no CB run: "–" cells and no average
    assert rows[s, "Residual PT", "✗"]["RTE Acc."] == "60.0"
    assert rows[s, "Residual PT", "✗"]["CB F1/Acc."] == "–"
    assert rows[s, "Residual PT", "✗"]["Avg."] == "–"
    assert rows[s, "ATTEMPT", "✗"]["RTE Acc."] == "55.0"
    assert rows[b, "SuperPos PT", "✗"]["CB F1/Acc."] == "80.0/90.0 (85.0)"
    assert rows[b, "Simple PT", "✗"]["CB F1/Acc."] == "20.0/40.0 (30.0)"
    # the average covers the tasks of the row's model: the base model also has COPA
    assert rows[s, "SuperPos PT", "✗"]["COPA Acc."] == "–"
    assert rows[b, "SuperPos PT", "✗"]["COPA Acc."] == "70.0"
    assert rows[b, "SuperPos PT", "✗"]["Avg."] == "78.3"
    assert rows[b, "Simple PT", "✗"]["Avg."] == "–"


def test_table1_files(report):
    out = report.out_dir
    md = (out / "table1.md").read_text()
    assert "| T5v1.1 Small LM-Adapted | SuperPos PT | ✗ | 73.0±1.4 | 55.0/90.0 (72.5) | – | 72.8 |" in md
    tex = (out / "table1.tex").read_text()
    assert r"73.0$\pm$1.4" in tex and r"0.0 $^\dagger$" in tex and r"\begin{tabular}{lllllll}" in tex
    csv = (out / "table1.csv").read_text(encoding="utf-8")
    assert "73.0±1.4" in csv and "0.0 †" in csv
    values = (out / "table1_values.csv").read_text()
    assert "google/t5-small-lm-adapt,superpos,False,cb,macro_f1,55.0" in values


def test_table2_values(report):
    rows = {(r["Method"], r["Dropout"]): r for _, r in report.tables["table2"].iterrows()}
    assert ("ATTEMPT", "✗") not in rows
    # rte: min 0 (simple, all invalid) max 80; cb: min 30 max 85 -> superpos off small: 91.25, 77.27
    assert rows["SuperPos PT", "✗"]["T5v1.1 Small LM-Adapted"] == "84.3±7.0"
    assert rows["SuperPos PT", "✗"]["T5v1.1 Base LM-Adapted"] == "100.0±0.0"
    assert rows["Simple PT", "✗"]["T5v1.1 Base LM-Adapted"] == "37.5±37.5"
    assert rows["SuperPos PT", "✓"]["T5v1.1 Base LM-Adapted"] == "–"
    assert rows["Residual PT", "✗"]["T5v1.1 Small LM-Adapted"] == "75.0±0.0"
    assert any("lacks task(s) cb" in p for p in report.problems)
    # one row only: min-max is undefined
    assert "Table 2: task(s) copa left out: their score is the same in every row (or in only one row)" in report.problems


def test_convergence(report):
    rows = {(r["Model"], r["Method"], r["Dropout"]): r for _, r in report.tables["convergence"].iterrows()}
    superpos = rows["T5v1.1 Small LM-Adapted", "SuperPos PT", "✗"]
    # rte seed 0: 90% at step 20, 95% at 30; rte seed 1: 30, 30; cb: 30, 30
    assert (superpos["Runs"], superpos["Tasks"], superpos["Steps to 90%"], superpos["Steps to 95%"]) == ("3", "2", "27±6", "30±0")
    assert superpos["Epochs to 90%"] == "2.7±0.6"
    assert rows["T5v1.1 Small LM-Adapted", "Simple PT", "✗"]["Steps to 90%"] == "30"  # the all-invalid run does not count
    per_run = (report.out_dir / "convergence_runs.csv").read_text().splitlines()
    assert len(per_run) == 1 + len(TRIALS)


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_figures_are_images_of_stated_size(report):
    names = sorted(f.name for f in report.figures)
    assert names == sorted(f"fig2{p}_{m}" for p in "abcd" for m in ("google_t5-small-lm-adapt", "google_t5-base-lm-adapt"))
    for figure in report.figures:
        assert _png_size(figure.png) == (figure.width_px, figure.height_px)
        assert figure.width_px >= 400 and figure.height_px >= 300
        assert figure.pdf.read_bytes()[:5] == b"%PDF-" and figure.pdf.stat().st_size > 1000
    # the base model has no superpos run with dropout on
    assert any("Figure 2a: task rte has no superpos runs with dropout on (model google/t5-base-lm-adapt)" == p for p in report.problems)


def test_figure_2d_uses_runs_sharing_m_and_token_ids(report):
    fig = next(f for f in report.figures if f.name == "fig2d_google_t5-small-lm-adapt")
    # rte seed 1 (other tokens, better score) and the m = 4 runs are not mixed in
    assert "m = 8" in fig.title
    assert fig.notes == []
    base = next(f for f in report.figures if f.name == "fig2d_google_t5-base-lm-adapt")
    assert base.notes == ["Figure 2d: task(s) copa left out: no run with the same m = 8 and sampled token_ids as the other tasks"]


def test_cosine_matrices():
    from analysis.figures import cosine_matrices

    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[1.0, 1.0], [0.0, -1.0]])
    sims = cosine_matrices([a, b])
    assert sims.shape == (2, 2, 2)
    np.testing.assert_allclose(sims[0], [[1, np.sqrt(0.5)], [np.sqrt(0.5), 1]])
    np.testing.assert_allclose(sims[1], [[1, -1], [-1, 1]])


def test_html_is_self_contained(report):
    page = report.html.read_text(encoding="utf-8")
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == len(report.figures) == 8
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    for figure in report.figures:
        assert f"id='{figure.name}'" in page
    for name in ("table1", "table2", "convergence"):
        assert f"id='{name}'" in page
    assert "73.0±1.4" in page and "84.3±7.0" in page and "27±6" in page
    assert "lacks tag(s) task" in page
    assert "http" not in page.replace("data:image", "")


def test_rank_evaluated_runs_are_left_out(tmp_path):
    """Rank classification is not the paper's protocol: such runs never enter its tables."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("ranked", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp_id, tags={"superpos.role": "sweep"}, run_name="ranked").info.run_id
    generated, ranked = (_log_trial(client, exp_id, parent, i, TRIALS[0], tmp_path) for i in range(2))
    client.log_param(generated, "evaluation", "generate")
    client.log_param(ranked, "evaluation", "rank")
    exp = load_experiment(uri, "ranked")
    assert list(exp.runs["run_id"]) == [generated]
    assert len(exp.problems) == 1 and ranked in exp.problems[0] and "evaluated by 'rank' (param evaluation)" in exp.problems[0]


def test_no_superpos_runs(store, tmp_path):
    result = build_report(store["uri"], "plain", tmp_path)
    assert [f.name for f in result.figures] == ["fig2b_google_t5-small-lm-adapt", "fig2b_google_t5-base-lm-adapt"]
    assert "Figure 2d: no superpos runs of model 'google/t5-small-lm-adapt' in experiment 'plain'" in result.problems
    assert (tmp_path / "table1.md").is_file() and (tmp_path / "report.html").is_file()


def test_sweep_without_evaluations_yet(store, tmp_path):
    result = build_report(store["uri"], "started", tmp_path)
    assert result.problems == ["no run of experiment 'started' has an evaluation with a score yet: no tables or figures"]
    assert result.files == [tmp_path / "report.html"] and "no tables or figures" in result.html.read_text()


def test_bad_input_messages(store, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown experiment 'nope' at .*; experiments there: .*demo.*plain"):
        build_report(store["uri"], "nope", tmp_path)
    with pytest.raises(ConfigError, match=r"experiment 'empty' has no trial runs \(child runs with tag superpos.role = trial\)"):
        build_report(store["uri"], "empty", tmp_path)
    with pytest.raises(ConfigError, match=r"no MLflow database at"):
        build_report(f"sqlite:///{tmp_path / 'missing.db'}", "demo", tmp_path)
    with pytest.raises(ConfigError, match=r"model\(s\) t5-large not in experiment 'demo'; models there: google/t5-base"):
        build_report(store["uri"], "demo", tmp_path, models=["t5-large"])


def test_cli(store, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["report", "--tracking-uri", store["uri"], "--experiment", "demo", "--out", str(out),
                 "--model", BASE, "--task", "cb"])
    captured = capsys.readouterr()
    assert code == 0 and "report.html" in captured.out
    assert "superpos report: warning:" in captured.err
    assert (out / "fig2a_google_t5-base-lm-adapt.png").is_file() and not (out / "fig2a_google_t5-small-lm-adapt.png").exists()
    assert main(["report", "--tracking-uri", store["uri"], "--experiment", "nope", "--out", str(out)]) == 2
    assert "superpos report: error: unknown experiment 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_report_lists_environments_and_flags_a_mix(tmp_path, capsys):
    """Runs behind one table that ran on other versions or hardware are flagged (env.* tags)."""
    from mlflow import MlflowClient

    from superpos.environment import as_tags

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    a = {"torch": "2.13.0+cpu", "transformers": "5.25.0", "cpu": "Intel(R) Xeon(R)", "cuda": None}
    b = {**a, "transformers": "5.24.0", "cpu": "AMD EPYC"}
    exp_id = client.create_experiment("mixed", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp_id, tags={"superpos.role": "sweep"}, run_name="mixed").info.run_id
    for i, env in enumerate([a, a, b]):
        rid = _log_trial(client, exp_id, parent, i, TRIALS[12 + i], tmp_path)  # base: rte simple, cb superpos, cb simple
        for k, v in as_tags(env).items():
            client.set_tag(rid, k, v)
    assert main(["report", "--tracking-uri", uri, "--experiment", "mixed", "--out", str(tmp_path / "report")]) == 0
    captured = capsys.readouterr()
    assert "| Key | env 1 (2 runs) | env 2 (1 run) |" in captured.out
    assert "| cpu | Intel(R) Xeon(R) | AMD EPYC |" in captured.out and "| cuda | – | – |" in captured.out
    assert "Table 1, Table 2, convergence: the 3 runs mix 2 environments, differing in cpu, transformers" in captured.err


def test_environments_of_runs():
    import pandas as pd

    from analysis.environments import environment_key

    a, b = {"torch": "2.13.0", "cuda": None}, {"torch": "2.12.0", "cuda": None}
    runs = pd.DataFrame({"environment": [environment_key(e) for e in (a, b, a, {})]})
    table, warning = environments(runs, "Table 1")
    assert list(table.columns) == ["Key", "env 1 (2 runs)", "env 2 (1 run)", "env 3 (1 run)"]
    assert table.set_index("Key").loc["torch"].tolist() == ["2.13.0", "2.12.0", "–"]
    assert warning.startswith("Table 1: the 4 runs mix 3 environments (runs without env.* tags count as one), differing in torch")
    table, warning = environments(runs[:1], "Table 1")
    assert warning is None and table["env 1 (1 run)"].tolist() == ["–", "2.13.0"]  # keys sorted: cuda, torch


def test_claims_section(report):
    """The claims table is written and shown; one seed per paired cell gives no interval."""
    out = report.out_dir
    rows = {(r["Model"], r["Comparison"]): r for _, r in report.tables["claims"].iterrows()}
    s = "T5v1.1 Small LM-Adapted"
    # RTE: SuperPos seed 0 best 72 vs Simple PT's dagger run (0); the seed-1 SuperPos run has no partner
    assert rows[s, "SuperPos PT (dropout off) > Simple PT (dropout off)"]["RTE"] == "+72.0 (1 seed)"
    assert rows[s, "SuperPos PT: dropout off > on"]["RTE"] == "+10.0 (1 seed)"
    assert rows[s, "SuperPos PT: dropout off > on"]["Paper's figure"] == "Table 1; Figure 2a"
    for name in ("claims.csv", "claims.md", "claims.tex", "claims_values.csv"):
        assert (out / name).is_file()
    assert r"SuperPos PT (dropout off) $>$ Simple PT" in (out / "claims.tex").read_text()
    assert "<h2 id='claims'>Claims</h2>" in report.html.read_text()


def test_bench_runs_are_never_results(tmp_path):
    """The sweep benchmark's runs (tag superpos.bench; trainables/bench_sweep.py) sleep instead of
    training: left out of a real experiment, and an experiment of them is refused."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("mixed", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp_id, tags={"superpos.role": "sweep"}, run_name="mixed").info.run_id
    real, bench = (_log_trial(client, exp_id, parent, i, TRIALS[0], tmp_path) for i in range(2))
    client.set_tag(bench, "superpos.bench", "sweep-overhead")
    assert list(load_experiment(uri, "mixed").runs["run_id"]) == [real]

    only_id = client.create_experiment("only-bench", artifact_location=(tmp_path / "artifacts_only").as_uri())
    client.set_tag(_log_trial(client, only_id, parent, 2, TRIALS[0], tmp_path), "superpos.bench", "sweep-overhead")
    with pytest.raises(ConfigError, match="only benchmark runs"):
        load_experiment(uri, "only-bench")

    tagged_id = client.create_experiment("bench-x", artifact_location=(tmp_path / "artifacts_b").as_uri(), tags={"superpos.bench": "sweep-overhead"})
    _log_trial(client, tagged_id, parent, 3, TRIALS[0], tmp_path)
    with pytest.raises(ConfigError, match=r"holds benchmark runs \(tag superpos.bench = sweep-overhead\)"):
        load_experiment(uri, "bench-x")
