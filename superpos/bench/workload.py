"""The benchmark's workload: random-weight models, synthetic batches, trials, and one step of each variant.

Encoder-decoder sizes follow ../shared/bench/ANCHORS.md: random-weight T5 v1.1-shaped models
(``SHAPES``; ``tiny`` is the tiny-t5 preset), batch 32 per trial, 128 input tokens + 10 prompt
tokens, 4 target tokens, AdamW. Inputs are right-padded (lengths 96..128) so that the padding
masks are real. Decoder-only sizes (``DECODER_SHAPES``; ``llama-tiny``: the tiny-llama preset,
``llama-1b``: a random Llama-3.2-1B-shaped model): batch 8 a trial, 256 input + 4 label tokens
(3 label tokens and EOS; inputs right-padded, lengths 224..256), the loss over the label tokens
only.

A step is PEFT's ``PromptTuning`` (``peft_step``: fp32, the model's dropout on: what a user
gets) or K SuperPos trials through the training loop's own step functions (``superpos_steps``:
``Trainer.train_step`` + each trial's ``optimizer_step``, fused or one trial after another).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from superpos.backbones import T5_BASE, build_tiny_llama, build_tiny_t5, seeded
from superpos.backbones.seq2seq import IGNORE
from superpos.config import TrainConfig
from superpos.data import Batch
from superpos.methods import build_method
from superpos.train import Trainer, Trial, TrialState

BATCH, INPUT_TOKENS, PROMPT_TOKENS, TARGET_TOKENS = 32, 128, 10, 4

#: T5 v1.1 shapes (ANCHORS.md, gpu_anchor.py); "tiny" is the tiny-t5 preset
SHAPES = {
    "small": dict(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6),
    "base": T5_BASE,
}

#: decoder-only sizes: Llama-3.2-1B's shape (hub config), and the tiny-llama preset's
DECODER_SHAPES = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                     head_dim=64, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0, max_position_embeddings=2048),
    "llama-tiny": None,
}
DECODER_BATCH, DECODER_INPUT, LABEL_TOKENS, DECODER_K = 8, 256, 4, (1, 4, 8)


@dataclass
class Vocabulary:
    """A stand-in tokenizer for random-weight models: the Backbone only needs its size and ids."""

    size: int = 32100
    pad_token_id: int = 0
    eos_token_id: int = 1

    def __len__(self) -> int:
        return self.size

    @property
    def all_special_ids(self) -> list[int]:  # what prompt sampling leaves out (superpos.methods.base)
        return [self.pad_token_id, self.eos_token_id]

    def get_added_vocab(self) -> dict[str, int]:
        return {}


def make_model(size: str, device):
    """An fp32 T5ForConditionalGeneration (dropout 0.1 as in the v1.1 configs) and its tokenizer."""
    from transformers import T5Config, T5ForConditionalGeneration

    if size == "tiny":
        model, tok = build_tiny_t5()
        return model.to(device), tok
    config = T5Config(vocab_size=32128, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.1,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **SHAPES[size])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(config)
    return model.to(device), Vocabulary()


def synthetic_batches(k: int, vocab: int, device):
    """K trials' batches like real ones: ids of real tokens, right padding, 4 target tokens."""
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(k):
        ids = torch.randint(5, vocab, (BATCH, INPUT_TOKENS), generator=g)
        lengths = torch.randint(INPUT_TOKENS - 32, INPUT_TOKENS + 1, (BATCH,), generator=g)
        lengths[0] = INPUT_TOKENS
        mask = (torch.arange(INPUT_TOKENS)[None, :] < lengths[:, None]).long()
        targets = torch.randint(5, vocab, (BATCH, TARGET_TOKENS), generator=g)
        batches.append(Batch((ids * mask).to(device), mask.to(device), targets.to(device), list(range(BATCH))))
    return batches


