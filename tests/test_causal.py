"""Decoder-only backbones (causal.py): PEFT CAUSAL_LM parity, padding, families, dropout, bad input."""

import json

import pytest
import torch
from safetensors.torch import load_file

from superpos.backbones import CausalLMBackbone, build_tiny_llama, load_backbone, wordpiece_tokenizer
from superpos.backbones.base import TrialRows
from superpos.backbones.seq2seq import IGNORE
from superpos.config import TrainConfig
from superpos.data import collate, encode_split
from superpos.errors import ConfigError
from superpos.methods import build_method, method_config
from superpos.tasks import get_task

N = 5  # prompt tokens
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)


def family(name: str) -> CausalLMBackbone:
    """A tiny random model of each tested family, seeded, fp32, frozen, dropout off."""
    import transformers as tf

    if name == "tiny-llama" or name == "tiny-gpt2":
        return load_backbone(name, dropout=False).eval()
    tok = wordpiece_tokenizer("[CLS] $A", bos_token="[CLS]", eos_token="[SEP]", pad_token="[PAD]")
    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = {
        "qwen2": lambda: (tf.Qwen2Config(tie_word_embeddings=True, **ids, **SMALL), tf.Qwen2ForCausalLM),
        "mistral": lambda: (tf.MistralConfig(sliding_window=None, **ids, **SMALL), tf.MistralForCausalLM),
        "gemma": lambda: (tf.GemmaConfig(head_dim=16, **ids, **SMALL), tf.GemmaForCausalLM),
    }[name]
    cfg, cls = config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = cls(cfg)
    return CausalLMBackbone(model, tok, name, dropout=False).eval()


FAMILIES = ["tiny-llama", "qwen2", "mistral", "gemma", "tiny-gpt2"]


def examples(backbone, training: bool):
    """Three CB-formatted rows of different lengths, arranged as the data layer does."""
    task = get_task("cb")
    texts = ["cb hypothesis: it rains premise: the sky is grey and it rains", "cb hypothesis: no premise: yes", "cb hypothesis: a b c premise: d"]
    labels = [0, 1, 2]
    rows = []
    for text, label in zip(texts, labels):
        target = backbone.label_ids(task.target_text(label))
        rows.append(backbone.arrange(backbone.tokenizer(text)["input_ids"], target, training))
    return rows


def prompt_for(backbone, seed=0):
    vocab = backbone.vocab_embeddings()
    ids = torch.randperm(vocab.shape[0], generator=torch.Generator().manual_seed(seed))[:N]
    return vocab[ids].clone()


def prompted(backbone, prompt, rows):
    """A right-padded prompted batch as the Trainer builds it (train.py ``prompted``)."""
    width = max(len(r[0]) for r in rows)
    pad = backbone.tokenizer.pad_token_id
    ids = torch.tensor([r[0] + [pad] * (width - len(r[0])) for r in rows])
    mask = torch.tensor([[1] * len(r[0]) + [0] * (width - len(r[0])) for r in rows])
    targets = torch.tensor([r[1] + [IGNORE] * (width - len(r[1])) for r in rows])
    embeds = torch.cat([prompt.expand(len(rows), -1, -1), backbone.embed(ids)], dim=1)
    mask = torch.cat([torch.ones(len(rows), N, dtype=torch.long), mask], dim=1)
    return embeds, mask, targets


def generations(backbone, prompt, rows, max_new_tokens=6):
    embeds, mask, _ = prompted(backbone, prompt, rows)
    out = backbone.generate_ids(embeds, mask, max_new_tokens)
    return [[t for t in row if t != backbone.tokenizer.pad_token_id] for row in out.tolist()]


@pytest.mark.parametrize("name", ["tiny-llama", "gemma", "tiny-gpt2"])
def test_losses_and_generations_equal_peft_causal_lm_prompt_tuning(name, one_thread):
    """methods.md section 8: PEFT's prompts before every token (BOS included), mask extended,
    prompt labels -100; per example, unpadded, PEFT's loss is that example's mean over its
    label tokens. superpos's come from one right-padded batch. PEFT's greedy generation is
    run without the KV cache: with it, PEFT 0.21 under transformers 5.25 departs from its own
    forward after the first new token (seen on tiny-llama), while superpos's cached decoding
    equals PEFT's uncached one."""
    peft = pytest.importorskip("peft")
    backbone = family(name)
    prompt = prompt_for(backbone)
    train_rows = examples(backbone, training=True)
    embeds, mask, targets = prompted(backbone, prompt, train_rows)
    sums, counts = backbone.example_losses(embeds, mask, targets, [TrialRows(slice(None), None, N)])
    ours_gen = generations(backbone, prompt, examples(backbone, training=False))

    config = peft.PromptTuningConfig(task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=N)
    peft_model = peft.get_peft_model(backbone.model, config).eval()
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(prompt)
        for k, (ids, labels) in enumerate(train_rows):
            expected = peft_model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), labels=torch.tensor([labels])).loss
            torch.testing.assert_close(sums[k] / counts[k], expected, rtol=0, atol=1e-5)
            assert counts[k] == sum(label != IGNORE for label in labels)
        for k, (ids, _) in enumerate(examples(backbone, training=False)):
            out = peft_model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), max_new_tokens=6, use_cache=False,
                                      do_sample=False, num_beams=1, eos_token_id=backbone.stop_ids, pad_token_id=backbone.tokenizer.pad_token_id)
            assert [t for t in out[0, len(ids):].tolist() if t != backbone.tokenizer.pad_token_id] == ours_gen[k]


