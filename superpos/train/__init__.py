"""The training loop: K trials that share one frozen backbone, trained together.

``Trainer.__init__`` (trainer.py: build) validates every config and output directory before any
work, loads the data and the backbone once, and builds one ``Trial`` (trial.py: prompt method,
optimizer, data order, state) per config. ``fit`` (trainer.py) then runs epochs of
``train_step`` (step.py): the K trials' batches are prompted by their own methods, concatenated
into one forward/backward through the frozen model, and each trial's loss is its own mean over
its own tokens. Their sum is back-propagated: a trial's parameters only reach its own rows, so
gradients never mix, and each trial steps its own optimizer. With K = 1 this is the ordinary
prompt-tuning loop.

Dropout of the frozen model (when on) draws its masks from one stream, seeded with the first
member's seed, over the whole fused batch: a fused group is reproducible (same group, same
order, same width), but a member does not end as it would alone, and a width halved on GPU
out-of-memory changes the masks. With dropout off, every member ends as it does alone (to float
rounding) at any width. Per-trial dropout generators would need every dropout call of the
frozen model split by trial rows; not done.

Protocol (SuperPos paper section 3.4; methods.md section 5): AdamW with per-group weight decay,
no LR scheduler by default, evaluation every epoch by greedy generation (rank classification is
an option, not the paper's), invalid generations count as wrong, the reported score is the best
validation score over training.

Every evaluation (evaluation.py) appends a line to ``metrics.jsonl`` and writes a checkpoint
(trainable state, optimizer, scheduler, RNG states, data position, best score, history; the
previous one kept as a fallback; checkpoint.py, superpos/run_dir.py), so an interrupted run
resumes where it stopped and ends as the uninterrupted one would (CPU). A loss that becomes NaN
or inf, or parameters or a prompt that a step made non-finite, end that trial with status
``diverged``; the others go on. On CPU the process keeps the memory it frees for reuse
(``superpos.cpu_allocator``; a fused group's large activations would otherwise be page-faulted
in afresh at every step).
"""

from superpos.train.trainer import SHARED_KEYS, Trainer, pick_device, run, run_group
from superpos.train.trial import Callback, Trial, TrialState, save_prompt

__all__ = ["SHARED_KEYS", "Callback", "Trainer", "Trial", "TrialState", "pick_device", "run", "run_group", "save_prompt"]
