"""Sweep specs: the typed schema of a ``sweeps/*.yaml`` file and its expansion into trials.

A spec names a ``base`` config (any ``TrainConfig`` key or method option, in the flat view of
``TrainConfig.flat()``), ``grid`` axes whose cartesian product (times ``seeds``) gives the
trials, ``exclude`` partial configs that drop grid points (the paper's exclusions: ATTEMPT
never runs on QQP, QNLI, MNLI, SST-2; full fine-tuning only with dropout on; SuperPos paper
section 3.4), ``method_options`` that apply only to the named method, and ``include`` files
(best hyperparameters written by ``superpos search``). ``search: random | optuna`` turns the
spec into one study per task over a ``space``. Every error names the file and the key.

Parsing (``parse.py``) is separate from expansion (``expand.py``); ``keys.py`` holds the config
keys a spec may name, ``best.py`` the best-hyperparameter files. Pure: no Ray, no MLflow.
"""

from trainables.spec.best import load_best, round_best, write_best
from trainables.spec.expand import DEFAULT_STORAGE_PATH, DEFAULT_TRACKING_URI, Member, Param, Resources, Scheduler, SweepSpec, trial_id
from trainables.spec.parse import SEARCHES, SCHEDULERS, SPACE_KINDS, check_name, load_spec, parse_spec

__all__ = [
    "DEFAULT_STORAGE_PATH", "DEFAULT_TRACKING_URI", "SCHEDULERS", "SEARCHES", "SPACE_KINDS", "Member", "Param", "Resources",
    "Scheduler", "SweepSpec", "check_name", "load_best", "load_spec", "parse_spec", "round_best", "trial_id", "write_best",
]
