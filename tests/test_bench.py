"""`superpos bench` runs end to end on CPU (a smoke test: no timing is asserted).

The workload is shrunk (batch 2 a trial, 8 input tokens) to keep the tests fast; the code
paths are those of the real workload.
"""

import json
import sys
import time

import pytest

from superpos.bench import summary, throughput, workload
from superpos.cli import main


@pytest.fixture(autouse=True)
def small_workload(monkeypatch):
    monkeypatch.setattr(workload, "BATCH", 2)
    monkeypatch.setattr(workload, "INPUT_TOKENS", 8)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def test_cpu_bench_prints_the_table_and_the_summary(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--device", "cpu", "--steps", "1", "--warmup", "0", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("SUMMARY tiny: fused K=4 / 4 sequential ")
    result = json.loads(out.read_text())
    assert result["summary"] == lines[-1]
    rows = {(r["variant"], r["K"]): r for r in result["rows"]}
    assert set(rows) == {("peft", 1), ("hf", 1), ("hf", 4), ("hf-seq", 4), ("fast", 1), ("fast", 4), ("fast-seq", 4)}
    for r in rows.values():
        assert "error" not in r and r["examples_per_s"] > 0 and r["tflops"] > 0
    assert rows[("hf", 4)]["eval_examples_per_s"] > 0
    assert result["ratios"]["tiny"]["fused4_vs_sequential4"] > 0


def test_runs_without_peft(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "peft", None)  # as if not installed
    result = throughput.run("cpu", steps=1, warmup=0)
    assert not any(r["variant"] == "peft" for r in result["rows"])
    assert result["notes"] == ["peft is not installed: no PEFT baseline row"]
    assert "superpos K=1 / PEFT n/a" in capsys.readouterr().out.strip().splitlines()[-1]


def test_table1_projection_counts_the_grid():
    # 80 epochs x (7 configs x all 13 tasks + ATTEMPT's 2 x its 9 tasks)
    assert summary.table1_examples() == 80 * (7 * 991_846 + 2 * 63_206)


def test_gpu_branch_runs_end_to_end_with_cuda_faked(cuda_faked, capsys):
    """The CUDA code path (K = 1, 8, 16 and doubling, bf16 weights, the fast-vs-HF check, the
    table1 projection) run on CPU with CUDA's bookkeeping faked and torch.compile left out, so
    that a lent GPU's minutes are not spent finding a bug in the bench itself."""
    result = throughput.run("cpu", sizes="small,base", steps=1, warmup=0)
    rows = {(r["size"], r["variant"], r["K"]) for r in result["rows"] if "error" not in r}
    for size in ("small", "base"):
        assert {(size, "peft", 1), (size, "hf", 16), (size, "fast", 16), (size, "fast", 256)} <= rows
        assert result["checks"][size]["bf16_max_rel_loss_diff_fast_vs_hf"] < 0.05
    hours = result["ratios"]["table1_h100_hours"]
    best = {s: result["ratios"][s]["examples_per_s"] for s in ("small", "base")}
    assert hours["per_size"]["base"] == pytest.approx(summary.table1_examples() / best["base"] / 3600)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("SUMMARY small: ")


def test_no_row_starts_past_the_deadline(cuda_faked):
    result = throughput.run("cpu", sizes="small,base", steps=1, warmup=0, deadline=time.monotonic())
    assert result["rows"] == [] and result["notes"] == ["small: not measured, past the deadline", "base: not measured, past the deadline"]


@pytest.mark.parametrize("cuda", [pytest.param(False, marks=pytest.mark.slow), True], ids=["cpu", "cuda-faked"])
def test_decoder_rows(request, monkeypatch, capsys, cuda):
    """Decoder rows: PEFT CAUSAL_LM and SuperPos K = 1, 4, 8 (on CUDA, faked as above, the
    Llama-3.2-1B size, shrunk here, one row at a time)."""
    monkeypatch.setattr(workload, "DECODER_BATCH", 2)
    monkeypatch.setattr(workload, "DECODER_INPUT", 40)
    size = "llama-tiny"
    if cuda:
        size = "llama-1b"
        request.getfixturevalue("cuda_faked")
        small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, vocab_size=30600)
        monkeypatch.setitem(workload.DECODER_SHAPES, "llama-1b", small)
    result = throughput.run("cpu", sizes=size, steps=1, warmup=0)
    rows = {(r["variant"], r["K"]): r for r in result["rows"]}
    assert set(rows) == {("peft", 1), ("hf", 1), ("hf", 4), ("hf", 8)}
    for r in rows.values():
        assert "error" not in r and r["examples_per_s"] > 0 and r["pct_of_peak"] > 0
    assert rows[("hf", 8)]["eval_examples_per_s"] > 0 and (rows[("hf", 8)]["peak_gib"] is not None) == cuda
    assert result["ratios"][size]["superpos8_vs_peft"] > 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"SUMMARY {size}: superpos / PEFT K=1 ")


def test_startup_breakdown_has_every_phase_and_a_cache_hit_on_the_second_trial(data_dir, tmp_path, monkeypatch, capsys):
    """`superpos bench --startup` (tiny-t5 only here): both trials with every phase, none
    negative; the second trial's backbone is a cache hit and its data comes from the
    tokenisation cache the first one wrote (a fresh SUPERPOS_CACHE). Structure, not speed."""
    monkeypatch.setenv("SUPERPOS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "startup.json"
    assert main(["bench", "--startup", "--models", "tiny-t5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["process"] > 0 and result["imports"] > 0 and result["device"] == "cpu"
    first, second = result["models"]["tiny-t5"]
    for row in (first, second):
        assert all(row[p] >= 0 for p in ("backbone", "data", "setup", "first_step"))
        assert row["total"] >= row["backbone"] + row["data"] + row["first_step"] and not row["compiled"]
    assert (first["hit"], second["hit"]) == (False, True)
    assert (first["tokenised"], second["tokenised"]) == (True, False)
    assert "backbone cache hit" in printed and "tiny-t5" in printed and "not compiled" in printed
