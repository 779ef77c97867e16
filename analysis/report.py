"""The whole report: Table 1, Table 2, convergence, Figure 2 (a)-(d) and one HTML page.

``build_report`` writes into ``out_dir``:

- ``table1.{csv,md,tex}`` (formatted) and ``table1_values.csv`` (tidy numbers, percent)
- ``table2.{csv,md,tex}`` and ``table2_values.csv``
- ``convergence.{csv,md,tex}`` and ``convergence_runs.csv`` (one row per run)
- ``claims.{csv,md,tex}`` and ``claims_values.csv``: the paper's comparisons with paired
  bootstrap intervals, per task and averaged (analysis/claims.py)
- ``table3.{csv,md,tex}`` when the experiment has softmax or original-T5 SuperPos runs, and
  ``inputs.{csv,md,tex}`` (inputs over the length limit per task and split)
- ``fig2{a,b,c,d}_<model>.{png,pdf}`` per model
- ``report.html``: self-contained (figures embedded as base64 PNG), opens with no server

It stops with ConfigError only when there is nothing to report (unknown experiment, no trial
runs); any part that cannot be built (e.g. Figure 2d without superpos runs) is skipped and its
reason listed in ``Report.problems`` and in the HTML, and everything else is still written.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from analysis.caveats import attempt_without_sources, inputs_table
from analysis.claims import claims_table, claims_values
from analysis.convergence import convergence_per_run, convergence_table
from analysis.environments import environments
from analysis.figures import PANELS, FigureFile
from analysis.labels import order_models
from analysis.render import to_html, write_table
from analysis.runs import Experiment, load_experiment
from analysis.table1 import best_evaluations, main_variant, row_scores, table1, table1_values
from analysis.table2 import table2
from analysis.table3 import table3
from superpos.errors import ConfigError

CAPTIONS = {
    "table1": "Table 1: best validation score (%) per task. Two-metric tasks show both metrics and, in parentheses, "
              "their mean (the Table 1 score); † = a run never produced a valid label (scored 0); mean±std over seeds; "
              "– = no run; Avg. = mean score over the model's tasks; each cell uses its method's most common (m, softmax) setting.",
    "table2": "Table 2: standardized overall scoring (methods.md section 6): per task, min-max normalised Table 1 scores "
              "over all rows of all models (ATTEMPT excluded), ×100; mean±population std over tasks.",
    "convergence": "Convergence: optimizer steps and epochs until a run first reaches 90% / 95% of its best validation "
                   "score; mean±std over the runs (tasks and seeds) of each row, at each method's Table 1 setting.",
    "claims": "Claims: the paper's comparisons, row A minus row B in Table 1 score (points) or in optimizer steps to 90% of "
              "the best score, paired by task and seed; 95% interval from a seeded paired bootstrap over seeds (per task) and over "
              "tasks and seeds (Avg.); a task holds the claim when its interval lies wholly on the claimed side of 0, is reversed "
              "when wholly on the other, within otherwise; 1 seed = no interval (not enough runs); Paper Δ = the same difference "
              "of the paper's Table 1/3 averages (analysis/claims.py, analysis/bootstrap.py for the intervals' coverage).",
    "environment": "Environment: versions and hardware recorded by the runs behind Table 1, Table 2 and convergence "
                   "(env.* tags, superpos env); one column per distinct environment; – = not recorded.",
    "table3": "Table 3 (appendix A.1, A.2): SuperPos PT without dropout on the original T5 Base and on T5v1.1 LM-adapted, "
              "softmax on the superposition weights off/on; best validation score (%) as in Table 1; Paper row: yes where the "
              "paper reports the cell, extension otherwise.",
    "inputs": "Inputs over max_input_len per split: shortened = the context field (passage, paragraph, premise) shortened, "
              "the question/hypothesis/answer kept whole; cut = the text cut at its end (superpos/inputs.py).",
}


@dataclass
class Report:
    out_dir: Path
    html: Path
    files: list[Path] = field(default_factory=list)
    #: formatted tables by name (table1, table2, convergence)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[FigureFile] = field(default_factory=list)
    #: what could not be built or was left out, one line each
    problems: list[str] = field(default_factory=list)


def build_report(tracking_uri: str, experiment: str, out_dir, models=None, tasks=None) -> Report:
    """Write every table and figure of ``experiment`` to ``out_dir`` (see the module docstring).

    ``models``: only these models (default: all in the experiment); ``tasks``: the tasks drawn in
    Figure 2 (default: all with runs); tables always cover every task.
    """
    exp = load_experiment(tracking_uri, experiment)
    if models:
        exp = exp.select_models(models)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(out_dir, out_dir / "report.html", problems=list(exp.problems))
    best = best_evaluations(main_variant(exp.runs), exp.history)
    if best.empty:
        report.problems.append(f"no run of experiment {experiment!r} has an evaluation with a score yet: no tables or figures")
    else:
        _tables(report, best, exp)
        for model in order_models(exp.runs["model"]):
            for panel, build in PANELS.items():
                try:
                    figure = build(exp, model, out_dir, tasks)
                except ConfigError as e:
                    report.problems.append(str(e))
                    continue
                report.figures.append(figure)
                report.files += [figure.png, figure.pdf]
                report.problems += figure.notes
    report.html.write_text(_html(report, exp), encoding="utf-8")
    report.files.append(report.html)
    return report


def _tables(report: Report, best: pd.DataFrame, exp: Experiment) -> None:
    out = report.out_dir
    values = table1_values(best)
    values.to_csv(out / "table1_values.csv", index=False)
    report.files.append(out / "table1_values.csv")
    _add_table(report, "table1", table1(values))
    for name, table in (("table3", table3(exp.runs, exp.history)), ("inputs", inputs_table(exp.runs, exp.history))):
        if table is not None:
            _add_table(report, name, table)
    report.problems += attempt_without_sources(exp.runs)
    try:
        numbers, formatted, problems = table2(row_scores(values))
    except ConfigError as e:
        report.problems.append(str(e))
    else:
        numbers.reset_index().to_csv(out / "table2_values.csv", index=False)
        report.files.append(out / "table2_values.csv")
        _add_table(report, "table2", formatted)
        report.problems += problems
    per_run = convergence_per_run(exp.runs, exp.history)
    per_run.to_csv(out / "convergence_runs.csv", index=False)
    report.files.append(out / "convergence_runs.csv")
    _add_table(report, "convergence", convergence_table(per_run[per_run["run_id"].isin(best["run_id"])]))
    values = claims_values(exp.runs, exp.history, per_run)
    values.to_csv(out / "claims_values.csv", index=False)
    report.files.append(out / "claims_values.csv")
    if values.empty:
        report.problems.append("Claims: no comparison has runs on both sides (e.g. SuperPos and another method of one model)")
    else:
        _add_table(report, "claims", claims_table(values))
    table, mixed = environments(exp.runs[exp.runs["run_id"].isin(best["run_id"])], "Table 1, Table 2, convergence")
    _add_table(report, "environment", table)
    report.problems += [mixed] if mixed else []


def _add_table(report: Report, name: str, table: pd.DataFrame) -> None:
    report.tables[name] = table
    report.files += write_table(table, report.out_dir, name, CAPTIONS[name])


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
.problems { background: #fff4e5; border-left: 4px solid #f0a030; padding: 0.5em 1em; }
caption, .caption { font-size: 0.85em; color: #555; }
"""


