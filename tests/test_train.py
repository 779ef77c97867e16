"""The training loop: outputs, resume == uninterrupted, divergence, fused == solo."""

import json

import pytest
import torch
from safetensors.torch import load_file

from superpos.config import TrainConfig
from superpos.train import Callback, Trainer, run, run_group


class Interrupt(Exception):
    pass


def tiny(data_dir, **kw):
    base = dict(task="cb", model="tiny-t5", data_dir=str(data_dir), epochs=3, dropout=False, batch_size=8, eval_batch_size=16,
                max_train_examples=24, max_eval_examples=8, seed=0, method="superpos")
    base.update(kw)
    if base["method"] == "superpos":
        base.setdefault("method_options", {"m": 8})
    return TrainConfig(**base)


def prompt_of(out):
    return load_file(out / "prompt.safetensors")


def test_run_writes_config_metrics_prompt(data_dir, tmp_path):
    trial = run(tiny(data_dir, epochs=2), tmp_path / "out", progress=False)
    out = tmp_path / "out"
    config = json.loads((out / "config.json").read_text())
    assert config["lr"] == 0.01 and config["weight_decay"] == 1e-5 and config["method_options"]["m"] == 8
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1.0, 2.0] and [r["step"] for r in lines] == [3, 6]
    assert {"train_loss", "macro_f1", "accuracy", "score", "best_score", "invalid_rate"} <= set(lines[0])
    assert lines[1]["best_score"] == max(r["score"] for r in lines)
    assert prompt_of(out)["prompt"].shape == (10, 64)  # tiny-t5: d_model 64
    assert trial.state.status == "finished"
    assert json.loads((out / "result.json").read_text())["status"] == "finished"
    assert not (out / "checkpoint").exists()  # an ended run keeps no optimizer state


@pytest.mark.parametrize("dropout", [False, True])
def test_resume_ends_where_the_uninterrupted_run_ends(data_dir, tmp_path, dropout):
    config = tiny(data_dir, dropout=dropout, eval_every=2)
    run(config, tmp_path / "full", progress=False)

    class StopAfterSecondEvaluation(Callback):
        def __init__(self):
            self.seen = 0

        def on_evaluation(self, trial, record):
            self.seen += 1
            if self.seen == 2:
                raise Interrupt

    with pytest.raises(Interrupt):
        run(config, tmp_path / "resumed", callbacks=[StopAfterSecondEvaluation()], progress=False)
    assert not (tmp_path / "resumed" / "result.json").exists()
    run(config, tmp_path / "resumed", progress=False)

    full, resumed = prompt_of(tmp_path / "full"), prompt_of(tmp_path / "resumed")
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    assert (tmp_path / "full" / "metrics.jsonl").read_text() == (tmp_path / "resumed" / "metrics.jsonl").read_text()


