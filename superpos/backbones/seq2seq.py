"""Encoder-decoder LMs (T5): teacher-forced training, greedy generation of the label text.

Classification is conditional generation (methods.md section 2): the target is the label
text, and a generated string that is no label is invalid.

``fast_forward`` (default ``None``: Hugging Face's forward and ``generate``) may hold a
``superpos.backbones.fast_t5.FastT5`` over the same model: then training losses and greedy
generation run through that functional T5 forward instead (same results; faster on CUDA).
``load_backbone(..., fast=True)`` sets it; it is opt-in, off by default on every device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from superpos.backbones.base import Backbone

IGNORE = -100


def loss_sums(logits, targets):
    """Per-example sums of token cross-entropies (fp32) and token counts; IGNORE marks padding."""
    token_losses = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
    return token_losses.sum(1), (targets != IGNORE).sum(1)


class Seq2SeqBackbone(Backbone):
    kind = "seq2seq"
    #: a FastT5 over ``self.model``, or None for Hugging Face's forward (see the module docstring)
    fast_forward = None

    def encode_target(self, task, example, template):
        return self.tokenizer(task.target_text(example.label, template))["input_ids"]

    def max_target_tokens(self, task, template: str) -> int:
        """Longest label in tokens, the generation budget (regression: a number like "3.4")."""
        texts = task.label_texts(template) if not task.regression else ["5.0", "0.0", "2.4"]
        return max(len(self.tokenizer(t)["input_ids"]) for t in texts)

    def example_losses(self, inputs_embeds, attention_mask, targets, groups=None):
        """Per-example sums of token cross-entropies and token counts."""
        if self.fast_forward is not None:
            return self.fast_forward.example_losses(inputs_embeds, attention_mask, targets)
        decoder_input_ids = self.model.prepare_decoder_input_ids_from_labels(labels=targets)
        logits = self.model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids
        ).logits
        return loss_sums(logits, targets)

    @torch.no_grad()
    def predict(self, inputs_embeds, attention_mask, task, template, groups=None):
        max_new_tokens = self.max_target_tokens(task, template)
        if self.fast_forward is not None:
            out = self.fast_forward.generate(inputs_embeds, attention_mask, max_new_tokens)
        else:
            out = self.model.generate(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
            )
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [task.parse(t, template) for t in texts]
