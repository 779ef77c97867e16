"""A faster frozen T5: a functional forward over Hugging Face's own parameters (no copy of weights).

It computes what transformers' ``T5ForConditionalGeneration`` computes (modeling_t5.py), as a
few plain functions, so that the hot path is short and each block can go through
``torch.compile`` as one graph (HF's step spends about half of the GPU time in unfused
elementwise ops and runs attention with a position bias on SDPA's math path,
../shared/bench/ANCHORS.md). The definitions, as in T5 v1.1 (Raffel et al. 2020; the v1.1
checkpoints' notes):

* ``T5LayerNorm`` is an RMSNorm: scale only, no mean subtraction, no bias; the variance is
  taken in fp32 and the result cast back to the weight's dtype;
* the v1.1 feed-forward is gated: ``(act(x W_i0) * x W_i1) W_o`` with act = GELU in its tanh
  form (HF's ``gelu_new``); the original T5 (``t5-base``) has an ungated ReLU one; the
  activation is HF's own (``ACT2FN[config.dense_act_fn]``), so fp32 results are HF's bit for
  bit on CPU, and under ``torch.compile`` it fuses like any elementwise op;
* attention has no bias terms and no 1/sqrt(d_kv) scaling (folded into the initialisation;
  HF's ``self.scaling = 1.0``), and a learned relative position bias over log-spaced buckets,
  computed by block 0 of each stack and shared by all its layers (HF's ``compute_bias`` is
  called as is). Bias and padding mask go to ``scaled_dot_product_attention`` as one float
  additive mask, which SDPA's memory-efficient kernel accepts on CUDA;
* the decoder's self-attention is causal and unidirectional-bucketed; its cross-attention
  has no position bias and sees the encoder's padding mask; the LM head is untied in v1.1
  (original T5 ties it and scales the decoder output by d_model^-0.5, ``scale_decoder_outputs``).

Dropout sits where HF puts it (embeddings, attention probabilities, residual branches, inside
the FFN, after the final norms) and is active only while the wrapped model is in train mode,
so the Backbone's dropout switch works unchanged; its random masks are not HF's draws.

Under autocast or with bf16 weights (the Trainer casts frozen weights to bf16 on CUDA) the
matmuls run in bf16 and the norms accumulate in fp32, as in HF. With ``compile=True`` each
encoder and decoder block is one ``torch.compile``d function whose weights are arguments, so
one graph serves every layer and the norms, activations and residual adds fuse around the
matmuls. Training losses go through ``LinearCrossEntropy``, which never materialises the
(tokens x vocabulary) logits, and generation puts only the newest position through the LM
head. Tests: tests/test_fast_t5.py (fp32 on CPU, equal to HF within 1e-5; the compiled
blocks, built by Inductor's CPU backend there, equal to the eager ones).
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

from superpos.backbones.seq2seq import IGNORE


def rms_norm(x, weight, eps):
    """T5LayerNorm: x / rms(x) * weight, the mean square in fp32, no mean subtraction, no bias."""
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps)).to(weight.dtype)


def attention(x, kv, q_w, k_w, v_w, o_w, heads, mask, p):
    """Multi-head attention without 1/sqrt(d) scaling; ``mask`` is additive (position bias + padding)."""
    B, L, _ = x.shape

    def split(t):  # (B, S, heads * d_kv) -> (B, heads, S, d_kv)
        return t.view(B, t.shape[1], heads, -1).transpose(1, 2)

    q, k, v = split(F.linear(x, q_w)), split(F.linear(kv, k_w)), split(F.linear(kv, v_w))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=1.0)
    return F.linear(out.transpose(1, 2).reshape(B, L, -1), o_w)


def feed_forward(x, wi0, wi1, wo, act, p):
    """Gated (v1.1: act(x W_i0) * x W_i1) or plain (original T5: act(x W_i)) FFN, then W_o."""
    h = act(F.linear(x, wi0))
    if wi1 is not None:
        h = h * F.linear(x, wi1)
    return F.linear(F.dropout(h, p), wo)


# F.dropout with p = 0 returns its input and draws no random numbers: p is the model's
# dropout rate in train mode and 0 in eval mode.
def encoder_block(x, mask, ln_attn, q, k, v, o, ln_ff, wi0, wi1, wo, *, heads, eps, act, p):
    h = rms_norm(x, ln_attn, eps)
    x = x + F.dropout(attention(h, h, q, k, v, o, heads, mask, p), p)
    return x + F.dropout(feed_forward(rms_norm(x, ln_ff, eps), wi0, wi1, wo, act, p), p)


def decoder_block(y, self_mask, memory, cross_mask, ln_self, q, k, v, o, ln_cross, cq, ck, cv, co, ln_ff, wi0, wi1, wo, *, heads, eps, act, p):
    h = rms_norm(y, ln_self, eps)
    y = y + F.dropout(attention(h, h, q, k, v, o, heads, self_mask, p), p)
    y = y + F.dropout(attention(rms_norm(y, ln_cross, eps), memory, cq, ck, cv, co, heads, cross_mask, p), p)
    return y + F.dropout(feed_forward(rms_norm(y, ln_ff, eps), wi0, wi1, wo, act, p), p)


@cache
def activation(name):
    """HF's activation module for a config name, one instance per name (compiled blocks guard on its identity)."""
    return ACT2FN[name]


