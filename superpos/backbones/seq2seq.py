"""Encoder-decoder LMs (T5): teacher-forced training; evaluation by greedy generation or by rank.

Classification is conditional generation (methods.md section 2): the target is the label
text, and a generated string that is no label is invalid. ``evaluation`` chooses how
predictions are made:

* ``generate`` (default; the paper's protocol, methods.md section 5): batched greedy decoding
  of at most as many tokens as the task's longest target, parsed back to a label;
* ``rank`` (rank classification; NOT the paper's protocol, so its scores are not comparable to
  Table 1): every candidate target text (``Task.candidate_texts``: the labels, or STS-B's 0.2
  grid) is scored by its summed token log-likelihood, EOS included, not length-normalised,
  and the best one is the prediction. It is never invalid, and reads the encoder once.

``fast_forward`` (default ``None``: Hugging Face's forward and ``generate``) may hold a
``superpos.backbones.fast_t5.FastT5`` over the same model: then training losses, generation
and ranking run through that functional T5 forward instead (same results; faster on CUDA).
``load_backbone(..., fast=True)`` sets it (config key ``forward: fast``); off by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from superpos.backbones.base import Backbone

IGNORE = -100
EVALUATIONS = ("generate", "rank")


def loss_sums(logits, targets):
    """Per-example sums of token cross-entropies (fp32) and token counts; IGNORE marks padding.

    Logits are flattened to (B*T, V) rather than transposed to (B, V, T): a log-softmax over
    a strided vocabulary axis costs a copy of the logits each way (most of a tiny model's step).
    """
    token_losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none")
    return token_losses.view(targets.shape).sum(1), (targets != IGNORE).sum(1)


class Seq2SeqBackbone(Backbone):
    kind = "seq2seq"
    #: a FastT5 over ``self.model``, or None for Hugging Face's forward (see the module docstring)
    fast_forward = None

    def __init__(self, model, tokenizer, name: str, dropout: bool = True, evaluation: str = "generate"):
        super().__init__(model, tokenizer, name, dropout)
        self.evaluation = evaluation

    def encode_target(self, task, example, template):
        return self.tokenizer(task.target_text(example.label, template))["input_ids"]

    def max_target_tokens(self, task, template: str) -> int:
        """Longest target in tokens: the generation budget."""
        return max(len(self.tokenizer(t)["input_ids"]) for t in task.candidate_texts(template))

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
        if self.evaluation == "rank":
            return self.rank(inputs_embeds, attention_mask, task, template)
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

    @torch.no_grad()
    def rank(self, inputs_embeds, attention_mask, task, template):
        """Rank classification: the candidate target text with the highest log-likelihood, parsed."""
        texts = task.candidate_texts(template)
        if self.fast_forward is not None:
            memory = self.fast_forward.encode(inputs_embeds, attention_mask)

            def logits(decoder_input_ids):
                return self.fast_forward.logits(decoder_input_ids, memory, attention_mask)
        else:
            memory = self.model.get_encoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask)

            def logits(decoder_input_ids):
                return self.model(encoder_outputs=memory, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits

        losses = []
        for text in texts:
            ids = torch.tensor(self.tokenizer(text)["input_ids"], device=inputs_embeds.device)
            targets = ids.expand(inputs_embeds.shape[0], -1)
            losses.append(loss_sums(logits(self.model.prepare_decoder_input_ids_from_labels(labels=targets)), targets)[0])
        best = torch.stack(losses, dim=1).argmin(dim=1).tolist()
        return [task.parse(texts[i], template) for i in best]