def decoder_model(size: str, device):
    """An fp32 random Llama of ``size`` with tiny-llama's offline tokenizer (ids fit every size)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model, tok = build_tiny_llama()
    if DECODER_SHAPES[size] is not None:
        model = seeded(LlamaForCausalLM, LlamaConfig(attn_implementation="sdpa", **DECODER_SHAPES[size]), 0)
    return model.to(device), tok


def decoder_batches(k: int, vocab: int, device):
    """K trials' training batches as ``arrange`` lays them out: input, then the label and EOS as targets."""
    g = torch.Generator().manual_seed(1)
    width = DECODER_INPUT + LABEL_TOKENS
    batches = []
    for _ in range(k):
        lengths = torch.randint(DECODER_INPUT - 32, DECODER_INPUT + 1, (DECODER_BATCH,), generator=g) + LABEL_TOKENS
        lengths[0] = width
        pos = torch.arange(width)[None, :]
        mask = (pos < lengths[:, None]).long()
        ids = torch.randint(5, vocab, (DECODER_BATCH, width), generator=g) * mask
        label = (pos >= lengths[:, None] - LABEL_TOKENS) & mask.bool()
        batches.append(Batch(ids.to(device), mask.to(device), torch.where(label, ids, IGNORE).to(device), list(range(DECODER_BATCH))))
    return batches


def superpos_trials(backbone, k: int, device):
    """K SuperPos trials with the paper's defaults (m = 128, lr 0.01), as Trainer._build_trial makes them."""
    trials = []
    for seed in range(k):
        config = TrainConfig(method="superpos", seed=seed)
        method = build_method("superpos", config.method_config(), backbone, torch.Generator().manual_seed(seed)).to(device)
        optimizer = torch.optim.AdamW(method.param_groups(), lr=config.method_config().lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        trials.append(Trial(config, None, method, None, optimizer, scheduler, TrialState()))
    return trials


def training_loop(backbone, device):
    """The Trainer's step functions over synthetic batches.

    ``train_step`` and ``optimizer_step`` use only the backbone and the device, so the loop is
    built without ``Trainer.__init__`` (which would load a task's data).
    """
    loop = Trainer.__new__(Trainer)
    loop.backbone, loop.device = backbone, torch.device(device)
    loop.fused_width, loop.halve_on_oom = 2**30, False  # every trial of a row in one forward; OOM ends the row
    return loop

def peft_step(size: str, device, causal: bool = False):
    """One PEFT PromptTuning training step, fp32, dropout on: what a user gets (ANCHORS.md);
    ``causal``: CAUSAL_LM prompt tuning of a decoder size."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    model, tok = (decoder_model if causal else make_model)(size, device)
    task_type = TaskType.CAUSAL_LM if causal else TaskType.SEQ_2_SEQ_LM
    model = get_peft_model(model, PromptTuningConfig(task_type=task_type, num_virtual_tokens=PROMPT_TOKENS))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.3)
    (batch,) = (decoder_batches if causal else synthetic_batches)(1, len(tok), device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.targets).loss.backward()
        optimizer.step()

    return step


def superpos_steps(loop, k: int, sequential: bool = False, make_batches=synthetic_batches):
    """A training step of K fused trials (or of K trials one after another) and an evaluation step."""
    backbone, device = loop.backbone, loop.device
    trials = superpos_trials(backbone, k, device)
    batches = make_batches(k, backbone.vocab_size(), device)

    groups = [([t], [b]) for t, b in zip(trials, batches)] if sequential else [(trials, batches)]

    def train():
        for group, group_batches in groups:
            loop.train_step(group, group_batches)
            for t in group:
                loop.optimizer_step(t)

    @torch.no_grad()
    def evaluate():
        for group, group_batches in groups:
            with loop._autocast():
                embeds, masks, _ = loop._fuse(group, group_batches)
                if backbone.kind == "causal":
                    backbone.generate_ids(embeds, masks, LABEL_TOKENS)
                elif backbone.fast_forward is not None:
                    backbone.fast_forward.generate(embeds, masks, TARGET_TOKENS)
                else:
                    backbone.model.generate(inputs_embeds=embeds, attention_mask=masks, max_new_tokens=TARGET_TOKENS, do_sample=False, num_beams=1)

    return train, evaluate