@pytest.mark.parametrize("name", FAMILIES)
def test_padded_batches_equal_each_example_alone(name, one_thread):
    """RoPE (Llama, Qwen2 tied, Mistral, Gemma) and absolute positions (GPT-2): a row's loss
    and its greedy generation in a right-padded batch equal the row's alone."""
    backbone = family(name)
    prompt = prompt_for(backbone)
    rows = examples(backbone, training=True)
    embeds, mask, targets = prompted(backbone, prompt, rows)
    sums, counts = backbone.example_losses(embeds, mask, targets, [TrialRows(slice(None), None, N)])
    eval_rows = examples(backbone, training=False)
    together = generations(backbone, prompt, eval_rows)
    for k, row in enumerate(rows):
        e, m, t = prompted(backbone, prompt, [row])
        s, c = backbone.example_losses(e, m, t)
        torch.testing.assert_close(sums[k] / counts[k], s[0] / c[0], rtol=0, atol=1e-5)
        assert generations(backbone, prompt, [eval_rows[k]]) == [together[k]]
    assert any(len(g) > 0 for g in together)


def test_gemma_prompts_are_on_the_scale_of_the_embedded_rows():
    """Gemma multiplies embedding rows by sqrt(d) inside its embedding module: the rows prompts
    are sampled from must be the embedded ones, not the raw table."""
    backbone = family("gemma")
    table = backbone.model.get_input_embeddings().weight
    rows = backbone.vocab_embeddings()
    torch.testing.assert_close(rows, table[: backbone.vocab_size()] * 64**0.5)
    method = build_method("simple", method_config("simple", {"prompt_len": N}), backbone, torch.Generator().manual_seed(0))
    torch.testing.assert_close(method.prompt_matrix(), backbone.embed(method.token_ids))


def test_real_vocabulary_and_pad_token():
    llama = load_backbone("tiny-llama")
    assert llama.model.get_input_embeddings().weight.shape[0] > llama.vocab_size() == len(llama.tokenizer)
    gpt2 = load_backbone("tiny-gpt2")
    assert gpt2.tokenizer.pad_token_id is not None and gpt2.model.config.tie_word_embeddings
    with pytest.raises(ConfigError, match="allowed: 1.."):
        build_method("superpos", method_config("superpos", {"m": llama.vocab_size() + 1}), llama, torch.Generator())


def test_training_and_evaluation_encodings(fixture_data_dir, tokenized_cache):
    """Training rows hold separator, label and EOS with only the label and EOS as targets;
    evaluation rows end at the separator (cached separately)."""
    from superpos.tasks.splits import load_splits

    backbone = load_backbone("tiny-llama")
    task = get_task("cb")
    exs = load_splits(task, "paper", str(fixture_data_dir)).train[:4]
    train = encode_split(backbone, task, exs, "t5", 256, training=True)
    evaluation = encode_split(backbone, task, exs, "t5", 256)
    eos, sep = backbone.tokenizer.eos_token_id, backbone.separator_ids
    for ex, ids, tgt, eval_ids in zip(exs, train.input_ids, train.targets, evaluation.input_ids):
        label = backbone.label_ids(task.target_text(ex.label))
        assert ids == eval_ids + label + [eos] and ids[0] == backbone.tokenizer.bos_token_id
        assert eval_ids[-len(sep):] == sep and tgt == [IGNORE] * len(eval_ids) + label + [eos]
    again = encode_split(backbone, task, exs, "t5", 256, training=True)
    assert again.from_cache and again.input_ids == train.input_ids and again.targets == train.targets