def _html(report: Report, exp: Experiment) -> str:
    esc = html.escape
    status = exp.runs.assign(status=exp.runs["status"].replace("", "(no status tag)")).groupby(["model", "status"]).size()
    summary = pd.DataFrame([{"Model": m, "Status": s, "Runs": str(n)} for (m, s), n in status.items()])
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>superpos report: {esc(exp.name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>superpos report: {esc(exp.name)}</h1>",
        f"<p>Tracking URI <code>{esc(exp.tracking_uri)}</code>, generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; "
        f"{len(exp.runs)} trial runs.</p>",
        to_html(summary),
    ]
    if report.problems:
        items = "".join(f"<li>{esc(p)}</li>" for p in report.problems)
        parts.append(f"<div class='problems'><h2>Problems</h2><ul>{items}</ul></div>")
    for name, table in report.tables.items():
        parts.append(f"<h2 id='{name}'>{esc(CAPTIONS[name].split(':')[0])}</h2><p class='caption'>{esc(CAPTIONS[name])}</p>{to_html(table)}")
    if report.figures:
        parts.append("<h2 id='figures'>Figure 2</h2>")
    for figure in report.figures:
        data = base64.b64encode(figure.png.read_bytes()).decode("ascii")
        parts.append(f"<h3 id='{figure.name}'>{esc(figure.title)}</h3>"
                     f"<img alt='{esc(figure.name)}' src='data:image/png;base64,{data}' width='{figure.width_px}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
