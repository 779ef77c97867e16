"""Each prompt method: shapes, paper initialisations, parameter groups, parameter counts."""

import math

import pytest
import torch
from safetensors.torch import save_file

from superpos.errors import ConfigError
from superpos.methods import build_method, method_config
from superpos.methods.superpos import SuperPosConfig, SuperPosPrompt

PROMPT_METHODS = ["simple", "superpos", "residual", "attempt", "lowrank"]


def make(name, backbone, seed=0, **options):
    if name == "attempt":
        options.setdefault("source_prompts", "none")
    return build_method(name, method_config(name, options), backbone, torch.Generator().manual_seed(seed))


def inputs(backbone, batch=3, length=7):
    ids = torch.randint(0, backbone.vocab_size(), (batch, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, 4:] = 0
    return backbone.embed(ids), mask


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_prompt_shape_and_export(name, tiny_t5):
    method = make(name, tiny_t5, prompt_len=5)
    embeds, mask = inputs(tiny_t5)
    prompt = method(embeds, mask)
    assert prompt.shape == (3, 5, tiny_t5.hidden_size)
    exported = method.export()
    if method.input_dependent:
        assert "prompt" not in exported
    else:
        assert torch.allclose(exported["prompt"], prompt[0].detach())
        assert torch.allclose(prompt[0], prompt[2])  # input-independent
    assert method.num_trainable() == sum(p.numel() for g in method.param_groups() for p in g["params"])


@pytest.mark.parametrize("name", ["simple", "residual", "attempt"])
def test_prompt_rows_are_unique_real_token_embeddings(name, tiny_t5):
    method = make(name, tiny_t5, prompt_len=10)
    ids = method.token_ids
    assert len(set(ids.tolist())) == 10
    assert int(ids.max()) < tiny_t5.vocab_size() < tiny_t5.model.get_input_embeddings().weight.shape[0]
    rows = method.prompt if name != "attempt" else method.target
    assert torch.equal(rows.detach(), tiny_t5.vocab_embeddings()[ids].float())


def test_superpos_every_E_i_starts_as_the_same_sampled_embeddings(tiny_t5):
    method = make("superpos", tiny_t5, prompt_len=4, m=32)
    ids = method.token_ids
    assert len(set(ids.tolist())) == 32 and int(ids.max()) < tiny_t5.vocab_size()
    sampled = tiny_t5.vocab_embeddings()[ids].float().T  # (d, m)
    for i in range(4):
        assert torch.equal(method.E[i].detach(), sampled)
    # tuned separately: independent storage per prompt token
    assert method.E.data_ptr() != sampled.data_ptr()
    with torch.no_grad():
        method.E[0] += 1
    assert not torch.equal(method.E[0], method.E[1])


def test_superpos_weight_decay_only_on_p_prime(tiny_t5):
    method = make("superpos", tiny_t5, m=16, weight_decay=0.5)
    groups = {g["name"]: g for g in method.param_groups()}
    assert groups["E"]["params"] == [method.E] and groups["E"]["weight_decay"] == 0.0
    assert groups["p_prime"]["params"] == [method.p_prime] and groups["p_prime"]["weight_decay"] == 0.5
    # AdamW with these groups leaves E untouched by decay when its gradient is zero
    opt = torch.optim.AdamW(groups.values(), lr=0.1)
    before = method.E.detach().clone()
    method.p_prime.grad = torch.zeros_like(method.p_prime)
    method.E.grad = torch.zeros_like(method.E)
    opt.step()
    assert torch.equal(method.E.detach(), before)


def test_superpos_parameter_count_matches_the_paper_for_t5_base():
    """methods.md: T5-base, m = 128, n = 10 -> n*d*m + n*m = 984,320."""
    vocab = torch.randn(32100, 768)
    method = SuperPosPrompt(SuperPosConfig(m=128, prompt_len=10), vocab, torch.Generator().manual_seed(0))
    assert method.num_trainable() == 984_320


def test_superpos_prompt_is_superposition_and_softmax_variant(tiny_t5):
    plain = make("superpos", tiny_t5, m=8, prompt_len=3)
    expected = torch.stack([plain.E[i] @ plain.p_prime[i] for i in range(3)])
    assert torch.allclose(plain.prompt_matrix(), expected, atol=1e-6)
    soft = make("superpos", tiny_t5, m=8, prompt_len=3, softmax=True)
    expected = torch.stack([soft.E[i] @ torch.softmax(soft.p_prime[i], -1) for i in range(3)])
    assert torch.allclose(soft.prompt_matrix(), expected, atol=1e-6)


def test_superpos_default_init_gives_token_like_norms(tiny_t5):
    method = make("superpos", tiny_t5, m=128)
    token_norm = tiny_t5.vocab_embeddings()[method.token_ids].norm(dim=-1).mean()
    prompt_norm = method.prompt_matrix().detach().norm(dim=-1).mean()
    assert 0.5 < float(prompt_norm / token_norm) < 2.0
    one_hot = make("superpos", tiny_t5, m=16, p_init="one_hot")
    assert torch.allclose(one_hot.prompt_matrix()[0], tiny_t5.vocab_embeddings()[one_hot.token_ids[0]].float())


def test_superpos_m_bounds(tiny_t5):
    with pytest.raises(ConfigError, match="m must be >= 1"):
        make("superpos", tiny_t5, m=0)
    n = tiny_t5.vocab_size() - len(_special_ids(tiny_t5))  # special tokens are not drawn by default
    with pytest.raises(ConfigError, match=rf"exceeds the vocabulary.*allowed: 1\.\.{n}"):
        make("superpos", tiny_t5, m=tiny_t5.vocab_size() + 1)
    assert make("superpos", tiny_t5, m=1, prompt_len=2).E.shape == (2, tiny_t5.hidden_size, 1)


def test_residual_is_layernormed_mlp_plus_residual(tiny_t5):
    shared = make("residual", tiny_t5, bottleneck=16, prompt_len=4)
    assert len(shared.mlps) == 1
    mlp = shared.mlps[0]
    assert isinstance(mlp[1], torch.nn.ReLU) and isinstance(mlp[3], torch.nn.LayerNorm)
    assert mlp[0].out_features == 16
    assert torch.allclose(shared.prompt_matrix(), mlp(shared.prompt) + shared.prompt)
    per_token = make("residual", tiny_t5, bottleneck=16, prompt_len=4, shared_mlp=False)
    assert len(per_token.mlps) == 4


def test_attempt_mixes_frozen_source_prompts_per_example(tiny_t5, tmp_path):
    d = tiny_t5.hidden_size
    paths = []
    for k in range(2):
        path = tmp_path / f"source{k}.safetensors"
        save_file({"prompt": torch.randn(5, d, generator=torch.Generator().manual_seed(k))}, path)
        paths.append(str(path))
    method = make("attempt", tiny_t5, prompt_len=5, source_prompts=paths, bottleneck=8)
    assert method.temperature == pytest.approx(d * math.e)
    assert not method.sources.requires_grad and method.sources.shape == (2, 5, d)
    embeds, mask = inputs(tiny_t5)
    a = method.attention(embeds, mask)
    assert a.shape == (3, 3) and torch.allclose(a.sum(-1), torch.ones(3))
    prompt = method(embeds, mask)
    expected = torch.einsum("bk,knd->bnd", a, torch.cat([method.sources, method.target[None]])) + method.target
    assert torch.allclose(prompt, expected, atol=1e-6)
    assert not torch.allclose(prompt[0], prompt[1])  # per-example prompts
    with pytest.raises(ConfigError, match=r"shape \(5, \d+\), expected \(10"):
        make("attempt", tiny_t5, prompt_len=10, source_prompts=paths)
    with pytest.raises(ConfigError, match="does not exist"):
        make("attempt", tiny_t5, source_prompts=[str(tmp_path / "missing.safetensors")])


def test_lowrank_prompt_is_product_with_uniform_init(tiny_t5):
    method = make("lowrank", tiny_t5, rank=3, prompt_len=6)
    assert method.A.shape == (6, 3) and method.B.shape == (3, tiny_t5.hidden_size)
    assert float(method.A.abs().max()) <= 0.5 and float(method.B.abs().max()) <= 0.5
    assert torch.allclose(method.prompt_matrix(), method.A @ method.B)


def test_full_finetuning_trains_every_weight():
    from superpos.backbones import load_backbone

    backbone = load_backbone("tiny-t5")
    method = make("full", backbone)
    total = sum(p.numel() for p in backbone.model.parameters())
    assert method.num_trainable() == total
    assert method(torch.zeros(2, 3, backbone.hidden_size), torch.ones(2, 3)) is None


def test_paper_defaults_per_method():
    """SuperPos paper section 3.4 / methods.md section 1."""
    expected = {
        "simple": (0.01, 0.01), "superpos": (0.01, 1e-5), "residual": (0.3, 0.01),
        "attempt": (0.3, 1e-5), "lowrank": (0.3, 1e-5), "full": (1e-5, 0.0),
    }
    for name, (lr, wd) in expected.items():
        cfg = method_config(name, {"source_prompts": "none"} if name == "attempt" else {})
        assert (cfg.lr, cfg.weight_decay) == (lr, wd), name
    assert method_config("superpos", {}).m == 128 and method_config("superpos", {}).prompt_len == 10
    assert method_config("residual", {}).bottleneck == 128 and method_config("attempt", {"source_prompts": "none"}).bottleneck == 100


def test_unknown_method_option_names_allowed_ones():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) m .*allowed: init_from, lr, prompt_len, sample_special_tokens, weight_decay"):
        method_config("simple", {"m": 4})


