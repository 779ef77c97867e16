"""PEFT adapters out (superpos export) and in (--init-from, ATTEMPT sources), superpos evaluate, submissions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from superpos.config import TrainConfig
from superpos.errors import ConfigError
from superpos.evaluate import evaluate
from superpos.adapter import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, PEFT_KEY, read_adapter
from superpos.export import export_run_dir
from superpos.train import run, run_group

peft = pytest.importorskip("peft")

EXPORTABLE = {"simple": {}, "superpos": {"m": 16}, "residual": {"bottleneck": 8}, "lowrank": {"rank": 3}}


@pytest.fixture(scope="module")
def trained(fixture_data_dir, tmp_path_factory):
    """One epoch of tiny-t5 on the CB fixture with each exportable method (fused, one evaluation each)."""
    root = tmp_path_factory.mktemp("runs")
    configs = [
        TrainConfig(task="cb", method=m, model="tiny-t5", data_dir=str(fixture_data_dir), epochs=1, batch_size=4, eval_batch_size=3, dropout=False, device="cpu", method_options=o)
        for m, o in EXPORTABLE.items()
    ]
    dirs = [root / m for m in EXPORTABLE]
    trials = run_group(configs, dirs, progress=False)
    return {m: (d, t) for m, d, t in zip(EXPORTABLE, dirs, trials)}


def _batch(backbone):
    enc = backbone.tokenizer(["cb hypothesis: it rains premise: the sky is grey", "cb hypothesis: yes premise: no"], padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def assert_peft_matches(folder: Path, trial, n: int) -> None:
    """PEFT's encoder outputs, logits and greedy generations equal superpos's prompted forward (fp32, 1e-5)."""
    from superpos.backbones import load_backbone

    ours = load_backbone("tiny-t5", dropout=False).eval()
    trial.method.eval()
    ids, mask = _batch(ours)
    with torch.no_grad():
        embeds = ours.embed(ids)
        prompted = torch.cat([trial.method(embeds, mask), embeds], 1)
        pmask = torch.cat([torch.ones(2, n, dtype=mask.dtype), mask], 1)
        dec = torch.zeros(2, 1, dtype=torch.long)
        out = ours.model(inputs_embeds=prompted, attention_mask=pmask, decoder_input_ids=dec)
        gen = ours.model.generate(inputs_embeds=prompted, attention_mask=pmask, max_new_tokens=4, do_sample=False, num_beams=1)

    base = load_backbone("tiny-t5", dropout=False).model.eval()
    model = peft.PeftModel.from_pretrained(base, str(folder)).eval()
    with torch.no_grad():
        theirs = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
        their_gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, num_beams=1)
    assert torch.allclose(out.encoder_last_hidden_state, theirs.encoder_last_hidden_state, atol=1e-5)
    assert torch.allclose(out.logits, theirs.logits, atol=1e-5)
    assert torch.equal(gen, their_gen)


@pytest.mark.parametrize("method", list(EXPORTABLE))
def test_exported_prompt_runs_in_peft_as_in_superpos(trained, tmp_path, method, capsys):
    run_dir, trial = trained[method]
    folder = export_run_dir(run_dir, tmp_path / "adapter")
    config = json.loads((folder / ADAPTER_CONFIG_FILE).read_text())
    assert (config["peft_type"], config["task_type"], config["num_transformer_submodules"]) == ("PROMPT_TUNING", "SEQ_2_SEQ_LM", 1)
    assert (config["num_virtual_tokens"], config["token_dim"], config["num_layers"], config["num_attention_heads"]) == (10, 64, 2, 4)
    assert config["inference_mode"] is True and config["prompt_tuning_init"] == "RANDOM"
    from safetensors.torch import load_file

    weights = load_file(folder / ADAPTER_WEIGHTS_FILE)
    assert list(weights) == [PEFT_KEY] and weights[PEFT_KEY].dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(weights[PEFT_KEY], trial.method.eval().prompt_matrix())
    card = (folder / "README.md").read_text()
    assert f"method: `{method}`" in card
    assert_peft_matches(folder, trial, 10)
    # the card's Python runs as written (tiny-t5 needs no hub) and prints one decoded generation
    code = card.split("```python\n")[1].split("```")[0]
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.count("\n") == 1


def test_round_trip_export_init_from_and_attempt_source(trained, tmp_path, tiny_t5):
    from superpos.methods import build_method, method_config

    run_dir, trial = trained["residual"]
    folder = export_run_dir(run_dir, tmp_path / "adapter")
    exported = read_adapter(folder)[1]
    simple = build_method("simple", method_config("simple", {"init_from": str(folder)}), tiny_t5, torch.Generator().manual_seed(0))
    assert torch.equal(simple.prompt_matrix().detach(), exported)
    attempt = build_method("attempt", method_config("attempt", {"source_prompts": [str(folder)]}), tiny_t5, torch.Generator().manual_seed(0))
    assert torch.equal(attempt.sources[0], exported)
    # --init-from is a method option, so it is in the resolved config (config.json, MLflow params)
    resolved = TrainConfig(task="cb", method="simple", method_options={"init_from": str(folder)}).resolve()
    assert resolved.method_options["init_from"] == str(folder)


def test_evaluate_reproduces_the_runs_score_exactly(trained, tmp_path):
    run_dir, _ = trained["superpos"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1  # one evaluation: its score is the run's best score
    summary = evaluate(run_dir, predictions=str(tmp_path / "preds.jsonl"))
    assert summary["score"] == records[-1]["best_score"] == summary["run_score"]
    assert summary["metrics"]["accuracy"] == records[-1]["accuracy"]
    folder = export_run_dir(run_dir, tmp_path / "adapter")
    assert evaluate(folder, task="cb", data_dir=json.loads((run_dir / "config.json").read_text())["data_dir"])["score"] == records[-1]["score"]
    lines = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert len(lines) == summary["examples"] and set(lines[0]) == {"index", "input", "prediction", "label", "gold"}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "task,name,content,vocab",
    [
        ("rte", "RTE.tsv", "index\tsentence1\tsentence2\n0\ta\tb\n1\tc\td\n2\te\tf\n", {"entailment", "not_entailment"}),
        ("cola", "CoLA.tsv", "index\tsentence\n0\ta b\n1\tc d\n", {"0", "1"}),
        ("stsb", "STS-B.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\n0\tg\tf\t2012\t0\tn\tn\ta\tb\n", None),
        ("cb", "CB.jsonl", '{"premise": "a", "hypothesis": "b", "idx": 7}\n{"premise": "c", "hypothesis": "d", "idx": 9}\n', {"entailment", "contradiction", "neutral"}),
        ("boolq", "BoolQ.jsonl", '{"question": "a", "passage": "b", "idx": 0}\n', {"true", "false"}),
        ("copa", "COPA.jsonl", '{"premise": "a", "choice1": "b", "choice2": "c", "question": "cause", "idx": 3}\n', {0, 1}),
    ],
)
def test_submission_files_have_the_benchmarks_format(trained, tmp_path, task, name, content, vocab):
    run_dir, _ = trained["simple"]
    folder = export_run_dir(run_dir, tmp_path / "adapter")
    test_file = _write(tmp_path / ("test" + Path(name).suffix), content)
    summary = evaluate(folder, task=task, file=str(test_file), submission=str(tmp_path / "sub"))
    out = tmp_path / "sub" / name
    assert summary["submission"] == str(out) and "score" not in summary
    if name.endswith(".tsv"):
        rows = list(csv.reader(out.open(), delimiter="\t"))
        assert rows[0] == ["index", "prediction"]
        given = [line.split("\t")[0] for line in content.splitlines()[1:]]
        assert [r[0] for r in rows[1:]] == given
        labels = [r[1] for r in rows[1:]]
        if vocab is None:
            assert all(0.0 <= float(v) <= 5.0 for v in labels)
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["idx"] for r in rows] == [json.loads(line)["idx"] for line in content.splitlines()]
        assert all(set(r) == {"idx", "label"} for r in rows)
        labels = [r["label"] for r in rows]
    if vocab is not None:
        assert set(labels) <= vocab


def test_bad_input_is_refused_before_anything_is_written(trained, tmp_path, tiny_t5):
    from superpos.methods import build_method, method_config

    not_adapter = tmp_path / "plain"
    not_adapter.mkdir()
    with pytest.raises(ConfigError, match="not a PEFT adapter folder"):
        method_config("simple", {"init_from": str(not_adapter)})
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / ADAPTER_CONFIG_FILE).write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ConfigError, match="'LORA' adapter; allowed: PROMPT_TUNING"):
        read_adapter(lora)

    folder = export_run_dir(trained["simple"][0], tmp_path / "adapter")
    with pytest.raises(ConfigError, match="10 virtual tokens, prompt_len is 5"):
        method_config("simple", {"init_from": str(folder), "prompt_len": 5})
    wide = torch.zeros(10, 384)
    from safetensors.torch import save_file

    other = tmp_path / "wide"
    other.mkdir()
    wide_config = {**json.loads((folder / ADAPTER_CONFIG_FILE).read_text()), "token_dim": 384}
    (other / ADAPTER_CONFIG_FILE).write_text(json.dumps(wide_config))
    save_file({PEFT_KEY: wide}, other / ADAPTER_WEIGHTS_FILE)
    with pytest.raises(ConfigError, match=r"\(10, 384\) prompt; this run needs \(10, 64\)"):
        build_method("simple", method_config("simple", {"init_from": str(other)}), tiny_t5, torch.Generator())

    # an occupied --out is kept as it was
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        export_run_dir(trained["simple"][0], keep)
    with pytest.raises(ConfigError, match="not an adapter folder"):
        export_run_dir(trained["simple"][0], keep, overwrite=True)
    assert [p.name for p in keep.iterdir()] == ["notes.txt"]

    for method, why in (("attempt", "depends on the input"), ("full", "has no prompt")):
        run_dir = tmp_path / method
        run_dir.mkdir()
        TrainConfig(task="cb", method=method).save(run_dir / "config.json")
        save_file({"target": torch.zeros(10, 64)}, run_dir / "prompt.safetensors")
        with pytest.raises(ConfigError, match=why):
            export_run_dir(run_dir, tmp_path / f"out_{method}")
        assert not (tmp_path / f"out_{method}").exists()

    with pytest.raises(ConfigError, match="no benchmark submission format for task 'multirc'"):
        evaluate(folder, task="multirc", file=str(_write(tmp_path / "t.jsonl", "{}\n")), submission=str(tmp_path / "sub"))
    assert not (tmp_path / "sub").exists()


def test_encoder_prompt_exports_as_feature_extraction(minilm, tmp_path):
    """MiniLM: PEFT's FEATURE_EXTRACTION forward gives superpos's prompted hidden states, and the
    card's pooling + cosine over them gives superpos's predictions."""
    import torch.nn.functional as F
    from transformers import AutoModel

    from superpos.backbones import minilm_path
    from superpos.adapter import write_adapter
    from superpos.export import model_card
    from superpos.tasks import get_task

    task, config = get_task("sst2"), TrainConfig(task="sst2", model="minilm")
    prompt = torch.randn(4, minilm.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.05
    folder = write_adapter(tmp_path / "adapter", prompt, minilm, model_card(config, minilm, 4, None, "", "adapter"))
    assert json.loads((folder / ADAPTER_CONFIG_FILE).read_text())["task_type"] == "FEATURE_EXTRACTION"
    assert "sentence-transformers/all-MiniLM-L6-v2" in (folder / "README.md").read_text()

    from superpos.backbones.base import TrialRows

    minilm.eval().prepare(task, "t5")
    enc = minilm.tokenizer(["sst2 sentence: a fine film", "sst2 sentence: dull"], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    embeds = torch.cat([prompt.expand(2, -1, -1), minilm.embed(ids)], 1)
    pmask = torch.cat([torch.ones(2, 4, dtype=mask.dtype), mask], 1)
    with torch.no_grad():
        ours = minilm.model(inputs_embeds=embeds, attention_mask=pmask).last_hidden_state
        our_preds = minilm.predict(embeds, pmask, task, "t5", [TrialRows(slice(None), None, 4)])
        model = peft.PeftModel.from_pretrained(AutoModel.from_pretrained(minilm_path()), str(folder)).eval()
        theirs = model(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden = theirs[:, 4:]
        pooled = F.normalize((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
        c = minilm.tokenizer(["negative", "positive"], return_tensors="pt", padding=True)
        h = model.get_base_model()(**c).last_hidden_state
        classes = F.normalize((h * c.attention_mask[..., None]).sum(1) / c.attention_mask.sum(1, keepdim=True), dim=-1)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert (pooled @ classes.T).argmax(-1).tolist() == our_preds


@pytest.fixture(scope="module")
def mlflow_store(trained, tmp_path_factory):
    """The trained runs logged in the sweep layout (docs/mlflow-layout.md), plus a RUNNING run
    alone in its cell (tiny-t5 / rte / simple) with a higher score than any finished one."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("exp", artifact_location=(tmp / "artifacts").as_uri())
    ids = {}
    for method, (run_dir, _) in trained.items():
        config = json.loads((run_dir / "config.json").read_text())
        tags = {"superpos.role": "trial", "task": "cb", "method": method, "model": "tiny-t5", "dropout": "false", "softmax": "false",
                "m": str(config["method_options"].get("m", "")), "seed": "0", "status": "finished"}
        rid = client.create_run(exp_id, tags=tags).info.run_id
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        client.log_batch(rid, metrics=[Metric(k, float(v), 0, r["step"]) for r in records for k, v in r.items() if k != "step" and isinstance(v, (int, float))])
        for name in ("config.json", "prompt.safetensors", "result.json"):
            client.log_artifact(rid, str(run_dir / name))
        client.set_terminated(rid, "FINISHED")
        ids[method] = rid
    tags = {"superpos.role": "trial", "task": "rte", "method": "simple", "model": "tiny-t5", "dropout": "false", "seed": "0", "status": "running"}
    running = client.create_run(exp_id, tags=tags).info.run_id
    client.log_batch(running, metrics=[Metric("score", 0.99, 0, 1)])
    return uri, ids, running


