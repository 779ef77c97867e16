"""Warm trials: a process that runs trial after trial (Ray's reuse_actors) shares its frozen
backbone (superpos/backbones/cache.py) and ends every trial exactly as a fresh process would."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from superpos.backbones import cache, load_backbone, t5_style_tokenizer
from superpos.config import TrainConfig
from superpos.data import _digest, tokenizer_identity
from superpos.train import Trainer, run

REPO = Path(__file__).resolve().parent.parent


def tiny(data_dir, **kw):
    base = dict(task="cb", model="tiny-t5", data_dir=str(data_dir), epochs=2, dropout=True, batch_size=8, eval_batch_size=16,
                max_train_examples=16, max_eval_examples=8, seed=0, method="superpos", method_options={"m": 8})
    base.update(kw)
    if base["method"] != "superpos":
        base.pop("method_options")
    return TrainConfig(**base)


def outputs(out: Path) -> tuple[dict, list]:
    return load_file(out / "prompt.safetensors"), [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_outputs(a: Path, b: Path) -> None:
    (prompt_a, metrics_a), (prompt_b, metrics_b) = outputs(a), outputs(b)
    assert prompt_a.keys() == prompt_b.keys()
    for k in prompt_a:
        assert torch.equal(prompt_a[k], prompt_b[k]), k
    strip = lambda rows: [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in rows]  # noqa: E731
    assert strip(metrics_a) == strip(metrics_b)


def fresh_process(configs: list[TrainConfig], outs: list[Path]) -> None:
    """The group alone in a new interpreter: the reference a reused worker must match."""
    code = "import json, sys; from superpos.config import TrainConfig; from superpos.train import run_group; " \
           "run_group([TrainConfig.from_flat(c) for c in json.loads(sys.argv[1])], json.loads(sys.argv[2]), progress=False)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    args = [json.dumps([c.flat() for c in configs]), json.dumps([str(o) for o in outs])]
    subprocess.run([sys.executable, "-c", code, *args], check=True, env=env, cwd=REPO)


def test_a_trial_in_a_used_process_ends_as_in_a_fresh_one(data_dir, tmp_path):
    """Dropout on, so the RNG stream matters too: another trial first (a different method, seed
    and lr, through the same cached backbone), then the trial; prompts and every evaluation
    record equal those of the trial run alone in a new interpreter, bit for bit."""
    config = tiny(data_dir, seed=3)
    run(tiny(data_dir, method="simple", seed=1, lr=0.3), tmp_path / "before", progress=False)
    hits = cache.stats["hits"]
    run(config, tmp_path / "warm", progress=False)
    assert cache.stats["hits"] == hits + 1
    fresh_process([config], [tmp_path / "fresh"])
    assert_same_outputs(tmp_path / "warm", tmp_path / "fresh")


def test_a_cache_hit_is_reset_to_the_loaded_state():
    """What a trial may leave on the backbone (eval mode, gradients, requires_grad) is undone;
    the frozen weights are the loaded ones."""
    first = load_backbone("tiny-t5", dropout=True, shared=True)
    modes = [m.training for m in first.modules()]
    first.eval()
    for p in first.model.parameters():
        p.requires_grad_(True)
        p.grad = torch.ones_like(p)
    again = load_backbone("tiny-t5", dropout=True, shared=True)
    assert again is first
    assert [m.training for m in again.modules()] == modes
    assert all(not p.requires_grad and p.grad is None for p in again.model.parameters())
    fresh = load_backbone("tiny-t5", dropout=True)
    assert [m.training for m in fresh.modules()] == modes
    for (name, a), b in zip(again.model.state_dict().items(), fresh.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_every_setting_that_determines_a_backbone_is_its_own_entry():
    off = load_backbone("tiny-t5", dropout=False, shared=True)
    on = load_backbone("tiny-t5", dropout=True, shared=True)
    fast = load_backbone("tiny-t5", dropout=False, fast=True, shared=True)
    rank = load_backbone("tiny-t5", dropout=False, evaluation="rank", shared=True)
    assert len({id(off), id(on), id(fast), id(rank)}) == 4
    assert (off.dropout, on.dropout, fast.fast_forward is not None, rank.evaluation) == (False, True, True, "rank")
    assert load_backbone("tiny-t5", dropout=False) is not off  # not shared: always a new one


def test_weights_cast_by_a_trial_are_restored_from_the_loaded_copy():
    """On CUDA the Trainer casts the frozen weights to bf16 after initialising its prompts from
    the fp32 vocabulary: a hit gets the fp32 weights back (the key's device decides; CPU here)."""
    key = cache.BackboneKey("tiny-t5", "", "bfloat16", False, "similarity", False, "generate", False, "cuda:0")
    first = cache.shared(key, lambda: load_backbone("tiny-t5", dropout=False))
    loaded = {k: v.clone() for k, v in first.model.state_dict().items()}
    first.model.to(torch.bfloat16)
    again = cache.shared(key, lambda: pytest.fail("loaded twice"))
    for k, v in again.model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, loaded[k]), k


