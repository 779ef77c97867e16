"""``superpos bench-sweep`` (trainables/bench_sweep.py) end to end at a small N: both arms run,
every figure is there with sane relations, the superpos arm's runs all landed (audit clean),
tagged as a benchmark, and ``superpos report`` refuses them. Speed is a figure: nothing is timed."""

from __future__ import annotations

import json

import pytest

from superpos.cli import main
from superpos.errors import ConfigError
from trainables.bench_sweep import BENCH_VALUE, EXPERIMENT, SweepBenchOptions

TRIALS, RESULTS, SLEEP, CONCURRENCY = 6, 2, 0.2, 3


@pytest.mark.parametrize("field, value, allowed", [
    ("trials", 0, "allowed: an integer >= 1"), ("results", 0, "allowed: an integer >= 1"), ("concurrency", 7, "allowed: 1..6"),
    ("sleep_s", -1.0, "allowed: seconds >= 0"), ("cpus", 0.0, "allowed: a number > 0"),
])
def test_bad_options_name_the_value_and_what_is_allowed(field, value, allowed):
    opts = SweepBenchOptions(**{"trials": 6, field: value})
    with pytest.raises(ConfigError, match=allowed):
        opts.check()


@pytest.mark.slow
def test_bench_sweep_end_to_end(tmp_path, capsys):
    from mlflow import MlflowClient

    out, work = tmp_path / "sweep.json", tmp_path / "work"
    rc = main(["bench-sweep", "--trials", str(TRIALS), "--results", str(RESULTS), "--sleep", str(SLEEP), "--concurrency", str(CONCURRENCY),
               "--payload-kb", "8", "--workdir", str(work), "--out", str(out)])
    assert rc == 0
    fig = json.loads(out.read_text())
    bare, sp = fig["bare"], fig["superpos"]
    assert fig["minimum_s"] == pytest.approx(TRIALS * RESULTS * SLEEP / CONCURRENCY)
    for arm in (bare, sp):
        assert arm["results"] == TRIALS * RESULTS
        assert arm["wall_s"] >= fig["minimum_s"] and arm["overhead_vs_minimum"] >= 0
        # both rounded in the JSON: wall_s to 0.01 s, results_per_s to 0.001
        assert arm["results_per_s"] == pytest.approx(TRIALS * RESULTS / arm["wall_s"], rel=2e-3, abs=0.001)
        assert arm["rss_peak_mb"] >= arm["rss_baseline_mb"] > 0 and arm["rss_growth_mb"] >= 0
    assert fig["superpos_vs_bare"] == pytest.approx(sp["wall_s"] / bare["wall_s"], abs=0.001)
    assert bare["trials_errored"] == 0 and bare["results_reported"] == TRIALS * RESULTS
    # every trial one finished child run with all its steps; nothing dropped, audit clean
    assert sp["trials_unfinished"] == 0 and sp["parent_runs"] == 1
    assert sp["child_runs"] == sp["child_runs_complete"] == TRIALS
    assert sp["results_logged"] == TRIALS * RESULTS and sp["results_dropped"] == 0
    assert sp["audit_findings"] == 0 and sp["audit"] == []
    # at least: the parent, and per child its creation, params, R steps, artifacts and its end
    assert sp["mlflow_writes"] >= 1 + TRIALS * (3 + RESULTS) and sp["mlflow_writes_per_s"] > 0
    assert fig["lock"] and fig["anchor_ray_tune_scalability"]["wall_s"] == 715.0
    assert "superpos / bare Tune" in capsys.readouterr().out

    # the store outlives its server (sqlite under --workdir): every run is marked a benchmark
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert EXPERIMENT.startswith("bench-") and exp.tags["superpos.bench"] == BENCH_VALUE
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == TRIALS + 1 and all(r.data.tags.get("superpos.bench") == BENCH_VALUE for r in runs)
    children = [r for r in runs if r.data.tags.get("superpos.role") == "trial"]
    assert all(len(client.get_metric_history(r.info.run_id, "score")) == RESULTS for r in children)

    # superpos report refuses them (exit 2: bad input), and writes nothing
    assert main(["report", "--tracking-uri", uri, "--experiment", EXPERIMENT, "--out", str(tmp_path / "report")]) != 0
    assert "benchmark runs" in capsys.readouterr().err and not (tmp_path / "report").exists()