def attention_weights(a):
    return a.q.weight, a.k.weight, a.v.weight, a.o.weight


def ff_weights(layer):
    ff = layer.DenseReluDense
    if hasattr(ff, "wi_0"):
        return ff.wi_0.weight, ff.wi_1.weight, ff.wo.weight
    return ff.wi.weight, None, ff.wo.weight


def aligned_mask(mask_fn, width, device):
    """On CUDA ``mask_fn(padded)[..., :width]`` with rows padded to a multiple of 8; else ``mask_fn(width)``.

    SDPA's memory-efficient CUDA kernel needs 16-byte aligned mask rows: an unaligned mask
    (width 138, say) would be padded by a copy in every layer, forward and backward. CPU
    kernels want a contiguous mask instead. Either way the mask is made contiguous here, once
    a forward: ``compute_bias`` returns a permuted view, and the sum with the padding mask
    keeps its strides, which SDPA would copy in every layer, forward and backward.
    """
    if device.type != "cuda":
        return mask_fn(width).contiguous()
    return mask_fn(width + (-width % 8)).contiguous()[..., :width]


def padding_mask(attention_mask, dtype):
    """(B, S) 1/0 -> (B, 1, 1, S) additive: 0 where attended, the dtype's minimum where padded."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def compute_dtype(x):
    """The dtype activations have inside the matmuls: autocast's, else the input's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class LinearCrossEntropy(torch.autograd.Function):
    """Token cross-entropies of ``hidden @ weight.T`` (a frozen LM head) without keeping the logits.

    The (N, V) logits of a fused group are the largest tensors of a step (K = 16 trials x 32
    x 4 targets x 32k vocabulary: 260 MB in fp32), and every pass over them is memory-bound.
    So rows are taken a chunk at a time: logits, log-sum-exp, the token loss and the gradient
    w.r.t. ``hidden``, ``(softmax - onehot) @ weight``, all in the forward; the backward only
    scales that stored (N, d) gradient by each token's incoming gradient. The head is frozen,
    so no gradient w.r.t. ``weight`` is formed. Logits and their softmax are fp32, as in
    ``loss_sums``; IGNORE targets get loss 0 and gradient 0 (Liger-Kernel's fused linear
    cross-entropy does the same on GPU).
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_elements):
        n, vocab = hidden.shape[0], weight.shape[0]
        rows = max(1, chunk_elements // vocab)
        losses = torch.empty(n, dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        for start in range(0, n, rows):
            part = slice(start, start + rows)
            logits = F.linear(hidden[part], weight).float()
            tgt = targets[part]
            valid = tgt != IGNORE
            index = tgt.clamp(min=0)[:, None]
            lse = torch.logsumexp(logits, dim=-1)
            losses[part] = (lse - logits.gather(1, index)[:, 0]) * valid
            if grad is not None:
                probs = logits.sub_(lse[:, None]).exp_()
                probs.scatter_add_(1, index, -valid[:, None].to(probs.dtype))
                probs.mul_(valid[:, None])
                grad[part] = (probs.to(weight.dtype) @ weight).to(grad.dtype)
        ctx.save_for_backward(grad)
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        (grad,) = ctx.saved_tensors
        return grad * grad_losses[:, None].to(grad.dtype), None, None, None


#: logits computed at once by LinearCrossEntropy: 4 MB of fp32, a cache-sized chunk on CPU;
#: on CUDA large enough (256 MB) that a chunk is one efficient matmul
CHUNK_ELEMENTS = {"cpu": 2**20, "cuda": 2**26}


class FastT5:
    """The functional forward of one ``T5ForConditionalGeneration`` (holds a reference, no weights)."""

    def __init__(self, model, compile: bool = False):
        self.model = model
        self.act = activation(model.config.dense_act_fn)
        self.encoder_block, self.decoder_block = encoder_block, decoder_block
        if compile:
            # one graph per block kind serves every layer and both model sizes; shapes vary with
            # the batch (padding to the longest input, K trials, generation steps), so compile
            # dynamic graphs and allow the few recompiles that grad/no-grad and train/eval need
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            self.encoder_block = torch.compile(encoder_block, dynamic=True)
            self.decoder_block = torch.compile(decoder_block, dynamic=True)

    def _kwargs(self):
        cfg = self.model.config
        return dict(heads=cfg.num_heads, eps=cfg.layer_norm_epsilon, act=self.act, p=cfg.dropout_rate if self.model.training else 0.0)

    def encode(self, inputs_embeds, attention_mask):
        """Encoder states (B, L, d) of prompted input embeddings under their padding mask."""
        enc, kw = self.model.encoder, self._kwargs()
        x, L = inputs_embeds, inputs_embeds.shape[1]
        dtype = compute_dtype(x)
        rel = enc.block[0].layer[0].SelfAttention
        # position bias (1, H, L, L) + padding (B, 1, 1, L): one (B, H, L, L) additive mask for all layers
        mask = aligned_mask(lambda w: rel.compute_bias(L, w, x.device).to(dtype) + padding_mask(pad_to(attention_mask, w), dtype), L, x.device)
        x = F.dropout(x, kw["p"])
        for blk in enc.block:
            sa, ff = blk.layer[0], blk.layer[1]
            x = self.encoder_block(x, mask, sa.layer_norm.weight, *attention_weights(sa.SelfAttention), ff.layer_norm.weight, *ff_weights(ff), **kw)
        return F.dropout(rms_norm(x, enc.final_layer_norm.weight, enc.final_layer_norm.variance_epsilon), kw["p"])

    def decode(self, decoder_input_ids, memory, attention_mask):
        """Decoder output states (B, T, d) for decoder inputs over encoder states ``memory``, as the LM head takes them."""
        dec, kw, cfg = self.model.decoder, self._kwargs(), self.model.config
        y = dec.embed_tokens(decoder_input_ids)
        T, dtype = y.shape[1], compute_dtype(memory)
        rel = dec.block[0].layer[0].SelfAttention
        causal = torch.full((T, T), torch.finfo(dtype).min, device=y.device, dtype=dtype).triu(1)
        self_mask = rel.compute_bias(T, T, y.device).to(dtype) + causal  # (1, H, T, T), one for the whole batch
        cross_mask = aligned_mask(lambda w: padding_mask(pad_to(attention_mask, w), dtype), attention_mask.shape[1], y.device)
        y = F.dropout(y, kw["p"])
        for blk in dec.block:
            sa, ca, ff = blk.layer
            y = self.decoder_block(
                y, self_mask, memory, cross_mask,
                sa.layer_norm.weight, *attention_weights(sa.SelfAttention),
                ca.layer_norm.weight, *attention_weights(ca.EncDecAttention),
                ff.layer_norm.weight, *ff_weights(ff), **kw,
            )  # fmt: skip
        y = F.dropout(rms_norm(y, dec.final_layer_norm.weight, dec.final_layer_norm.variance_epsilon), kw["p"])
        # original T5 scales before its tied head; v1.1 (untied) does not (older transformers: no such key)
        if getattr(cfg, "scale_decoder_outputs", cfg.tie_word_embeddings):
            y = y * cfg.d_model**-0.5
        return y

    def logits(self, decoder_input_ids, memory, attention_mask):
        """LM logits (B, T, vocab) for decoder inputs over encoder states ``memory``."""
        return F.linear(self.decode(decoder_input_ids, memory, attention_mask), self.model.lm_head.weight)

    def __call__(self, inputs_embeds, attention_mask, decoder_input_ids):
        """Logits, as ``model(inputs_embeds=..., attention_mask=..., decoder_input_ids=...).logits``."""
        return self.logits(decoder_input_ids, self.encode(inputs_embeds, attention_mask), attention_mask)

    def example_losses(self, inputs_embeds, attention_mask, targets, groups=None):
        """Per-example token-loss sums and counts: ``Seq2SeqBackbone.example_losses``' contract (via LinearCrossEntropy)."""
        decoder_input_ids = self.model.prepare_decoder_input_ids_from_labels(labels=targets)
        states = self.decode(decoder_input_ids, self.encode(inputs_embeds, attention_mask), attention_mask)
        chunk = CHUNK_ELEMENTS.get(states.device.type, CHUNK_ELEMENTS["cuda"])
        losses = LinearCrossEntropy.apply(states.flatten(0, 1), self.model.lm_head.weight, targets.flatten(), chunk)
        return losses.view(targets.shape).sum(1), (targets != IGNORE).sum(1)

    @torch.no_grad()
    def generate(self, inputs_embeds, attention_mask, max_new_tokens):
        """Batched greedy decoding, as HF's ``generate(do_sample=False, num_beams=1)``.

        Returns (B, 1 + n) ids that start with the decoder start token; a row that produced EOS
        gets PAD afterwards; stops when every row is done. The encoder runs once; the decoder
        reruns over the prefix each step (labels are a few tokens, so no cache is needed).
        """
        cfg = self.model.config
        memory = self.encode(inputs_embeds, attention_mask)
        ids = torch.full((memory.shape[0], 1), cfg.decoder_start_token_id, dtype=torch.long, device=memory.device)
        done = torch.zeros(memory.shape[0], dtype=torch.bool, device=memory.device)
        for _ in range(max_new_tokens):
            last = self.decode(ids, memory, attention_mask)[:, -1]  # only the newest position goes through the LM head
            token = F.linear(last, self.model.lm_head.weight).argmax(-1).masked_fill(done, cfg.pad_token_id)
            ids = torch.cat([ids, token[:, None]], dim=1)
            done |= token == cfg.eos_token_id
            if done.all():
                break
        return ids


def pad_to(attention_mask, width):
    """Right-pad a (B, S) mask with zeros to ``width`` columns."""
    return F.pad(attention_mask, (0, width - attention_mask.shape[1]))
