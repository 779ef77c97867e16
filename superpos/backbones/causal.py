"""Decoder-only LMs (Llama, Qwen2, Mistral, Gemma, GPT-2, ...): prompt tuning as PEFT's CAUSAL_LM does it.

Prompt placement (methods.md section 8, PEFT 0.21 ``PeftModelForCausalLM``): the n prompt
vectors come before every input token, BOS included, and the attention mask is extended by n.
The prompt takes positions 0..n-1 and the example's tokens n, n+1, ...: positions are computed
per row from the attention mask, so a padded row sees exactly the positions it sees alone
(PEFT's callers get the same from unpadded rows; on left-padded rows PEFT's default positions
would count the padding, superpos's do not).

Sequences (``arrange``): an example is its formatted input (the tokenizer's own special
tokens, e.g. Llama's BOS), then ``SEPARATOR``, then, for training only, the label text and
EOS. The loss is each example's mean token cross-entropy over the label text and EOS
(input, separator and padding ignored), the causal counterpart of T5's target loss.

Padding: the Trainer right-pads prompted batches (and fused groups to one width). A decoder
must generate from each row's last real token, so every forward here first packs each row's
real positions to the right (``left_pack``: a stable sort of the mask, the row order of its
tokens unchanged); the labels are then the last columns of every row, so the LM head runs on
those columns only (``logits_to_keep``), never on the (tokens x vocabulary) logits of the
whole input.

Evaluation:

* ``generate`` (default): batched greedy decoding with the KV cache (Hugging Face's
  ``generate`` on the left-packed rows; positions from the mask), at most as many new tokens
  as the task's longest label, stopping at EOS or at any token that holds a newline; the text
  before the first newline is parsed by the task's parser (anything else is invalid);
* ``rank``: every candidate label text (+ EOS) scored by its summed log-likelihood after the
  separator, as seq2seq.py does for T5 (one forward of the prompted input per candidate).

Gradient checkpointing (``gradient_checkpointing=True``; prompt tuning back-propagates through
the whole frozen model, so activations dominate memory on large models): Hugging Face
checkpoints a layer only while it is in train mode, so with dropout off only the layer
wrappers are put in train mode, never the modules inside them that hold dropout.
"""

from __future__ import annotations

from functools import cached_property

import torch
from transformers import GenerationConfig
from transformers.modeling_layers import GradientCheckpointingLayer

from superpos.backbones.base import Backbone, TrialRows
from superpos.backbones.seq2seq import IGNORE, loss_sums

#: between the formatted input and the label text (PEFT's causal-LM prompt-tuning example
#: formats ``"<text> Label : <label>"``)
SEPARATOR = " Label :"


def left_pack(mask: torch.Tensor, *tensors: torch.Tensor):
    """Move each row's unmasked positions to the right end, in order (padding to the left)."""
    order = torch.sort(mask, dim=1, stable=True).indices
    packed = [mask.gather(1, order)]
    for t in tensors:
        index = order.view(*order.shape, *([1] * (t.dim() - 2))).expand(*order.shape, *t.shape[2:])
        packed.append(t.gather(1, index))
    return packed


def mask_positions(mask: torch.Tensor) -> torch.Tensor:
    """Per-row positions counted over unmasked tokens only (padding gets 0; it is never attended)."""
    return (mask.long().cumsum(1) - 1).clamp(min=0)


