"""MLflow sources for ``superpos export`` and ``superpos evaluate``: one run, the best run of a
Table 1 cell, or the best run of every cell of an experiment.

A cell is (task, method, model, dropout), as in Table 1; its best run is the FINISHED run whose
best evaluation has the highest Table 1 score (``analysis.table1.best_evaluations`` over the
cell's main (m, softmax) variant, read through ``analysis.runs.load_experiment``, the report's
fast path). The exported prompt is the run's ``prompt.safetensors``: the prompt of its last
evaluation (docs/mlflow-layout.md).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from analysis.runs import client, load_experiment
from analysis.table1 import best_evaluations, main_variant
from superpos.adapter import check_out_dir
from superpos.errors import ConfigError
from superpos.export import NOT_EXPORTABLE, export_prompt
from superpos.run_dir import BEST_PROMPT_FILE, CONFIG_FILE, PROMPT_FILE

DROPOUT = {"on": True, "off": False}


def download_run(tracking_uri: str, run_id: str, dest: Path) -> tuple:
    """(config, prompt tensors, run, score) of an ended MLflow trial run: its best evaluation's
    prompt and score where it logged one (``best_prompt.safetensors``), else its last
    (``superpos.run_dir.saved_prompt``); ConfigError naming what is missing."""
    from mlflow.exceptions import MlflowException
    from safetensors.torch import load_file

    from superpos.config import TrainConfig

    mlflow_client = client(tracking_uri)
    try:
        run = mlflow_client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"no MLflow run {run_id!r} at {tracking_uri}") from None
    if run.info.status != "FINISHED":
        raise ConfigError(f"MLflow run {run_id} is {run.info.status}; only FINISHED runs are exported or evaluated")
    names = {a.path for a in mlflow_client.list_artifacts(run_id)}
    prompt, score_key = (BEST_PROMPT_FILE, "best_score") if BEST_PROMPT_FILE in names else (PROMPT_FILE, "score")
    missing = [f for f in (CONFIG_FILE, prompt) if f not in names]
    if missing:
        raise ConfigError(f"MLflow run {run_id} has no artifact {', '.join(missing)}")
    config = TrainConfig.load(Path(mlflow_client.download_artifacts(run_id, CONFIG_FILE, str(dest))))
    return config, load_file(mlflow_client.download_artifacts(run_id, prompt, str(dest))), run, run.data.metrics.get(score_key)


def export_run(tracking_uri: str, run_id: str, out, overwrite: bool = False) -> Path:
    """``superpos export --tracking-uri URI --run-id ID --out FOLDER``."""
    check_out_dir(Path(out), overwrite)
    with tempfile.TemporaryDirectory() as tmp:
        config, tensors, _, score = download_run(tracking_uri, run_id, Path(tmp))
    return export_prompt(config, tensors, out, where=f"MLflow run {run_id}", score=score, run_id=run_id, overwrite=overwrite)


def best_runs(tracking_uri: str, experiment: str):
    """Per cell, the FINISHED run with the highest best score: a DataFrame with run_id and score."""
    exp = load_experiment(tracking_uri, experiment)
    best = best_evaluations(main_variant(exp.runs[exp.runs["run_status"] == "FINISHED"]), exp.history)
    if best.empty:
        return best
    best = best.sort_values("score", ascending=False, kind="stable")
    return best.drop_duplicates(["task", "method", "model", "dropout"]).reset_index(drop=True)


def best_cell_run(tracking_uri: str, experiment: str, task: str, method: str, model: str, dropout: str | None = None) -> str:
    """The run id of the best FINISHED run of one cell (both dropout settings when ``dropout`` is None)."""
    if dropout is not None and dropout not in DROPOUT:
        raise ConfigError(f"unknown dropout {dropout!r}; allowed: on, off")
    best = best_runs(tracking_uri, experiment)
    cell = best[(best["task"] == task) & (best["method"] == method) & (best["model"] == model)] if not best.empty else best
    if dropout is not None and not cell.empty:
        cell = cell[cell["dropout"] == DROPOUT[dropout]]
    if cell.empty:
        there = sorted({f"{r.task}/{r.method}/{r.model}/dropout {'on' if r.dropout else 'off'}" for r in best.itertuples()}) if not best.empty else []
        cell_name = f"{task}/{method}/{model}" + (f"/dropout {dropout}" if dropout else "")
        raise ConfigError(f"experiment {experiment!r} has no finished run with a score in cell {cell_name}; cells with one: {', '.join(there) or 'none'}")
    return cell.sort_values("score", ascending=False, kind="stable").iloc[0]["run_id"]


def cell_folder(out_dir: Path, row) -> Path:
    model = re.sub(r"[^A-Za-z0-9._-]+", "--", row.model)
    return out_dir / model / f"{row.task}_{row.method}_dropout-{'on' if row.dropout else 'off'}"


def export_all(tracking_uri: str, experiment: str, out_dir, overwrite: bool = False) -> tuple[list[Path], list[str]]:
    """The best run of every cell into ``out_dir/<model>/<task>_<method>_dropout-<on|off>``;
    cells of ATTEMPT and full fine-tuning are skipped (returned as notes). Every target folder is
    checked before the first is written."""
    best = best_runs(tracking_uri, experiment)
    if best.empty:
        raise ConfigError(f"experiment {experiment!r} has no finished run with a score")
    skipped = best[best["method"].isin(list(NOT_EXPORTABLE))]
    best = best[~best["method"].isin(list(NOT_EXPORTABLE))]
    notes = [f"skipped {r.task}/{r.method}/{r.model}: {NOT_EXPORTABLE[r.method]}" for r in skipped.itertuples()]
    targets = [(r.run_id, cell_folder(Path(out_dir), r)) for r in best.itertuples()]
    for _, folder in targets:
        check_out_dir(folder, overwrite)
    return [export_run(tracking_uri, run_id, folder, overwrite) for run_id, folder in targets], notes


def evaluate_run(tracking_uri: str, run_id: str, **kwargs) -> dict:
    """``superpos evaluate --tracking-uri URI --run-id ID``: the run's artifacts as a run directory."""
    import json

    from superpos.evaluate import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        _, _, _, score = download_run(tracking_uri, run_id, Path(tmp))
        (Path(tmp) / "metrics.jsonl").write_text(json.dumps({"score": score}) + "\n")
        return evaluate(tmp, **kwargs) | {"source": f"MLflow run {run_id}"}