def _special_ids(backbone):
    tok = backbone.tokenizer
    return {i for i in set(tok.all_special_ids) | set(tok.get_added_vocab().values()) if i < backbone.vocab_size()}


@pytest.mark.parametrize("name", ["simple", "superpos"])
def test_prompt_sampling_skips_special_and_added_tokens_unless_asked(name, tiny_t5):
    """Drawing every sampleable token: by default no pad/EOS/UNK/sentinel/added id is among them
    (token_ids stay real vocabulary ids); ``sample_special_tokens`` puts them back."""
    special = _special_ids(tiny_t5)
    assert special  # pad, eos, unk at least
    n = tiny_t5.vocab_size() - len(special)
    key = "m" if name == "superpos" else "prompt_len"
    method = make(name, tiny_t5, **{key: n}, **({"prompt_len": 1} if name == "superpos" else {}))
    ids = set(method.token_ids.tolist())
    assert len(ids) == n and not ids & special and max(ids) < tiny_t5.vocab_size()
    with pytest.raises(ConfigError, match="sampleable|special"):
        make(name, tiny_t5, **{key: n + 1}, **({"prompt_len": 1} if name == "superpos" else {}))
    everything = make(name, tiny_t5, sample_special_tokens=True, **{key: n + len(special)}, **({"prompt_len": 1} if name == "superpos" else {}))
    assert special <= set(everything.token_ids.tolist())


def test_attempt_without_source_prompts_is_refused_unless_none_is_written(tiny_t5):
    for empty in ([], None, "all"):
        with pytest.raises(ConfigError, match="ATTEMPT needs source prompts.*source_prompts: none"):
            method_config("attempt", {} if empty is None else {"source_prompts": empty})
    method = make("attempt", tiny_t5, source_prompts="none")
    assert method.sources.shape[0] == 0
