"""The fault-free run the soak is held to: the same fused groups of the same spec, trained by
the same ``Trainer`` in plain processes (no Ray, no MLflow, no fault, one CPU thread as each Ray
trial has), and each trial's logged numbers compared with it bit for bit: every metric at every
step, ``result.json``, and the tensors and metadata of ``prompt.safetensors`` and
``best_prompt.safetensors``."""

from __future__ import annotations

import json
import math
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ARTIFACTS = ("prompt.safetensors", "best_prompt.safetensors")


def train_group(group: list[tuple[str, dict]], out: str) -> None:
    """One fused group, uninterrupted (a worker process of the pool)."""
    import torch

    from superpos.config import TrainConfig
    from superpos.train import Trainer

    torch.set_num_threads(1)  # as a Ray trial with resources {cpu: 1} (OMP_NUM_THREADS=1)
    configs = [TrainConfig.from_flat(flat, "reference").resolve() for _, flat in group]
    Trainer(configs, [Path(out) / mid for mid, _ in group], progress=False).fit()


def train_reference(spec_path: Path, data_dir: Path, out: Path, processes: int = 2) -> list[str]:
    """Train every group of the spec into ``out/<member id>``; the member ids."""
    from trainables.spec import load_spec

    groups = load_spec(str(spec_path)).groups(str(data_dir))
    jobs = [[(m.id, m.config.flat()) for m in g] for g in groups]
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        for f in [pool.submit(train_group, job, str(out)) for job in jobs if not all((out / mid / "result.json").exists() for mid, _ in job)]:
            f.result()
    return [mid for job in jobs for mid, _ in job]


def same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def compare(ids: list[str], tracking_uri: str, out: Path) -> dict:
    """Every trial of the sweep against the reference in ``out``; mismatches as sentences."""
    from mlflow.tracking import MlflowClient
    from safetensors import safe_open

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("soak")
    runs = client.search_runs([exp.experiment_id], "tags.`superpos.role` = 'trial'", max_results=5000)
    by_id: dict[str, list] = {}
    for r in runs:
        by_id.setdefault(r.data.tags.get("superpos.trial_id"), []).append(r)
    mismatches, finished, evaluations = [], 0, 0
    for mid in ids:
        found = by_id.get(mid, [])
        if len(found) != 1:
            mismatches.append(f"trial {mid}: {len(found)} child runs")
            continue
        run = found[0]
        finished += run.info.status == "FINISHED" and run.data.tags.get("status") == "finished"
        records = [json.loads(line) for line in (out / mid / "metrics.jsonl").read_text().splitlines()]
        for key in sorted({k for rec in records for k, v in rec.items() if isinstance(v, (int, float)) and k != "step"}):
            want = [(rec["step"], float(rec[key])) for rec in records if isinstance(rec.get(key), (int, float))]
            got = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            evaluations += len(got) if key == "score" else 0
            if len(got) != len(want) or not all(s == t and same_float(a, b) for (s, a), (t, b) in zip(got, want)):
                mismatches.append(f"trial {mid}: metric {key}: logged {got[:3]}... ({len(got)}), fault-free {want[:3]}... ({len(want)})")
        with tempfile.TemporaryDirectory() as tmp:
            logged_files = {a.path for a in client.list_artifacts(run.info.run_id)}
            lost = [name for name in ("result.json", *ARTIFACTS) if name not in logged_files]
            if lost:  # a finding of the soak, not an error of the harness
                mismatches.append(f"trial {mid}: run {run.info.run_id} lacks {', '.join(lost)}")
                continue
            logged = json.loads(Path(client.download_artifacts(run.info.run_id, "result.json", tmp)).read_text())
            if logged != json.loads((out / mid / "result.json").read_text()):
                mismatches.append(f"trial {mid}: result.json differs: {logged} vs {(out / mid / 'result.json').read_text()}")
            for name in ARTIFACTS:
                a, b = Path(client.download_artifacts(run.info.run_id, name, tmp)), out / mid / name
                with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
                    if fa.metadata() != fb.metadata() or set(fa.keys()) != set(fb.keys()):
                        mismatches.append(f"trial {mid}: {name}: keys or metadata differ")
                    elif not all(fa.get_tensor(k).equal(fb.get_tensor(k)) for k in fa.keys()):
                        mismatches.append(f"trial {mid}: {name}: tensors differ")
    extra = sorted(set(by_id) - set(ids))
    mismatches += [f"child run of an unknown trial {t}" for t in extra]
    return {"trials": len(ids), "finished": finished, "evaluations": evaluations, "mismatches": mismatches}


def main() -> None:
    """``python -m soak.reference SPEC DATA_DIR OUT``: train the reference (the soak starts it
    beside the sweep, at a lower priority); writes ``OUT/ids.json`` last."""
    import sys

    spec, data_dir, out = sys.argv[1:4]
    ids = train_reference(Path(spec), Path(data_dir), Path(out))
    (Path(out) / "ids.json").write_text(json.dumps(ids))


if __name__ == "__main__":
    main()
