"""``superpos bench --gpu-check --out DIR``: one run that verifies the whole CUDA path.

Made for a short session on a bare GPU machine (one H100, about 15 minutes, this checkout and
torch, transformers and peft only: no ray, mlflow, optuna, datasets or MiniLM package; tiny-t5's
tokenizer ships as a file and the Trainer's data set is written into DIR). Items, in order, each
ending in one verdict line (PASS / FAIL / SKIP, a figure, its tolerance), cheapest first so that
a run cut short still answers most:

1. ``environment``: what ran (``superpos.environment``), also as DIR/environment.json;
2. ``fast_vs_hf_bf16``: per-example losses of the fast forward (compiled blocks) against Hugging
   Face's T5, T5 v1.1 small shapes, bf16 weights under autocast, as the training loop runs them;
3. ``compiled_vs_eager``: the fast forward compiled against the same uncompiled, bf16: losses
   and greedy generations;
4. ``trainer_fused``: a real ``Trainer`` run on tiny-t5 on CUDA, 2 trials fused (SuperPos and
   simple, ``forward: fast``), one epoch of training then generation-based evaluation on a
   synthetic RTE-format data set: both trials finish with finite losses and a score;
5. ``oom_halving``: a real out-of-memory halving: with ``torch.cuda.set_per_process_memory_fraction``
   capping memory at about 2.5 trials' activations, 8 fused trials (small shapes) must come down
   to a width that fits, and every trial's loss and gradient must equal those of the trial alone;
6. ``determinism``: two Trainer runs with ``deterministic: true`` (superpos.determinism) give
   bit-identical prompts;
7. ``bench``: ``superpos bench --device cuda`` (small and base shapes, PEFT baseline, K = 1, 8,
   16 and doubling, % of bf16 peak, projected table1.yaml H100-hours) into DIR/bench.json, with
   what is left of the time budget (no row starts past the deadline; the doubling stops when a
   row twice as long as the last would not fit).

DIR receives ``verdicts.txt`` (the verdict lines), ``gpu_check.json`` (every figure; rewritten
after each item, so a run cut short keeps what it found), ``environment.json``, ``bench.json``,
``data/`` (the synthetic RTE) and ``trainer/`` (the Trainer's run directories); the printed log
(tracebacks of failed items, the bench table) goes to stdout. ``--dry-run`` runs every item on
CPU with tiny-t5 (fp32, torch.compile left out, the out-of-memory error faked above 2 fused
trials, the bench's CPU rows), so that CI keeps the command working (tests/test_gpu_check.py);
a dry run's verdicts say nothing about a GPU.
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from superpos import environment
from superpos.bench import seq2seq, throughput, timing, workload
from superpos.determinism import CUBLAS_WORKSPACE

#: relative tolerances of the bf16 comparisons (bf16 keeps 8 bits of mantissa: ~4e-3 a rounding)
BF16_LOSS_RTOL = 2e-2
#: share of greedy tokens that must agree between compiled and eager bf16 (near-ties may flip)
MIN_TOKEN_AGREEMENT = 0.98
#: the whole check's time budget; the bench gets what the tests leave
BUDGET_S = 420
#: timed and untimed steps of a bench row (the bench alone: 10 and 3): compile time dominates anyway
BENCH_STEPS, BENCH_WARMUP = 5, 2
OOM_TRIALS = 8
#: the memory cap, in activation peaks of one trial above what is allocated
OOM_CAP_TRIALS = 2.5


@dataclass
class Check:
    out: Path
    dry_run: bool
    deadline: float
    device: torch.device
    results: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def record(self, name: str, status: str, figure: str, **details) -> None:
        line = f"{status} {name}: {figure}"
        print(line, flush=True)
        with open(self.out / "verdicts.txt", "a") as f:
            f.write(line + "\n")
        self.results[name] = {"status": status, "figure": figure, **details}
        (self.out / "gpu_check.json").write_text(json.dumps({"dry_run": self.dry_run, "items": self.results}, indent=2) + "\n")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# -- models and batches -------------------------------------------------------------------
def small_backbone(check: Check):
    """A random-weight T5 v1.1 small-shaped backbone (tiny-t5 in a dry run), frozen weights bf16 on CUDA."""
    from superpos.backbones.seq2seq import Seq2SeqBackbone

    model, tok = workload.make_model("small" if check.cuda else "tiny", check.device)
    if check.cuda:
        model.to(torch.bfloat16)
    return Seq2SeqBackbone(model, tok, "small-random", dropout=False).train()


def fused_inputs(loop, k: int):
    """K SuperPos trials' prompted, fused batch (the bench's synthetic workload): embeddings, mask, targets."""
    trials = workload.superpos_trials(loop.backbone, k, loop.device)
    batches = workload.synthetic_batches(k, loop.backbone.vocab_size(), loop.device)
    with torch.no_grad(), loop._autocast():
        embeds, masks, _ = loop._fuse(trials, batches)
    return embeds, masks, torch.cat([b.targets for b in batches])


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs() / b.float().abs().clamp(min=1e-6)).max().item()


# -- the items ----------------------------------------------------------------------------
def check_environment(check: Check) -> None:
    env = environment.collect()
    environment.write(check.out / "environment.json")
    check.record("environment", "PASS", f"{env['device']}, torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, "
                 f"transformers {env['transformers']}, peft {env['peft']}", environment=env)


def check_fast_vs_hf(check: Check) -> None:
    from superpos.backbones.fast_t5 import FastT5

    loop = workload.training_loop(small_backbone(check), check.device)
    loop.backbone.fast_forward = FastT5(loop.backbone.model, compile=check.cuda)
    diff = seq2seq.bf16_check(loop, check.device)
    check.record("fast_vs_hf_bf16", verdict(diff <= BF16_LOSS_RTOL), f"max relative per-example loss difference {diff:.2e} "
                 f"(tolerance {BF16_LOSS_RTOL:g}; {'bf16, compiled' if check.cuda else 'fp32 CPU dry run'})", max_rel_diff=diff)


def check_compiled_vs_eager(check: Check) -> None:
    from superpos.backbones.fast_t5 import FastT5

    loop = workload.training_loop(small_backbone(check), check.device)
    embeds, masks, targets = fused_inputs(loop, 2)
    losses, tokens = [], []
    for compiled in (check.cuda, False):  # a dry run compares eager with eager: only the code path is checked
        fast = FastT5(loop.backbone.model, compile=compiled)
        with torch.no_grad(), loop._autocast():
            losses.append(fast.example_losses(embeds, masks, targets)[0])
            tokens.append(fast.generate(embeds, masks, workload.TARGET_TOKENS))
    diff = max_rel(losses[0], losses[1])
    width = min(t.shape[1] for t in tokens)
    agreement = (tokens[0][:, :width] == tokens[1][:, :width]).float().mean().item()
    ok = diff <= BF16_LOSS_RTOL and agreement >= MIN_TOKEN_AGREEMENT
    check.record("compiled_vs_eager", verdict(ok), f"max relative loss difference {diff:.2e} (tolerance {BF16_LOSS_RTOL:g}), greedy tokens "
                 f"agreeing {agreement:.1%} (at least {MIN_TOKEN_AGREEMENT:.0%})" + ("" if check.cuda else "; dry run: compile left out"),
                 max_rel_diff=diff, token_agreement=agreement)


def write_rte(root: Path, n_train: int = 64, n_eval: int = 32) -> Path:
    """A synthetic data set in RTE's original TSV layout (the GPU machine has no data)."""
    folder = root / "rte"
    folder.mkdir(parents=True, exist_ok=True)
    labels = ("entailment", "not_entailment")
    for split, n in (("train", n_train), ("validation", n_eval)):
        rows = [f"{i}\tThe {i % 7} cats sat on mat number {i}.\tA cat sat on mat {i if i % 2 else i + 1}.\t{labels[i % 2]}" for i in range(n)]
        (folder / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n")
    return root


def trainer_configs(check: Check, data: Path, **overrides):
    """A SuperPos (m = 16) and a simple trial on tiny-t5 and the synthetic RTE: one fusable group."""
    from superpos.config import TrainConfig

    common = dict(model="tiny-t5", task="rte", data_dir=str(data), epochs=1, batch_size=8, eval_batch_size=16, max_input_len=64,
                  device=check.device.type, **overrides)
    return [TrainConfig(method="superpos", seed=0, method_options={"m": 16}, **common), TrainConfig(method="simple", seed=1, **common)]


def check_trainer(check: Check, data: Path) -> None:
    from superpos.train import Trainer

    start = time.perf_counter()
    configs = trainer_configs(check, data, forward="fast")
    trainer = Trainer(configs, [check.out / "trainer" / c.method for c in configs], overwrite=True, progress=False)
    dtype = next(trainer.backbone.model.parameters()).dtype
    trials = trainer.fit()
    seconds = time.perf_counter() - start
    finals = [t.state.history[-1] if t.state.history else {} for t in trials]
    ok = (all(t.state.status == "finished" for t in trials) and all(math.isfinite(f.get("score", math.nan)) for f in finals)
          and all(math.isfinite(f.get("train_loss", math.nan)) for f in finals) and (dtype == torch.bfloat16) == check.cuda)
    figure = ", ".join(f"{t.config.method}: {t.state.status}, {t.state.step} steps, loss {f.get('train_loss', float('nan')):.3f}, "
                       f"score {f.get('score', float('nan')):.3f}" for t, f in zip(trials, finals))
    check.record("trainer_fused", verdict(ok), f"2 trials fused, forward fast, frozen weights {str(dtype).removeprefix('torch.')}; {figure}; {seconds:.0f} s",
                 seconds=seconds, records=finals)


def grads_of(trials) -> list[torch.Tensor]:
    return [torch.cat([p.grad.flatten().float() for p in t.trainable_params()]) for t in trials]


def check_oom_halving(check: Check) -> None:
    """Real out-of-memory halving under a memory cap (faked above 2 trials in a dry run)."""
    backbone = small_backbone(check)
    loop = workload.training_loop(backbone, check.device)
    loop.halve_on_oom = True
    trials = workload.superpos_trials(backbone, OOM_TRIALS, check.device)
    batches = workload.synthetic_batches(OOM_TRIALS, backbone.vocab_size(), check.device)

    def reset_grads():
        for t in trials:
            t.optimizer.zero_grad(set_to_none=True)

    # each trial alone: the reference, and the activation peak of one trial
    timing.reset_memory(check.device)
    base = torch.cuda.memory_allocated() if check.cuda else 0
    loop.fused_width = 1
    alone = loop.train_step(trials, batches)
    alone_grads = grads_of(trials)
    per_trial = (torch.cuda.max_memory_allocated() - base) if check.cuda else 0
    reset_grads()
    timing.reset_memory(check.device)
    loop.fused_width = OOM_TRIALS
    cap_gib = None
    if check.cuda:
        total = torch.cuda.get_device_properties(check.device).total_memory
        cap = torch.cuda.memory_reserved() + OOM_CAP_TRIALS * per_trial
        cap_gib = cap / 2**30
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total))
    else:
        real = backbone.example_losses

        def fits_two(embeds, masks, targets, groups=None):
            if groups is not None and len(groups) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (faked: dry run)")
            return real(embeds, masks, targets, groups)

        backbone.example_losses = fits_two
    try:
        fused = loop.train_step(trials, batches)
    finally:
        if check.cuda:
            torch.cuda.set_per_process_memory_fraction(1.0)
        else:
            del backbone.example_losses
    loss_diff = max_rel(torch.tensor(fused), torch.tensor(alone))
    grad_diff = max((a - b).norm().item() / b.norm().item() for a, b in zip(grads_of(trials), alone_grads))
    reset_grads()
    timing.reset_memory(check.device)
    ok = 1 <= loop.fused_width < OOM_TRIALS and loss_diff <= BF16_LOSS_RTOL and grad_diff <= BF16_LOSS_RTOL
    cap = f"a cap of {cap_gib:.2f} GiB ({OOM_CAP_TRIALS} x {per_trial / 2**30:.2f} GiB a trial above what was reserved)" if check.cuda else "OOM faked above 2 trials (dry run)"
    check.record("oom_halving", verdict(ok), f"{OOM_TRIALS} fused trials -> {loop.fused_width} a forward under {cap}; losses vs alone {loss_diff:.1e}, "
                 f"gradients vs alone {grad_diff:.1e} (tolerance {BF16_LOSS_RTOL:g})", fused_width=loop.fused_width, cap_gib=cap_gib,
                 per_trial_gib=per_trial / 2**30, loss_rel_diff=loss_diff, grad_rel_diff=grad_diff)


