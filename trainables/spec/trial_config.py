"""How trials travel in a Ray trial's config, between the driver (runner.py, tracking.py) and
the worker (trainable.py): a grid trial carries its fused members as JSON, a search trial a
base config plus the keys its searcher sampled.
"""

from __future__ import annotations

import json

from superpos.config import TrainConfig

from trainables.spec.expand import Member

#: trial-config keys: grid trials carry their members, search trials a base plus sampled keys
MEMBERS_KEY = "members"
BASE_KEY = "base"
#: trial-config flag (set under a scheduler): every checkpoint carries each running member's prompt
PROMPT_EVERY_EVAL_KEY = "prompt_every_eval"


class TrialGroup(str):
    """The Ray trial config value of one fused group: its members as JSON (so Tune never
    expands it). A str, so it survives Tune's config handling; shown by its label in Tune's
    progress table instead of the whole JSON. ``str.__str__(group)`` gives the JSON."""

    @property
    def label(self) -> str:
        group = json.loads(self)
        c = group[0]["config"]
        more = f"+{len(group) - 1}" if len(group) > 1 else ""
        return f"{c['task']}-{c['method']}-{'d' if c['dropout'] else 'nd'}{more}"

    def __str__(self) -> str:
        return self.label

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(self.label, spec)

    def __reduce__(self):  # pickle the JSON, not the label that str() now gives
        return TrialGroup, (str.__str__(self),)


def grid_trial_config(group: list[Member]) -> TrialGroup:
    return TrialGroup(json.dumps([{"id": m.id, "config": m.config.flat()} for m in group], sort_keys=True))


def members_of(config: dict, ray_trial_id: str) -> list[Member]:
    """The members a Ray trial trains (the driver callback calls this too)."""
    if MEMBERS_KEY in config:
        group = json.loads(str.__str__(config[MEMBERS_KEY]))
        return [Member(d["id"], TrainConfig.from_flat(d["config"], "trial config").resolve()) for d in group]
    flat = json.loads(config[BASE_KEY])
    flat.update({k: v for k, v in config.items() if k not in (BASE_KEY, PROMPT_EVERY_EVAL_KEY)})
    # sampled by the searcher: the Ray trial id is the stable id (kept by Tuner.restore)
    return [Member(ray_trial_id, TrainConfig.from_flat(flat, f"search trial {ray_trial_id}").resolve())]