@pytest.mark.parametrize("killed_at", [1, 4])
def test_a_group_killed_between_its_members_checkpoints_resumes_as_uninterrupted(data_dir, tmp_path, killed_at):
    """A fused group checkpoints its members one after another: a kill after the first member's
    evaluation (of the first round: the others have no checkpoint yet; of the second: they are
    one evaluation behind) must not leave the members at different positions. Every member ends
    as in the uninterrupted group, metrics and prompts bit for bit."""
    configs = [tiny(data_dir, seed=s, dropout=True) for s in range(3)]
    run_group(configs, [tmp_path / "full" / str(i) for i in range(3)], progress=False)

    class KillAfter(Callback):
        def __init__(self):
            self.seen = 0

        def on_evaluation(self, trial, record):
            self.seen += 1
            if self.seen == killed_at:
                raise Interrupt

    outs = [tmp_path / "resumed" / str(i) for i in range(3)]
    with pytest.raises(Interrupt):
        run_group(configs, outs, callbacks=[KillAfter()], progress=False)
    steps = [len((o / "metrics.jsonl").read_text().splitlines()) if (o / "metrics.jsonl").exists() else 0 for o in outs]
    assert len(set(steps)) == 2  # the members were left at different positions
    run_group(configs, outs, progress=False)
    for i, out in enumerate(outs):
        assert (tmp_path / "full" / str(i) / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text(), i
        assert torch.equal(prompt_of(tmp_path / "full" / str(i))["prompt"], prompt_of(out)["prompt"]), i


def test_resume_from_a_mid_epoch_checkpoint(data_dir, tmp_path, monkeypatch):
    config = tiny(data_dir, checkpoint_every=1, dropout=True)
    run(config, tmp_path / "full", progress=False)

    calls = {"n": 0}
    original = Trainer.save_checkpoint

    def save_then_die(self, trial):
        original(self, trial)
        calls["n"] += 1
        if calls["n"] == 2:  # after step 2 of epoch 1: mid-epoch
            raise Interrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupt):
        run(config, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    state = torch.load(tmp_path / "resumed" / "checkpoint" / "state.pt", weights_only=True)
    assert state["state"]["batch_in_epoch"] == 2 and state["state"]["epoch"] == 0
    run(config, tmp_path / "resumed", progress=False)
    assert torch.equal(prompt_of(tmp_path / "full")["prompt"], prompt_of(tmp_path / "resumed")["prompt"])


def test_nan_loss_ends_the_trial_as_diverged(data_dir, tmp_path, monkeypatch):
    trainer = Trainer([tiny(data_dir)], [tmp_path / "out"], progress=False)
    real = trainer.backbone.example_losses
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        sums, counts = real(*args, **kwargs)
        calls["n"] += 1
        return (sums * float("nan"), counts) if calls["n"] == 4 else (sums, counts)

    monkeypatch.setattr(trainer.backbone, "example_losses", poisoned)
    (trial,) = trainer.fit()
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert trial.state.status == result["status"] == "diverged"
    assert "nan" in result["message"] and result["steps"] == 3
    assert torch.isfinite(prompt_of(tmp_path / "out")["prompt"]).all()


def source_prompt_files(tmp_path, k=2, n=10, d=64):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(7)
    paths = []
    for i in range(k):
        paths.append(str(tmp_path / f"source{i}.safetensors"))
        save_file({"prompt": torch.randn(n, d, generator=g)}, paths[-1])
    return paths


def assert_same_run(a, b, atol=1e-5, rtol=1e-4):
    """Same exported tensors (to fp32 round-off: on 2 threads a fused batch's matmuls reduce in
    another order, and ATTEMPT's lr 0.3 grows that to ~3e-5 relative in 8 steps) and the same
    metric lines, as many of them."""
    fused, solo = prompt_of(a), prompt_of(b)
    assert fused.keys() == solo.keys()
    for key in fused:
        assert torch.allclose(fused[key].float(), solo[key].float(), atol=atol, rtol=rtol), key
    fused_lines = (a / "metrics.jsonl").read_text().splitlines()
    solo_lines = (b / "metrics.jsonl").read_text().splitlines()
    assert len(fused_lines) == len(solo_lines) > 0
    for x, y in zip(map(json.loads, fused_lines), map(json.loads, solo_lines)):
        assert x["step"] == y["step"] and x["score"] == y["score"] and x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-5)


def test_fused_trials_equal_solo_runs(data_dir, tmp_path):
    """Dropout off: every member of a fused group ends as it does alone (ATTEMPT with source prompts included)."""
    configs = [
        tiny(data_dir, method="superpos", lr=0.02),
        tiny(data_dir, method="simple", seed=1),
        tiny(data_dir, method="residual", method_options={"bottleneck": 4}, seed=2),
        tiny(data_dir, method="attempt", method_options={"bottleneck": 8, "source_prompts": source_prompt_files(tmp_path)}, seed=3),
    ]
    run_group(configs, [tmp_path / f"fused{k}" for k in range(len(configs))], progress=False)
    for k, config in enumerate(configs):
        run(config, tmp_path / f"solo{k}", progress=False)
        assert_same_run(tmp_path / f"fused{k}", tmp_path / f"solo{k}")


@pytest.mark.slow
def test_fused_trials_with_dropout_on_are_reproducible_but_not_their_solo_runs(data_dir, tmp_path):
    """Dropout on: one dropout stream (seeded with the first member's seed) draws the masks over
    the whole fused batch, so a fused group reruns identically, but a member does not end as
    it does alone (README, Sweeps: what fused dropout guarantees)."""
    configs = [tiny(data_dir, method="simple", dropout=True, epochs=1, seed=seed) for seed in (0, 1)]
    for name in ("fused", "again"):
        run_group(configs, [tmp_path / f"{name}{k}" for k in range(2)], progress=False)
    run(configs[1], tmp_path / "solo1", progress=False)
    for k in range(2):
        assert_same_run(tmp_path / f"fused{k}", tmp_path / f"again{k}", atol=0, rtol=0)
    assert not torch.allclose(prompt_of(tmp_path / "fused1")["prompt"], prompt_of(tmp_path / "solo1")["prompt"], atol=1e-5)