def check_determinism(check: Check, data: Path) -> None:
    from safetensors.torch import load_file

    from superpos.train import Trainer

    prompts, flags = [], (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        for run in ("a", "b"):
            configs = trainer_configs(check, data, deterministic=True)[:1]
            Trainer(configs, [check.out / "trainer" / f"deterministic_{run}"], overwrite=True, progress=False).fit()
            prompts.append(load_file(check.out / "trainer" / f"deterministic_{run}" / "prompt.safetensors"))
    finally:
        torch.use_deterministic_algorithms(False)  # process-wide: the bench measures the default kernels
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags
    equal = all(torch.equal(prompts[0][k], prompts[1][k]) for k in prompts[0])
    check.record("determinism", verdict(equal), f"two deterministic tiny-t5 runs ({check.device.type}): prompts {'bit-identical' if equal else 'DIFFER'}")


def check_bench(check: Check) -> None:
    left = check.deadline - time.monotonic()
    if left < 60:
        check.record("bench", "SKIP", f"{left:.0f} s of the budget left; run `superpos bench --device cuda` alone")
        return
    sizes, steps, warmup = ("small,base", BENCH_STEPS, BENCH_WARMUP) if check.cuda else ("tiny", 1, 0)
    result = throughput.run(check.device.type, sizes, steps, warmup, str(check.out / "bench.json"), deadline=check.deadline)
    ratios = result.get("ratios", {})
    ran = [r for r in result["rows"] if "error" not in r]
    hours = ratios.get("table1_h100_hours", {}).get("total")
    parts = [f"{len(ran)}/{len(result['rows'])} rows ran"]
    for size in sizes.split(","):
        r = ratios.get(size, {})
        if check.cuda and "examples_per_s" in r:
            parts.append(f"{size}: {r['best']} {r['examples_per_s']:.0f} ex/s, {r['pct_of_peak']:.1f}% of bf16 peak, {r['best_vs_peft'] or 0:.2f}x PEFT")
    if hours is not None:
        parts.append(f"table1.yaml {hours:.1f} H100-hours (targets: 4,000 ex/s, 30% of peak, under 100 H100-hours)")
    check.record("bench", verdict(bool(ran)), "; ".join(parts) + f"; {result['summary']}", summary=result["summary"], notes=result["notes"])


# -- the run ------------------------------------------------------------------------------
def run(out: str | Path, dry_run: bool = False, budget_s: float = BUDGET_S) -> dict:
    """Run every item (see the module docstring) into ``out``; returns the JSON summary."""
    from superpos.errors import ConfigError

    if not dry_run and not torch.cuda.is_available():
        raise ConfigError("superpos bench --gpu-check needs a CUDA device (none is available); --dry-run runs it on CPU")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)  # before the first cuBLAS call: the determinism item
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "verdicts.txt").write_text("")
    check = Check(out, dry_run, time.monotonic() + budget_s, torch.device("cpu" if dry_run else "cuda"))
    data = write_rte(out / "data")
    items = [("environment", check_environment), ("fast_vs_hf_bf16", check_fast_vs_hf), ("compiled_vs_eager", check_compiled_vs_eager),
             ("trainer_fused", lambda c: check_trainer(c, data)), ("oom_halving", check_oom_halving),
             ("determinism", lambda c: check_determinism(c, data)), ("bench", check_bench)]
    for name, item in items:
        try:
            item(check)
        except Exception as error:  # one item's failure must not cost the others their device time
            traceback.print_exc()
            check.record(name, "FAIL", f"{type(error).__name__}: {str(error)[:300]}")
        if check.cuda:
            timing.reset_memory(check.device)
    failed = [n for n, r in check.results.items() if r["status"] == "FAIL"]
    print(f"GPU CHECK{' (dry run)' if dry_run else ''}: {len(check.results) - len(failed)}/{len(check.results)} items pass or skip"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return {"dry_run": dry_run, "items": check.results}
