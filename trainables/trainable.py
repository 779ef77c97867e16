"""The Ray Tune function trainable: one Ray trial trains a group of K member trials fused
through one frozen backbone (``superpos.train.Trainer``; K = 1 for searches).

Reporting: after every evaluation round (all running members evaluated at the same step)
the trainable calls ``tune.report`` once with

* ``score`` / ``best_score``: the mean over members (what ASHA and Optuna read; K = 1 there),
* ``members``: ``{member_id: {**evaluation record, "status": ...}}`` that the driver's MLflow
  callback (tracking.py) splits into one child run per member,
* a checkpoint: a directory with one sub-directory per member holding that member's out_dir
  (config.json, metrics.jsonl, checkpoint/state.pt with state.prev.pt, the fallback if
  state.pt is damaged, and once ended result.json and prompt.safetensors). Under a trial
  scheduler (ASHA; trial-config key ``prompt_every_eval``) a running member's sub-directory
  also holds the prompt.safetensors of its latest evaluation, so a trial the scheduler stops
  still has a prompt to log (tracking.py).

Resume: ``tune.get_checkpoint()`` is copied back into each member's out_dir before the Trainer
is built; the Trainer then resumes from ``<out_dir>/checkpoint/state.pt`` by itself. Members
that already ended (a diverged member of a group) are not trained again.

Out dirs are absolute paths under the trial's local working directory (Ray changes into it;
it is not the storage path), so nothing here depends on the driver's filesystem.

Warm trials: the runner sets Tune's ``reuse_actors``, so a worker process runs trial after
trial (Ray changes into each new trial's directory) and the Trainer finds the frozen backbone
already loaded (superpos/backbones/cache.py); everything else is built afresh for each trial.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

from superpos.errors import ConfigError
from superpos.run_dir import PROMPT_FILE, RESULT_FILE
from superpos.train import Callback, Trainer, Trial, save_prompt

from trainables.manifest import write_manifest
from trainables.nodes import check_versions, prepare_node
from trainables.sources import localize
from trainables.spec import Member
from trainables.spec.trial_config import MEMBERS_KEY, PROMPT_EVERY_EVAL_KEY, members_of


def status_of(out_dir: Path) -> str:
    result = out_dir / RESULT_FILE
    return json.loads(result.read_text())["status"] if result.exists() else "running"


def restore_members(checkpoint_dir: Path, members: list[Member], out_dirs: dict[str, Path]) -> None:
    """Replace each member's out_dir by its copy in the checkpoint (the last state Tune knows)."""
    for m in members:
        src, dst = checkpoint_dir / m.id, out_dirs[m.id]
        if dst.exists():
            shutil.rmtree(dst)
        if src.exists():
            shutil.copytree(src, dst)


def snapshot(members: list[Member], out_dirs: dict[str, Path], into: Path) -> None:
    """Copy each member's out_dir into a checkpoint directory (an ended member's out_dir holds
    no optimizer state: the Trainer removes it when the member ends)."""
    for m in members:
        if out_dirs[m.id].exists():
            shutil.copytree(out_dirs[m.id], into / m.id)


class _Reporter(Callback):
    """Collects one evaluation round of a group, then reports it to Tune with a checkpoint."""

    def __init__(self, members: list[Member], out_dirs: dict[str, Path], out_root: Path, prompts: bool = False):
        self.members, self.out_dirs, self.out_root, self.prompts = members, out_dirs, out_root, prompts
        self.ids = {str(d): m.id for m, d in ((m, out_dirs[m.id]) for m in members)}
        self.trainer: Trainer | None = None
        self.round: dict[str, dict] = {}

    def on_evaluation(self, trial: Trial, record: dict) -> None:
        self.round[self.ids[str(trial.out_dir)]] = record
        running = {self.ids[str(t.out_dir)] for t in self.trainer.trials if t.running}
        if running <= set(self.round):
            self.report()

    def report(self) -> None:
        import ray
        from ray import tune

        node = ray.util.get_node_ip_address()  # the driver tags each child run with it (tracking.py)
        entries = {m.id: {"status": status_of(self.out_dirs[m.id]), "node": node} for m in self.members}
        for mid, record in self.round.items():
            entries[mid].update(record)
        self.round = {}
        latest = [self._latest(m) for m in self.members]
        scores = [r["score"] for r in latest if r]
        bests = [r["best_score"] for r in latest if r]
        metrics = {
            "score": sum(scores) / len(scores) if scores else 0.0,
            "best_score": sum(bests) / len(bests) if bests else 0.0,
            MEMBERS_KEY: entries,
            "out_root": str(self.out_root),
        }
        with tempfile.TemporaryDirectory(prefix="superpos-ckpt-") as tmp:
            snapshot(self.members, self.out_dirs, Path(tmp))
            if self.prompts and self.trainer is not None:
                # a member still running may be stopped by the scheduler after this report:
                # its checkpoint then holds the prompt of this evaluation
                for t in self.trainer.trials:
                    mid = self.ids[str(t.out_dir)]
                    if t.running and (Path(tmp) / mid).is_dir():
                        save_prompt(t, Path(tmp) / mid / PROMPT_FILE)
            write_manifest(Path(tmp))  # what a whole upload of it holds (manifest.py)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    def _latest(self, member: Member) -> dict | None:
        path = self.out_dirs[member.id] / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        record = json.loads(lines[-1]) if lines else None
        return record if record and math.isfinite(record["score"]) else None


def train_group(config: dict, driver: dict | None = None) -> None:
    """The function trainable (wrap with ``tune.with_resources`` for CPU/GPU per trial);
    ``driver``: the driver's package versions, which this node must have (trainables/nodes.py)."""
    from ray import tune

    context = tune.get_context()
    members = members_of(config, context.get_trial_id())
    out_root = Path.cwd().resolve() / "members"  # the trial's local working directory
    out_dirs = {m.id: out_root / m.id for m in members}
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            restore_members(Path(d), members, out_dirs)
    reporter = _Reporter(members, out_dirs, out_root, prompts=bool(config.get(PROMPT_EVERY_EVAL_KEY)))
    pending = [m for m in members if status_of(out_dirs[m.id]) == "running"]
    try:
        if pending:
            check_versions(driver)
            trainer = Trainer([prepare_node(localize(m.config)) for m in pending], [out_dirs[m.id] for m in pending], callbacks=[reporter], progress=False)
            reporter.trainer = trainer
            trainer.fit()
    except ConfigError as e:
        # bad input does not change between retries: the trial ends (no exception, so Ray
        # does not retry it), each unfinished member with status "failed" and the message
        for m in pending:
            if status_of(out_dirs[m.id]) == "running":
                out_dirs[m.id].mkdir(parents=True, exist_ok=True)
                (out_dirs[m.id] / RESULT_FILE).write_text(json.dumps({"status": "failed", "message": str(e)}, indent=2) + "\n")
    reporter.report()  # final: every member's status, result.json and prompt in the checkpoint
