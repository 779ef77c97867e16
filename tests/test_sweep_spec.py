"""Sweep specs: the shipped specs, expansion (grid, exclusions, groups, include) and errors."""

from pathlib import Path

import pytest
import yaml

from superpos.errors import ConfigError
from trainables.spec import load_spec, parse_spec, write_best

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"
PAPER_TASKS = {"qqp", "qnli", "mnli", "sst2", "stsb", "mrpc", "cola", "multirc", "rte", "cb", "copa", "wic", "boolq"}


def spec(**kw):
    raw = {"name": "t", "experiment": "e", **kw}
    return parse_spec(raw, "test.yaml")


def resolved_offline(s, root="/sweeps/sources"):
    """Resolve a spec's source sweeps to placeholder files (what trainables.chain fetches)."""
    for ref in s.source_sweeps.values():
        models = {m.get("model") for m in (s.merged(p) for p in s.points())}
        ref.resolved = {m: [(t, "0" * 32, f"{root}/{m}/{t}.safetensors") for t in ref.tasks] for m in models}
    return s


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_validate(path):
    s = resolved_offline(load_spec(path))
    if s.search == "grid":
        groups = s.groups()
        assert groups and all(len(g) <= s.group_size for g in groups)
    else:
        assert s.studies()


def test_table1_is_the_paper_grid():
    s = load_spec(SWEEPS / "table1.yaml")
    assert s.source_sweeps["attempt"].sweep == "attempt_sources"
    with pytest.raises(ConfigError, match="table1.yaml.*attempt_sources.*resolved from the MLflow store"):
        s.members()  # before the sweep starts, the source prompts are not known
    members = [m.config for m in resolved_offline(s).members()]
    assert {c.task for c in members} == PAPER_TASKS
    # 13 tasks x 5 methods x 2 dropout x 2 models, minus ATTEMPT on 4 tasks, minus full without dropout
    assert len(members) == 13 * 5 * 2 * 2 - 4 * 2 * 2 - 13 * 2
    assert not [c for c in members if c.method == "attempt" and c.task in {"qqp", "qnli", "mnli", "sst2"}]
    assert all(c.dropout for c in members if c.method == "full")
    assert all(c.epochs == 80 for c in members)
    by_method = {c.method: c for c in members}
    assert by_method["superpos"].lr == 0.01 and by_method["superpos"].method_options["m"] == 128  # paper 3.4
    assert by_method["residual"].lr == 0.3 and by_method["full"].lr == 1e-5
    assert all(len(g) == 1 for g in s.groups() if g[0].config.method == "full")
    attempt = [c for c in members if c.method == "attempt"]
    assert all(len(c.method_options["source_prompts"]) == 4 and c.model in c.method_options["source_prompts"][0] for c in attempt)


def test_table1_without_source_prompts_is_refused():
    raw = yaml.safe_load((SWEEPS / "table1.yaml").read_text())
    del raw["method_options"]
    with pytest.raises(ConfigError, match="table1.yaml.*ATTEMPT needs source prompts.*source_prompts: none"):
        parse_spec(raw, "table1.yaml").members()
    raw["method_options"] = {"attempt": {"source_prompts": "none"}}  # on purpose: allowed
    assert len(parse_spec(raw, "table1.yaml").members()) == 218
    raw["method_options"] = {"attempt": {"source_prompts": {"sweep": "s", "tasks": ["nope"]}}}
    with pytest.raises(ConfigError, match="unknown task 'nope'.*method_options.attempt.source_prompts"):
        parse_spec(raw, "table1.yaml")


def test_ablation_m_covers_1_to_256():
    s = load_spec(SWEEPS / "ablation_m.yaml")
    assert sorted({m.config.method_options["m"] for m in s.members()}) == [2**i for i in range(9)]


def test_exclude_and_method_options():
    s = spec(base={"task": "cb"}, grid={"method": ["simple", "superpos"], "dropout": [True, False]},
             method_options={"superpos": {"m": 4}}, exclude=[{"method": "simple", "dropout": False}])
    configs = [m.config for m in s.members()]
    assert len(configs) == 3
    assert all(c.method_options["m"] == 4 for c in configs if c.method == "superpos")


def test_groups_share_backbone_keys():
    s = spec(grid={"task": ["cb", "rte"], "method": ["simple", "superpos", "residual"]}, group_size=2)
    groups = s.groups()
    assert sorted(map(len, groups)) == [1, 1, 2, 2]
    assert all(len({m.config.task for m in g}) == 1 for g in groups)


def test_ids_are_stable_and_unique():
    a = spec(grid={"seed": [0, 1]}).members()
    b = spec(grid={"seed": [0, 1]}).members()
    assert [m.id for m in a] == [m.id for m in b] and len({m.id for m in a}) == 2


