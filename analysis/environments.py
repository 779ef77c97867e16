"""The environments behind a report's tables: the ``env.*`` tags of their runs (superpos.environment).

Scores move with package versions and hardware (float kernels), so a table is comparable with
another, or with itself, only where its runs share one environment. ``environments`` gives one
column per distinct environment and the warning that ``superpos report`` lists when a table's
runs mix several (a run without ``env.*`` tags counts as one more environment, "not recorded").
"""

from __future__ import annotations

import json

import pandas as pd

NOT_RECORDED = "–"


def environment_key(env: dict) -> str:
    """A run's environment as one comparable string (the ``environment`` column of ``Experiment.runs``)."""
    return json.dumps(env, sort_keys=True)


def environments(runs: pd.DataFrame, tables: str) -> tuple[pd.DataFrame, str | None]:
    """(one row per environment key, one column per distinct environment of ``runs``; a warning
    naming the keys that differ if there are several, else None). ``tables`` names the tables
    ``runs`` are behind, for the warning."""
    counts = runs.groupby("environment").size().sort_values(ascending=False, kind="stable")
    envs = [json.loads(key) for key in counts.index]
    keys = list(dict.fromkeys(k for env in envs for k in env))
    columns = {"Key": keys}
    for i, (env, n) in enumerate(zip(envs, counts)):
        columns[f"env {i + 1} ({n} run{'s' if n != 1 else ''})"] = [NOT_RECORDED if env.get(k) is None else str(env[k]) for k in keys]
    table = pd.DataFrame(columns)
    if len(envs) < 2:
        return table, None
    differing = [k for k in keys if len({json.dumps(env.get(k)) for env in envs}) > 1]
    unrecorded = " (runs without env.* tags count as one)" if {} in envs else ""
    return table, (f"{tables}: the {len(runs)} runs mix {len(envs)} environments{unrecorded}, differing in "
                   f"{', '.join(differing) or 'tags present'}: scores may not be comparable (see environment.md)")
