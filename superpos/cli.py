"""The ``superpos`` console script: one subcommand per plain function.

``train`` needs only the core libraries; subcommands that glue in Ray, MLflow or Optuna
import them when they run, so ``superpos train`` works on a bare GPU box.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import sys
from pathlib import Path

from superpos import portable_cpu
from superpos.errors import ConfigError, WriteError

#: modules that add subcommands with a ``register(subparsers)`` function; they import Ray,
#: MLflow or Optuna only when their subcommand runs
SUBCOMMAND_MODULES = ("trainables.cli", "analysis.cli")

#: CLI flag -> method option (only passed on when given)
METHOD_FLAGS = ("prompt_len", "m", "softmax", "p_init", "bottleneck", "shared_mlp", "source_prompts", "temperature", "rank", "init_from")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    from superpos.backbones import MODEL_CHOICES
    from superpos.config import TrainConfig
    from superpos.methods import METHODS
    from superpos.settings import DATA_DIR_ENV
    from superpos.tasks import TASKS

    d = TrainConfig.__dataclass_fields__
    p.add_argument("--task", required=True, help=f"one of: {', '.join(sorted(TASKS))}")
    p.add_argument("--method", default="superpos", help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--model", required=True, help=f"one of: {', '.join(MODEL_CHOICES)}, or a local model directory")
    p.add_argument("--data-dir", default=None, help=f"GLUE/SuperGLUE files (default: ${DATA_DIR_ENV} or ../shared/data)")
    p.add_argument("--epochs", type=int, default=d["epochs"].default)
    p.add_argument("--batch-size", type=int, default=d["batch_size"].default)
    p.add_argument("--eval-batch-size", type=int, default=d["eval_batch_size"].default)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=None, help="default: the method's paper value")
    p.add_argument("--weight-decay", type=float, default=None, help="default: the method's paper value")
    p.add_argument("--dropout", action=argparse.BooleanOptionalAction, default=True, help="dropout of the frozen model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--template", default="t5", help="t5 (label names) or attempt (label indices)")
    p.add_argument("--split", default="paper", help="paper (train; whole validation) or heldout (ATTEMPT/DePT: validation/test carved out with seed 42)")
    p.add_argument("--source", default="local", help="local (files under --data-dir: original TSV/JSONL, or hub-schema Parquet) or hub (datasets.load_dataset)")
    p.add_argument("--max-train-examples", type=int, default=None)
    p.add_argument("--max-eval-examples", type=int, default=None)
    p.add_argument("--max-input-len", type=int, default=d["max_input_len"].default)
    p.add_argument("--eval-every", type=int, default=None, help="also evaluate every N optimizer steps")
    p.add_argument("--checkpoint-every", type=int, default=None, help="also checkpoint every N optimizer steps")
    p.add_argument("--schedule", default="constant", help="constant (paper) or linear")
    p.add_argument("--warmup-ratio", type=float, default=0.0)
    p.add_argument("--head", default="similarity", help="encoder backbones: similarity (pure prompt tuning) or linear")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--forward", default="hf", help="T5 forward: hf (Hugging Face) or fast (functional, compiled on CUDA; same results)")
    p.add_argument("--evaluation", default="generate", help="seq2seq and causal LMs: generate (greedy, the paper's) or rank (score each label text; not the paper's)")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (CUDA: slower; see superpos/determinism.py); on CPU also the portable CPU mode (superpos/portable_cpu.py)")
    g = p.add_argument_group("method options (only for the methods that have them)")
    g.add_argument("--prompt-len", type=int, default=None, help="number of prompt tokens n (paper: 10)")
    g.add_argument("--m", type=int, default=None, help="superpos: sampled tokens per superposition (paper: 128)")
    g.add_argument("--softmax", action=argparse.BooleanOptionalAction, default=None, help="superpos: softmax on p'")
    g.add_argument("--p-init", default=None, help="superpos: normal, one_hot, uniform or zeros")
    g.add_argument("--bottleneck", type=int, default=None, help="residual (128) / attempt (G = 100)")
    g.add_argument("--shared-mlp", action=argparse.BooleanOptionalAction, default=None, help="residual: one MLP for all tokens")
    g.add_argument("--source-prompts", nargs="+", default=None, help="attempt: source prompt .safetensors files or PEFT adapter folders (required), or 'none' to run without (not the paper's ATTEMPT)")
    g.add_argument("--temperature", type=float, default=None, help="attempt: softmax temperature (default d*e)")
    g.add_argument("--rank", type=int, default=None, help="lowrank: rank b (10)")
    g.add_argument("--init-from", default=None, metavar="ADAPTER_DIR", help="simple: start from a PEFT prompt-tuning adapter folder (superpos export)")


def config_from_args(args: argparse.Namespace):
    from superpos.config import TrainConfig

    options = {k: getattr(args, k) for k in METHOD_FLAGS if getattr(args, k) is not None}
    if options.get("source_prompts") == ["none"]:  # ATTEMPT without source prompts, on purpose
        options["source_prompts"] = "none"
    kwargs = dict(
        task=args.task, method=args.method, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size, grad_accum=args.grad_accum, lr=args.lr, weight_decay=args.weight_decay,
        dropout=args.dropout, seed=args.seed, template=args.template, split=args.split, source=args.source, max_train_examples=args.max_train_examples,
        max_eval_examples=args.max_eval_examples, max_input_len=args.max_input_len, eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every, schedule=args.schedule, warmup_ratio=args.warmup_ratio,
        head=args.head, device=args.device, forward=args.forward, evaluation=args.evaluation, deterministic=args.deterministic, method_options=options,
    )
    if args.data_dir is not None:
        kwargs["data_dir"] = args.data_dir
    return TrainConfig(**kwargs).validate("command line")


def plan_line(trainer, out: Path) -> str:
    """What a ``superpos train`` run is about to do, in one line (printed before training)."""
    c = trainer.configs[0]
    steps = trainer.steps_per_epoch()
    action = "resuming the unfinished run in" if trainer.resume[0] else "writing to"
    test = f" + {len(trainer.test_split)} test" if trainer.test_split is not None else ""
    return (
        f"superpos train: {c.method} on {c.task} with {c.model}, {len(trainer.train_split)} train / {len(trainer.eval_split)} eval{test}"
        f" examples, {c.epochs} epoch(s) x {steps} steps = {c.epochs * steps} optimizer steps; {action} {out}"
    )


def train(args: argparse.Namespace) -> int:
    """Train one prompt on one task; writes config.json, metrics.jsonl, prompt.safetensors."""
    from superpos.train import Trainer

    config = config_from_args(args)
    out = Path(args.out or f"runs/{config.task}_{config.method}_seed{config.seed}")
    trainer = Trainer([config], [out], overwrite=args.overwrite, progress=not args.no_progress)
    print(plan_line(trainer, out), file=sys.stderr, flush=True)
    (trial,) = trainer.fit()
    result = json.loads((out / "result.json").read_text())
    print(json.dumps({"out": str(out), **result}))
    return 0 if trial.state.status == "finished" else 1


def bench(args: argparse.Namespace) -> int:
    """Throughput benchmarks (superpos/bench/throughput.py; the last printed line is the summary),
    with --startup a trial's start-up phase by phase (superpos/bench/startup.py), or with
    --gpu-check the one-shot CUDA check (superpos/bench/gpu_check.py; exit 1 if an item failed)."""
    if args.startup:
        from superpos.bench import startup

        startup.main(args.models, args.device, None, args.json, args.out)
        return 0
    if args.gpu_check:
        from superpos.bench import gpu_check

        if not args.out:
            raise ConfigError("--gpu-check needs --out DIR (the folder that receives every result)")
        result = gpu_check.run(args.out, dry_run=args.dry_run)
        return int(any(item["status"] == "FAIL" for item in result["items"].values()))
    from superpos.bench.throughput import run

    run(args.device, args.sizes, args.steps, args.warmup, args.out)
    return 0


def env(args: argparse.Namespace) -> int:
    """The environment every run records (superpos/environment.py), for this install."""
    from superpos.environment import collect, format_env

    print(json.dumps(collect(), indent=2) if args.json else format_env(collect()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="superpos", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one prompt (or fine-tune) on one task")
    add_train_arguments(p)
    p.add_argument("--out", default=None, help="output directory (default runs/TASK_METHOD_seedN)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=train)
    from superpos.bench.options import add_arguments as add_bench_arguments

    p = sub.add_parser("bench", help="training and evaluation throughput, trial start-up (--startup): benchmarks, not tests")
    add_bench_arguments(p)
    p.set_defaults(func=bench)
    p = sub.add_parser("env", help="versions and hardware that runs record (environment.json, env.* tags)")
    p.add_argument("--json", action="store_true", help="as JSON, as environment.json holds it")
    p.set_defaults(func=env)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def deterministic_cpu_training(argv: list[str]) -> bool:
    """``superpos train --deterministic`` not on ``--device cuda``: the portable CPU mode's default."""
    device = next((a.split("=", 1)[1] for a in argv if a.startswith("--device=")), None)
    if "--device" in argv[:-1]:
        device = argv[argv.index("--device") + 1]
    return argv[:1] == ["train"] and "--deterministic" in argv and device != "cuda"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:  # before anything imports torch: the kernels' settings are read when torch loads
        portable_cpu.prepare(deterministic_cpu_training(argv))
    except ConfigError as e:
        print(f"superpos: error: {e}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"superpos {args.command}: error: {e}", file=sys.stderr)
        return 2
    except WriteError as e:
        print(f"superpos {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        print(f"superpos {args.command}: error: no space left on the disk writing {e.filename or 'a file'}; free space, then run the same command again "
              "(a run resumes from its last checkpoint)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