def test_include_best_file(tmp_path):
    best = tmp_path / "best.yaml"
    write_best(best, "superpos", "tiny-t5", {"cb": {"lr": 0.05, "m": 32}}, "s")
    s = parse_spec({"name": "t", "experiment": "e", "include": ["best.yaml"], "grid": {"method": ["superpos", "simple"]},
                    "base": {"task": "cb"}}, str(tmp_path / "spec.yaml"))
    by_method = {m.config.method: m.config for m in s.members()}
    assert by_method["superpos"].lr == 0.05 and by_method["superpos"].method_options["m"] == 32
    assert by_method["simple"].lr == 0.01  # include applies to its method only
    s2 = parse_spec({"name": "t", "experiment": "e", "include": ["best.yaml"], "grid": {"m": [8]}, "base": {"task": "cb"}},
                    str(tmp_path / "spec.yaml"))
    assert s2.members()[0].config.method_options["m"] == 8  # a grid axis wins over the include


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"colour": 1}, "unknown key(s) colour"),
        ({"base": {"taks": "cb"}}, "key 'base': unknown config key(s) taks"),
        ({"grid": {"task": "cb"}}, "key 'grid.task' must be a non-empty list"),
        ({"grid": {"task": ["nope"]}}, "unknown task 'nope'"),
        ({"grid": {"method": ["magic"]}}, "unknown method 'magic'"),
        ({"base": {"model": "gpt-17"}}, "unknown model 'gpt-17'"),
        ({"grid": {"method": ["simple"]}, "base": {"m": 8}}, "unknown option(s) m"),
        ({"search": "optuna", "base": {"method": "superpos"}, "space": {"lr": {"loguniform": [1, 0.1]}}}, "key 'space.lr': bad range"),
        ({"search": "optuna", "base": {"method": "superpos"}, "space": {"lr": {"loguniform": [0, 1]}}}, "needs low > 0"),
        ({"search": "optuna", "base": {"method": "superpos"}, "space": {"m": {"gauss": [1, 2]}}}, "unknown space kind 'gauss'"),
        ({"search": "optuna", "base": {"method": "superpos"}, "space": {"m": {"lograndint": [1, 256]}}, "grid": {"dropout": [True]}}, "only 'task' may vary"),
        ({"space": {"lr": {"loguniform": [0.1, 1]}}}, "needs search: random or optuna"),
        ({"scheduler": "hyperband"}, "unknown scheduler 'hyperband'"),
        ({"epochs": 0}, "key 'epochs' must be >= 1"),
        ({"base": {"lr": float("inf")}}, "lr must be a finite number > 0, got inf"),  # YAML: lr: .inf
        ({"base": {"lr": "inf"}}, "lr must be a finite number > 0, got 'inf'"),  # YAML: lr: inf
        ({"resources": {"tpu": 1}}, "key 'resources': unknown key(s) tpu"),
        ({"scheduler": "asha", "group_size": 3}, "use group_size: 1"),
        ({"exclude": [{}]}, "exclude[0]' is empty"),
    ],
)
def test_errors_name_file_and_key(raw, message):
    with pytest.raises(ConfigError) as e:
        s = spec(**raw)
        s.groups() if s.search == "grid" else s.studies()
    assert message in str(e.value) and "test.yaml" in str(e.value)


def test_missing_name_and_bad_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("experiment: e\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: key 'name' is required"):
        load_spec(p)
    p.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_spec(p)


def test_best_file_round_trip(tmp_path):
    best = tmp_path / "b.yaml"
    write_best(best, "superpos", "m", {"cb": {"lr": 0.1}}, "s")
    write_best(best, "superpos", "m", {"rte": {"lr": 0.2}}, "s")
    assert yaml.safe_load(best.read_text())["per_task"] == {"cb": {"lr": 0.1}, "rte": {"lr": 0.2}}


def test_table3_runs_superpos_on_the_original_t5_base_beside_softmax():
    """Appendix A.1: SuperPos on t5-base, 13 tasks, no softmax; softmax.yaml logs to the same experiment."""
    s, softmax = load_spec(SWEEPS / "table3.yaml"), load_spec(SWEEPS / "softmax.yaml")
    members = [m.config for m in s.members()]
    assert {c.task for c in members} == PAPER_TASKS and len(members) == 13
    assert {(c.model, c.method, c.method_options["softmax"], c.dropout) for c in members} == {("t5-base", "superpos", False, False)}
    assert s.experiment == softmax.experiment
    assert {(m.config.model, m.config.method_options["softmax"]) for m in softmax.members()} >= {("google/t5-small-lm-adapt", True)}


def test_attempt_sources_trains_simple_prompts_on_the_four_glue_sources():
    s = load_spec(SWEEPS / "attempt_sources.yaml")
    table1 = load_spec(SWEEPS / "table1.yaml")
    members = [m.config for m in s.members()]
    assert {(c.task, c.model) for c in members} == {(t, m) for t in table1.source_sweeps["attempt"].tasks for m in table1.grid["model"]}
    assert {c.method for c in members} == {"simple"} and table1.source_sweeps["attempt"].sweep == s.name
