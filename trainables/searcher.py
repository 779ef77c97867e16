"""The Optuna searcher of ``superpos search``: Ray's ``OptunaSearch`` plus what ``--resume``
needs on top of it.

Ray keeps the map Ray trial -> Optuna trial in the Tune experiment snapshot
(``searcher-state-*.pkl``, saved with ``experiment_state-*.json``), while the Optuna study
lives in its own storage (sqlite) and is always ahead of that snapshot. A driver killed
between two snapshots leaves

* Optuna trials told finished while the snapshot still holds their Ray trials as running:
  ``Tuner.restore`` resumes those trials, and Ray's ``OptunaSearch`` then reports their results
  to a finished Optuna trial (``UpdateFinishedTrialError``: the resumed search dies);
* Optuna trials asked after the snapshot: no restored Ray trial runs them, so they would stay
  RUNNING in the study for ever while Tune samples replacements (num_samples + k trials).

``StudySearch.restore_from_dir`` (called by ``Tuner.restore``) reconciles the two: Optuna
trials already finished are marked completed (the re-run of their Ray trial is not told
again), and the orphans go back to the study's queue (state WAITING), so Optuna's ``ask()``
hands each to the next new Ray trial with the parameters it already sampled: the study ends
with exactly ``num_samples`` trials, none duplicated, none left running.
"""

from __future__ import annotations

import fnmatch
import json
import logging

from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)

#: Tune's experiment snapshot files (``TuneController.CKPT_FILE_TMPL``); the newest is restored
SNAPSHOT_PATTERN = "experiment_state-*.json"


def experiment_trials(path: str) -> dict[str, dict] | None:
    """The Ray trials of the newest Tune experiment snapshot in ``path`` (a local directory or a
    storage URI), as Ray trial id -> the parameters its searcher suggested; None when there is
    no snapshot or it cannot be read (callers then change nothing)."""
    import pyarrow.fs

    try:
        fs, base = pyarrow.fs.FileSystem.from_uri(path)
        infos = fs.get_file_info(pyarrow.fs.FileSelector(base, allow_not_found=True))
        names = sorted(i.base_name for i in infos if fnmatch.fnmatch(i.base_name, SNAPSHOT_PATTERN))
        if not names:
            return None
        with fs.open_input_stream(f"{base.rstrip('/')}/{names[-1]}") as f:
            state = json.loads(f.read().decode())
        trials = {}
        for trial_json, _ in state["trial_data"]:
            t = json.loads(trial_json)
            params = t.get("evaluated_params")
            trials[t["trial_id"]] = params if isinstance(params, dict) else {}
        return trials
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning("cannot read the Tune experiment snapshot in %s: %s", path, e)
        return None


class StudySearch(OptunaSearch):
    """``OptunaSearch`` (TPE, persistent study) that resumes its study consistently."""

    #: a ``study_store.StudyJournal`` when the study lives in a remote storage path
    journal = None

    def save(self, checkpoint_path: str):
        super().save(checkpoint_path)
        if self.journal is not None:  # before Tune uploads the snapshot holding this state
            self.journal.push()

    def restore_from_dir(self, checkpoint_dir: str):
        super().restore_from_dir(checkpoint_dir)
        if self.journal is not None and self._ot_study is not None:
            self._reopen_journal()
        # Tune copied the snapshot it restores into checkpoint_dir (its driver staging directory)
        self.reconcile(experiment_trials(checkpoint_dir))

    def reconcile(self, restored: dict[str, dict] | None) -> dict[str, list[int]]:
        """Align the study with the Ray trials Tune restored (``restored``: Ray trial id ->
        suggested parameters; None: trust the searcher's own snapshot). Returns the Optuna
        trial numbers it changed, by kind."""
        from optuna.trial import Trial, TrialState

        study = self._ot_study
        if study is None:  # saved before Tune gave it its search space: nothing was asked
            return {"finished": [], "requeued": [], "adopted": []}
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        adopted = []
        if restored is not None:
            # the searcher state and the trial list are saved together, but are copied to the
            # storage path file by file: trust the trial list, which Tune restores
            for ray_id in [r for r in self._ot_trials if r not in restored]:
                del self._ot_trials[ray_id]
            claimed = {t.number for t in self._ot_trials.values()}
            for ray_id, params in restored.items():
                if ray_id in self._ot_trials or not params:
                    continue
                match = next((t for t in trials.values() if t.number not in claimed and not t.state.is_finished() and t.params == params), None)
                if match is not None:
                    self._ot_trials[ray_id] = Trial(study, match._trial_id)
                    claimed.add(match.number)
                    adopted.append(match.number)
        claimed = {t.number for t in self._ot_trials.values()}
        finished = []
        for ray_id, ot_trial in self._ot_trials.items():
            frozen = trials.get(ot_trial.number)
            if frozen is not None and frozen.state.is_finished() and ray_id not in self._completed_trials:
                self._completed_trials.add(ray_id)
                finished.append(frozen.number)
        requeued = []
        for t in trials.values():
            if t.state == TrialState.RUNNING and t.number not in claimed:
                study._storage.set_trial_state_values(t._trial_id, TrialState.WAITING)
                requeued.append(t.number)
        changed = {"finished": finished, "requeued": requeued, "adopted": adopted}
        if any(changed.values()):
            print(
                f"study {study.study_name}: resumed; Optuna trials already finished: {finished or 'none'}; "
                f"asked after the last Tune snapshot, queued again for new Ray trials: {requeued or 'none'}",
                flush=True,
            )
        return changed

    # a Ray trial the snapshot holds but whose Optuna trial could not be found (a torn
    # snapshot): its results are not told to Optuna instead of stopping the search
    def on_trial_result(self, trial_id: str, result: dict):
        if trial_id in self._ot_trials:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._ot_trials:
            super().on_trial_complete(trial_id, result, error)
        if self.journal is not None:
            self.journal.push()

    def _reopen_journal(self) -> None:
        """The pickled study points at the journal's local copy on the machine that saved it:
        open the storage path's journal here (a new head node) and rebind the trials to it."""
        import optuna
        from optuna.trial import Trial

        storage = self.journal.storage()
        study = optuna.load_study(study_name=self._ot_study.study_name, storage=storage, sampler=self._sampler)
        self._storage, self._ot_study = storage, study
        self._ot_trials = {ray_id: Trial(study, t._trial_id) for ray_id, t in self._ot_trials.items()}