def test_compiling_uses_inductor_caches_under_superpos_cache(tmp_path, monkeypatch):
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    monkeypatch.setenv("SUPERPOS_CACHE", str(tmp_path))
    monkeypatch.setenv(cache.INDUCTOR_CACHE_ENV, "unset")
    monkeypatch.delenv(cache.INDUCTOR_CACHE_ENV)
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    monkeypatch.setattr(functorch_config, "enable_autograd_cache", False)
    assert cache.compile_cache() == tmp_path / "inductor" == Path(os.environ[cache.INDUCTOR_CACHE_ENV])
    assert inductor_config.fx_graph_cache and functorch_config.enable_autograd_cache
    monkeypatch.setenv(cache.INDUCTOR_CACHE_ENV, str(tmp_path / "mine"))
    assert cache.compile_cache() == tmp_path / "mine"  # a directory the user chose is kept


def test_full_fine_tuning_never_shares_the_backbone(data_dir, tmp_path):
    shared = load_backbone("tiny-t5", dropout=True, shared=True)
    before = {k: v.clone() for k, v in shared.model.state_dict().items()}
    trainer = Trainer([tiny(data_dir, method="full", epochs=1, lr=0.01)], [tmp_path / "full"], progress=False)
    assert trainer.backbone is not shared
    trainer.fit()
    trained = trainer.backbone.model.state_dict()
    assert any(not torch.equal(before[k], trained[k]) for k in before)
    assert all(torch.equal(v, shared.model.state_dict()[k]) for k, v in before.items())


def test_the_width_halved_on_out_of_memory_does_not_carry_over(data_dir, tmp_path, monkeypatch):
    """A group whose width was halved (faked CUDA out-of-memory) leaves the next group on the same
    backbone at its full width, with the results of the group in a fresh process, bit for bit."""
    configs = [tiny(data_dir, dropout=False, seed=s, epochs=1, max_train_examples=8) for s in range(4)]
    halved = Trainer(configs, [tmp_path / f"halved{k}" for k in range(4)], progress=False)
    real = type(halved.backbone).example_losses

    def fits_two(self, embeds, masks, targets, groups=None):
        if len(groups) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (faked)")
        return real(self, embeds, masks, targets, groups)

    with monkeypatch.context() as m:
        m.setattr(type(halved.backbone), "example_losses", fits_two)
        halved.fit()
    assert halved.fused_width == 2
    hits = cache.stats["hits"]
    later = Trainer(configs, [tmp_path / f"later{k}" for k in range(4)], progress=False)
    assert cache.stats["hits"] == hits + 1 and later.backbone is halved.backbone and later.fused_width == 4
    later.fit()
    assert later.fused_width == 4
    fresh_process(configs, [tmp_path / f"fresh{k}" for k in range(4)])
    for k in range(4):
        assert_same_outputs(tmp_path / f"later{k}", tmp_path / f"fresh{k}")


def test_the_tokenizer_digest_is_computed_once_and_follows_added_tokens():
    tok = t5_style_tokenizer()
    digest = tokenizer_identity(tok)
    assert tokenizer_identity(tok) == digest == _digest(tok)
    tok.add_tokens(["zzqx"])
    assert tokenizer_identity(tok) == _digest(tok) != digest


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set from /proc")
def test_memory_stays_flat_over_fifty_trials_in_one_process(data_dir, one_thread):
    """50 trials one after another through the cached backbone: after the first 10 (allocator and
    caches warm), the resident set grows by under 40 MB over the other 40 (one leaked tiny-t5
    backbone a trial would add 8 MB a trial, 320 MB in all)."""
    for k in range(50):
        if k == 10:
            start = rss_bytes()
        run(tiny(data_dir, seed=k, epochs=1, max_train_examples=4, max_eval_examples=2, batch_size=4, eval_batch_size=2), progress=False)
    assert rss_bytes() - start < 40 * 2**20