def test_rank_picks_the_candidate_with_the_lowest_training_loss(one_thread):
    backbone = family("tiny-llama")
    backbone.evaluation = "rank"
    task = get_task("cb")
    prompt = prompt_for(backbone)
    eval_rows = examples(backbone, training=False)
    embeds, mask, _ = prompted(backbone, prompt, eval_rows)
    ranked = backbone.predict(embeds, mask, task, "t5")
    for k, (ids, _) in enumerate(eval_rows):
        losses = []
        for label in range(3):
            row = backbone.arrange(ids[: -len(backbone.separator_ids)], backbone.label_ids(task.target_text(label)), True)
            e, m, t = prompted(backbone, prompt, [row])
            losses.append(backbone.example_losses(e, m, t)[0].item())
        assert ranked[k] == min(range(3), key=losses.__getitem__)


def test_dropout_switch_and_gradient_checkpointing(one_thread):
    """GPT-2 has dropout: on, two train-mode losses differ; off, they are equal. Llama's configs
    have none, which the backbone reports. Gradient checkpointing with dropout off checkpoints
    (the layers run in train mode) and changes no gradient."""
    def loss_and_grad(backbone):
        prompt = prompt_for(backbone).requires_grad_()
        e, m, t = prompted(backbone, prompt, examples(backbone, training=True))
        sums, counts = backbone.example_losses(e, m, t)
        loss = sums.sum() / counts.sum()
        loss.backward()
        return loss.detach(), prompt.grad

    on = load_backbone("tiny-gpt2", dropout=True).train()
    assert on.has_dropout and not torch.equal(loss_and_grad(on)[0], loss_and_grad(on)[0])
    off = load_backbone("tiny-gpt2", dropout=False).train()
    assert torch.equal(loss_and_grad(off)[0], loss_and_grad(off)[0])
    assert not load_backbone("tiny-llama").has_dropout

    plain = load_backbone("tiny-llama", dropout=False).train()
    checkpointed = load_backbone("tiny-llama", dropout=False, gradient_checkpointing=True).train()
    layers = checkpointed.model.model.layers
    assert layers[0].gradient_checkpointing and layers[0].training and not layers[0].self_attn.training
    loss, grad = loss_and_grad(plain)
    loss_c, grad_c = loss_and_grad(checkpointed)
    torch.testing.assert_close(loss_c, loss, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_c, grad, rtol=0, atol=1e-6)


def test_an_encoder_directory_is_refused_before_work(tmp_path):
    from superpos.backbones import minilm_path

    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text((minilm_path() / "config.json").read_text())
    with pytest.raises(ConfigError, match="'bert' model, an encoder without a decoder.*decoder-only causal LM"):
        TrainConfig(model=str(encoder), task="cb").validate()
    decoder = tmp_path / "decoder"
    model, tok = build_tiny_llama()
    model.save_pretrained(decoder)
    tok.save_pretrained(decoder)
    assert isinstance(load_backbone(str(decoder)), CausalLMBackbone)
    assert json.loads((decoder / "config.json").read_text())["model_type"] == "llama"


@pytest.mark.parametrize("model", [pytest.param("tiny-llama", marks=pytest.mark.slow), "tiny-gpt2"])
def test_fused_trials_equal_solo_runs(model, fixture_data_dir, tmp_path, one_thread):
    """Every prompt method fused (different prompt lengths, so rows are right-padded to one
    width) ends as it ends alone (fp32, CPU, 1e-5)."""
    from superpos.train import run, run_group

    def config(method, seed, **options):
        return TrainConfig(task="cb", model=model, method=method, data_dir=str(fixture_data_dir), epochs=2, dropout=False, batch_size=4,
                           eval_batch_size=8, max_train_examples=8, max_eval_examples=6, seed=seed, device="cpu", method_options=options)

    configs = [config("superpos", 0, m=8), config("simple", 1, prompt_len=3), config("residual", 2, bottleneck=4), config("lowrank", 3, rank=2)]
    run_group(configs, [tmp_path / f"fused{k}" for k in range(len(configs))], progress=False)
    for k, c in enumerate(configs):
        run(c, tmp_path / f"solo{k}", progress=False)
        fused = [json.loads(line) for line in (tmp_path / f"fused{k}" / "metrics.jsonl").read_text().splitlines()]
        solo = [json.loads(line) for line in (tmp_path / f"solo{k}" / "metrics.jsonl").read_text().splitlines()]
        assert len(fused) == len(solo) == 2
        torch.testing.assert_close(load_file(tmp_path / f"fused{k}" / "prompt.safetensors")["prompt"],
                                   load_file(tmp_path / f"solo{k}" / "prompt.safetensors")["prompt"], rtol=0, atol=1e-5)
        for a, b in zip(fused, solo):
            assert a["score"] == b["score"] and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5, abs=1e-6), c.method