@pytest.mark.parametrize("model", ["tiny-t5", pytest.param("tiny-llama", marks=pytest.mark.slow)])
def test_out_of_gpu_memory_halves_the_fused_width_and_changes_no_result(data_dir, tmp_path, monkeypatch, model):
    """A group that does not fit through one forward: CUDA's out-of-memory error (faked: in the
    forward of more than 2 trials, then once in the backward of 2, after a gradient had been
    accumulated) halves the width, 4 -> 2 -> 1; the failed chunk is redone with its gradients
    restored, and every trial ends as it would alone."""
    configs = [tiny(data_dir, model=model, method=method, seed=seed, grad_accum=2, batch_size=4)
               for seed, method in enumerate(("superpos", "simple", "superpos", "simple"))]
    trainer = Trainer(configs, [tmp_path / f"fused{k}" for k in range(4)], progress=False)
    real = trainer.backbone.example_losses

    def fits_two_trials(embeds, masks, targets, groups=None):
        if len(groups) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (faked)")
        return real(embeds, masks, targets, groups)

    monkeypatch.setattr(trainer.backbone, "example_losses", fits_two_trials)
    accumulated = []

    def out_of_memory_once_after_accumulating(param):
        # the second micro-batch of an optimizer step: the gradient holds both micro-batches now
        if not accumulated and trainer.fused_width == 2 and trainer.trials[0].state.batch_in_epoch % 2 == 1:
            accumulated.append(param.grad.clone())
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (faked, in backward)")

    trainer.trials[0].method.p_prime.register_post_accumulate_grad_hook(out_of_memory_once_after_accumulating)
    trainer.fit()
    assert trainer.fused_width == 1 and accumulated
    for k, config in enumerate(configs):
        run(config, tmp_path / f"solo{k}", progress=False)
        torch.testing.assert_close(prompt_of(tmp_path / f"fused{k}")["prompt"], prompt_of(tmp_path / f"solo{k}")["prompt"], rtol=0, atol=1e-5)


def test_a_diverging_member_leaves_its_group_untouched(data_dir, tmp_path, monkeypatch):
    configs = [tiny(data_dir, method="simple"), tiny(data_dir, method="superpos")]
    run(configs[1], tmp_path / "solo", progress=False)
    trainer = Trainer(configs, [tmp_path / "a", tmp_path / "b"], progress=False)
    real = trainer.backbone.example_losses
    calls = {"n": 0}

    def poison_first_member(embeds, masks, targets, groups=None):
        sums, counts = real(embeds, masks, targets, groups)
        calls["n"] += 1
        if calls["n"] == 2:
            sums = sums.clone()
            sums[groups[0].rows] = float("inf")
        return sums, counts

    monkeypatch.setattr(trainer.backbone, "example_losses", poison_first_member)
    a, b = trainer.fit()
    assert a.state.status == "diverged" and b.state.status == "finished"
    assert torch.allclose(prompt_of(tmp_path / "b")["prompt"], prompt_of(tmp_path / "solo")["prompt"], atol=1e-5)


def test_full_finetuning_never_fuses(data_dir):
    from superpos.errors import ConfigError

    with pytest.raises(ConfigError, match="never fuses"):
        Trainer([tiny(data_dir, method="full"), tiny(data_dir, method="simple")], progress=False)


def test_nan_loss_at_the_first_step_ends_the_trial_as_diverged(data_dir, tmp_path, monkeypatch):
    trainer = Trainer([tiny(data_dir, epochs=1)], [tmp_path / "out"], progress=False)
    real = trainer.backbone.example_losses
    monkeypatch.setattr(trainer.backbone, "example_losses", lambda *a, **k: (lambda s, c: (s * float("inf"), c))(*real(*a, **k)))
    (trial,) = trainer.fit()
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert trial.state.status == result["status"] == "diverged" and result["steps"] == 0


def test_a_prompt_made_non_finite_by_its_last_step_is_diverged(data_dir, tmp_path):
    """lr 1e30 sends the prompt to inf in one AdamW step; with one step in all no later loss
    shows it, so the parameters are checked after the step."""
    trial = run(tiny(data_dir, epochs=1, max_train_examples=8, lr=1e30), tmp_path / "out", progress=False)
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert trial.state.status == result["status"] == "diverged"
    assert "non-finite at step 1" in result["message"]


def test_a_short_last_accumulation_is_averaged_over_the_micro_batches_it_has(data_dir, monkeypatch):
    """24 examples in batches of 8 with grad_accum 2: the epoch's last accumulation holds one
    micro-batch, so its gradient is that batch's mean-loss gradient (as with grad_accum 1 over
    the same step), not half of it."""
    grads = {}
    original = Trainer.optimizer_step

    def record(self, trial):
        grads.setdefault(self.configs[0].grad_accum, []).append(torch.cat([p.grad.flatten() for p in trial.trainable_params()]).clone())
        original(self, trial)

    monkeypatch.setattr(Trainer, "optimizer_step", record)
    for accum in (1, 3):  # one micro-batch per epoch: every accumulation is short under grad_accum 3
        Trainer([tiny(data_dir, batch_size=24, grad_accum=accum, epochs=2)], progress=False).fit()
    assert len(grads[1]) == len(grads[3]) == 2
    for a, b in zip(grads[1], grads[3]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
