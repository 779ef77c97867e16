"""Time lost to faults, estimated from the faulted sweep itself.

A fault-free run of an hour-long sweep would double the soak's length, so the soak estimates
what it would have taken from its own run: the median time between two logged evaluations of one
fused group (the training, the checkpoint to S3, the MLflow writes: all a fault-free evaluation
costs) times the group evaluations each worker has to do, plus the time to the sweep's first
logged evaluation (start-up). Faults only lengthen the gaps they fall in, and most gaps see no
fault (a fault every 1-4 minutes, an evaluation every few seconds), so the median is the
fault-free cost; evaluations the outbox replays after an MLflow outage are logged close together
and pull it down a little, so the estimate errs towards a larger time lost. Time lost is the
sweep's wall time minus the estimate.
"""

from __future__ import annotations

import statistics


def time_lost(tracking_uri: str, experiment: str, sweep_start_s: float, sweep_wall_s: float, workers: int) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`superpos.role` = 'trial'", max_results=5000)
    # the members of a fused group evaluate together: one clock per group, its earliest member's
    groups: dict[str, dict[int, float]] = {}
    for run in runs:
        steps = groups.setdefault(run.data.tags.get("superpos.group", run.info.run_id), {})
        for m in client.get_metric_history(run.info.run_id, "score"):
            steps[m.step] = min(steps.get(m.step, float("inf")), m.timestamp / 1000)
    gaps: list[float] = []
    for steps in groups.values():
        times = sorted(steps.values())
        gaps += [b - a for a, b in zip(times, times[1:])]
    first = min(t for steps in groups.values() for t in steps.values())
    per_evaluation = statistics.median(gaps)
    evaluations = sum(len(steps) for steps in groups.values())
    estimate = (first - sweep_start_s) + per_evaluation * evaluations / workers
    return {"group_evaluations": evaluations, "median_s_per_group_evaluation": round(per_evaluation, 2),
            "first_evaluation_after_s": round(first - sweep_start_s, 1), "fault_free_estimate_s": round(estimate, 1),
            "time_lost_s": round(sweep_wall_s - estimate, 1)}
