"""Repair a Tune snapshot whose trials name checkpoints that no longer exist, before ``--resume``
restores it.

Why: ``CheckpointConfig(num_to_keep=2)`` makes Tune delete a trial's older checkpoints as soon as
it registers a newer one, while the experiment snapshot (``experiment_state-*.json``) that names
the trial's latest checkpoint reaches storage later, by an asynchronous upload. A driver killed in
between (SIGKILL, a lost SSH session, a preempted head) leaves a snapshot naming a checkpoint that
is gone. Tune then fails the trial at every restore ("Could not recover from checkpoint as it
does not exist on storage anymore"): forever with ``max_failures: -1`` (the chaos soak saw 32
retries in 20 minutes), or the trial ends ERROR. Found by the 35-minute soak (docs/reliability.md).

The repair points such a trial at its newest complete checkpoint on storage (every report of
``trainables/trainable.py`` carries one, so ``checkpoint_<i>`` is training iteration ``i + 1``;
complete: every file its manifest lists, ``manifest.py``, as a worker killed mid-upload leaves
a part of one), or, with none left, lets it start over. A trial's state is whole in its checkpoint (the
Trainer's RNG streams, optimizer, data order), so either way it ends as an uninterrupted run
would; MLflow already holds the steps it logged (``tracking.py`` logs only the steps it lacks).

Tune offers no public API for this: the snapshot is read and written with Tune's own
(de)serialisation (``Trial.from_json_state`` / ``get_json_state``), pinned by the lock's ray.
"""

from __future__ import annotations

import json
import re
import sys

from trainables.manifest import complete

CHECKPOINT_DIR = re.compile(r"checkpoint_(\d{6})")


def newest_snapshot(fs, experiment_fs_path: str) -> str | None:
    """The path of the experiment snapshot Tune would restore (the newest by its name's time stamp)."""
    import pyarrow.fs

    names = [i.base_name for i in fs.get_file_info(pyarrow.fs.FileSelector(experiment_fs_path, allow_not_found=True))
             if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json")]
    return f"{experiment_fs_path}/{max(names)}" if names else None


def checkpoint_indices(fs, trial_fs_path: str) -> list[int]:
    """Indices of the ``checkpoint_<i>`` folders of one trial on storage, ascending."""
    import pyarrow.fs

    found = fs.get_file_info(pyarrow.fs.FileSelector(trial_fs_path, allow_not_found=True))
    return sorted(int(m.group(1)) for i in found if i.type == pyarrow.fs.FileType.Directory and (m := CHECKPOINT_DIR.fullmatch(i.base_name)))


def repair_trial(fs, experiment_fs_path: str, trial_json: str, runtime_json: str) -> tuple[str, str, str] | None:
    """(trial_json, runtime_json, what was done) for a trial whose latest checkpoint is missing; None if it needs nothing."""
    import pyarrow.fs
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult
    from ray.tune.experiment.trial import Trial
    from ray.tune.result import TRAINING_ITERATION

    trial = Trial.from_json_state(trial_json, stub=True)
    trial.restore_run_metadata(runtime_json)
    manager = trial.run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result if manager is not None else None
    if latest is None:
        return None
    trial_fs_path = f"{experiment_fs_path}/{trial.storage.trial_dir_name}"
    named = latest.checkpoint.path.rstrip("/").rsplit("/", 1)[-1]
    if fs.get_file_info(f"{trial_fs_path}/{named}").type != pyarrow.fs.FileType.NotFound:
        return None
    found = checkpoint_indices(fs, trial_fs_path)
    kept = [i for i in found if complete(fs, f"{trial_fs_path}/checkpoint_{i:06d}")]
    partial = [f"checkpoint_{i:06d}" for i in found if i not in kept and i > (kept[-1] if kept else -1)]
    if kept:
        index = kept[-1]
        result = _TrainingResult(checkpoint=Checkpoint(f"{trial_fs_path}/checkpoint_{index:06d}", filesystem=fs),
                                 metrics={TRAINING_ITERATION: index + 1})
        manager._latest_checkpoint_result, manager._checkpoint_results = result, [result]
        trial.storage.current_checkpoint_index = index + 1
        done = f"resumes from checkpoint_{index:06d} instead"
    else:
        manager._latest_checkpoint_result, manager._checkpoint_results = None, []
        trial.storage.current_checkpoint_index = 0
        done = "no complete checkpoint of it is left: it starts over"
    if partial:  # kept: the trial's next reports upload the same files into them again
        done += f" ({', '.join(partial)}: uploaded in part, passed over)"
    trial.stub = False  # loaded as a stub (the trainable is not registered yet); Tune restores it as a real trial
    trial.invalidate_json_state()
    trial.run_metadata.invalidate_cache()
    return (*trial.get_json_state(), f"trial {trial.trial_id}: Tune's snapshot names {named}, which is gone; {done}")


def repair_missing_checkpoints(experiment_path: str) -> list[str]:
    """Rewrite the newest snapshot under ``experiment_path`` (a local path or gs:// / s3:// URI of
    one Tune experiment) so that no trial names a missing checkpoint; one line per trial repaired."""
    import pyarrow.fs

    fs, experiment_fs_path = pyarrow.fs.FileSystem.from_uri(experiment_path)
    experiment_fs_path = experiment_fs_path.rstrip("/")
    path = newest_snapshot(fs, experiment_fs_path)
    if path is None:
        return []
    with fs.open_input_stream(path) as f:
        state = json.loads(f.read().decode())
    lines = []
    for i, (trial_json, runtime_json) in enumerate(state["trial_data"]):
        repaired = repair_trial(fs, experiment_fs_path, trial_json, runtime_json)
        if repaired is not None:
            state["trial_data"][i] = list(repaired[:2])
            lines.append(repaired[2])
    if lines:
        # written whole, then moved over the original: a driver killed here leaves the old snapshot
        tmp = f"{path}.repair.tmp"
        with fs.open_output_stream(tmp) as f:
            f.write(json.dumps(state).encode())
        fs.move(tmp, path)
        for line in lines:
            print(f"--resume: {line}", file=sys.stderr, flush=True)
    return lines