@pytest.mark.slow
def test_mlflow_run_and_best_cell_exports_run_in_peft(trained, mlflow_store, tmp_path, capsys):
    from analysis.export import best_cell_run, export_all, export_run
    from superpos.cli import main

    uri, ids, running = mlflow_store
    folder = export_run(uri, ids["lowrank"], tmp_path / "one")
    assert_peft_matches(folder, trained["lowrank"][1], 10)
    assert ids["lowrank"] in (folder / "README.md").read_text()

    best = best_cell_run(uri, "exp", "cb", "superpos", "tiny-t5", "off")
    assert best == ids["superpos"]
    assert main(["export", "--tracking-uri", uri, "--experiment", "exp", "--task", "cb", "--method", "superpos", "--model", "tiny-t5", "--out", str(tmp_path / "cell")]) == 0
    assert_peft_matches(tmp_path / "cell", trained["superpos"][1], 10)

    folders, notes = export_all(uri, "exp", tmp_path / "all")
    assert sorted(f.name for f in folders) == [f"cb_{m}_dropout-off" for m in sorted(EXPORTABLE)] and notes == []

    assert main(["evaluate", "--tracking-uri", uri, "--run-id", ids["simple"]]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["score"] == summary["run_score"]

    # a cell whose only run is still running: refused, nothing written
    with pytest.raises(ConfigError, match="no finished run with a score in cell rte/simple/tiny-t5"):
        best_cell_run(uri, "exp", "rte", "simple", "tiny-t5")
    with pytest.raises(ConfigError, match="is RUNNING; only FINISHED"):
        export_run(uri, running, tmp_path / "running")
    assert main(["export", "--tracking-uri", uri, "--experiment", "exp", "--task", "rte", "--method", "simple", "--model", "tiny-t5", "--out", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "running").exists() and not (tmp_path / "none").exists()


def test_cli_export_and_evaluate(trained, tmp_path, capsys):
    from superpos.cli import main

    run_dir, _ = trained["simple"]
    assert main(["export", str(run_dir), "--out", str(tmp_path / "a")]) == 0
    assert read_adapter(tmp_path / "a")[1].shape == (10, 64)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "a")]) == 2  # occupied: refused
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--run-id", "x", "--out", str(tmp_path / "b")]) == 2
    assert main(["evaluate", str(tmp_path / "a"), "--task", "cb", "--data-dir", json.loads((run_dir / "config.json").read_text())["data_dir"]]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["task"] == "cb"
    assert main(["evaluate", str(tmp_path / "a")]) == 2
    assert "pass --task" in capsys.readouterr().err


def test_export_and_evaluate_use_the_best_evaluations_prompt(fixture_data_dir, tmp_path):
    """The reported score is the best evaluation's: the run keeps that evaluation's prompt
    (best_prompt.safetensors), and evaluate on it, or on its export, reproduces that score
    exactly, though a later evaluation scored lower (MiniLM, lr 0.3: best at the second of five)."""
    run_dir = tmp_path / "run"
    config = TrainConfig(task="cb", method="simple", model="minilm", data_dir=str(fixture_data_dir), epochs=5, batch_size=4, eval_batch_size=8, dropout=False, device="cpu", lr=0.3)
    run(config, run_dir, progress=False)
    scores = [json.loads(line)["score"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert scores[-1] < max(scores)  # the case this test is about
    assert evaluate(run_dir)["score"] == max(scores)
    folder = export_run_dir(run_dir, tmp_path / "adapter")
    assert evaluate(folder, task="cb", model="minilm", data_dir=str(fixture_data_dir))["score"] == max(scores)