class CausalLMBackbone(Backbone):
    kind = "causal"

    def __init__(self, model, tokenizer, name: str, dropout: bool = True, evaluation: str = "generate", gradient_checkpointing: bool = False):
        if tokenizer.pad_token_id is None:  # Llama, Qwen, GPT-2 ship none; padding is always masked
            tokenizer.pad_token = tokenizer.eos_token
        super().__init__(model, tokenizer, name, dropout)
        self.evaluation = evaluation
        self.separator_ids = tokenizer(SEPARATOR, add_special_tokens=False)["input_ids"]
        # greedy decoding is the protocol: a checkpoint's own sampling or penalty defaults
        # (generation_config.json, e.g. Llama-3.2's temperature and top_p) must not apply
        model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        self.gradient_checkpointing = gradient_checkpointing
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def train(self, mode: bool = True):
        super().train(mode)
        if self.gradient_checkpointing and not self.dropout:
            for m in self.model.modules():
                if isinstance(m, GradientCheckpointingLayer):
                    m.training = mode  # this module only: its dropouts stay in eval mode
        return self

    # -- sequences ------------------------------------------------------------------------
    def label_ids(self, text: str) -> list[int]:
        return self.tokenizer(" " + text, add_special_tokens=False)["input_ids"]

    def encode_target(self, task, example, template):
        return self.label_ids(task.target_text(example.label, template))

    def arrange(self, input_ids: list[int], target: list, training: bool) -> tuple[list[int], list]:
        """Training: input + separator + label + EOS, targets IGNORE except the label and EOS.
        Evaluation: input + separator; the model generates the rest."""
        prefix = list(input_ids) + self.separator_ids
        if not training:
            return prefix, list(target)
        answer = list(target) + [self.tokenizer.eos_token_id]
        return prefix + answer, [IGNORE] * len(prefix) + answer

    def encoding_key(self, training: bool) -> str:
        return f"{self.kind}:{'train' if training else 'eval'}:{SEPARATOR}"

    def max_target_tokens(self, task, template: str) -> int:
        return max(len(self.label_ids(t)) for t in task.candidate_texts(template))

    @cached_property
    def stop_ids(self) -> list[int]:
        """EOS and every token whose text holds a newline (greedy decoding stops at either)."""
        texts = self.tokenizer.batch_decode([[i] for i in range(self.vocab_size())])
        return [self.tokenizer.eos_token_id, *(i for i, t in enumerate(texts) if "\n" in t)]

    # -- forward ----------------------------------------------------------------------------
    def _last_logits(self, embeds, mask, keep: int):
        """Logits of the last ``keep`` positions of left-packed rows (positions from the mask)."""
        out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=mask_positions(mask), use_cache=False, logits_to_keep=keep)
        return out.logits[:, -keep:]

    def example_losses(self, inputs_embeds, attention_mask, targets, groups=None):
        """Per-example sums of the label tokens' cross-entropies and their counts.

        ``targets`` are aligned with each row's input ids, which start after its trial's
        ``prompt_len`` prompt positions (``TrialRows``; without groups, one unfused batch)."""
        batch, width = attention_mask.shape
        labels = targets.new_full((batch, width), IGNORE)
        for g in groups or [TrialRows(slice(None), prompt_len=width - targets.shape[1])]:
            n = min(targets.shape[1], width - g.prompt_len)
            labels[g.rows, g.prompt_len : g.prompt_len + n] = targets[g.rows, :n]
        mask, embeds, labels = left_pack(attention_mask, inputs_embeds, labels)
        has = labels != IGNORE
        first = torch.where(has.any(1), has.int().argmax(1), width).min().item()
        keep = min(width, width - first + 1)
        logits = self._last_logits(embeds, mask, keep)
        return loss_sums(logits[:, :-1], labels[:, width - keep + 1 :])

    @torch.no_grad()
    def generate_ids(self, inputs_embeds, attention_mask, max_new_tokens: int) -> torch.Tensor:
        """Greedy continuations (new tokens only; rows that stopped early end in padding)."""
        mask, embeds = left_pack(attention_mask, inputs_embeds)
        return self.model.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
        )

    @torch.no_grad()
    def predict(self, inputs_embeds, attention_mask, task, template, groups=None):
        if self.evaluation == "rank":
            return self.rank(inputs_embeds, attention_mask, task, template)
        out = self.generate_ids(inputs_embeds, attention_mask, self.max_target_tokens(task, template))
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [task.parse(t.split("\n")[0], template) for t in texts]

    @torch.no_grad()
    def rank(self, inputs_embeds, attention_mask, task, template):
        """Rank classification: the candidate label text (+ EOS) with the highest log-likelihood."""
        mask, embeds = left_pack(attention_mask, inputs_embeds)
        texts = task.candidate_texts(template)
        losses = []
        for text in texts:
            ids = torch.tensor(self.label_ids(text) + [self.tokenizer.eos_token_id], device=embeds.device).expand(embeds.shape[0], -1)
            full = torch.cat([embeds, self.embed(ids).to(embeds.dtype)], dim=1)
            full_mask = torch.cat([mask, mask.new_ones(ids.shape)], dim=1)
            logits = self._last_logits(full, full_mask, ids.shape[1] + 1)
            losses.append(loss_sums(logits[:, :-1], ids)[0])
        best = torch.stack(losses, dim=1).argmin(dim=1).tolist()
        return [task.parse(texts[i], template) for i in best]
