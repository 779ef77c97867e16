"""Rank classification (``evaluation: rank``): each candidate target text scored, the likeliest wins."""

import pytest
import torch

from superpos.backbones import load_backbone
from superpos.backbones.fast_t5 import FastT5
from superpos.config import TrainConfig
from superpos.errors import ConfigError
from superpos.tasks import get_task
from superpos.train import Trainer


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def prompted_inputs(backbone, batch=6, length=12, prompt=4):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 2000, (batch, length), generator=g)
    mask = torch.ones(batch, length + prompt, dtype=torch.long)
    mask[1, -4:] = 0
    embeds = torch.cat([torch.randn(batch, prompt, backbone.hidden_size, generator=g), backbone.embed(ids)], dim=1)
    return embeds, mask


def brute_force(backbone, embeds, mask, task, template):
    """Every candidate's loss through a whole teacher-forced forward (the training path)."""
    texts = task.candidate_texts(template)
    sums = []
    for text in texts:
        ids = torch.tensor(backbone.tokenizer(text)["input_ids"])
        sums.append(backbone.example_losses(embeds, mask, ids.expand(len(embeds), -1))[0])
    return [task.parse(texts[i], template) for i in torch.stack(sums, 1).argmin(1).tolist()]


@pytest.mark.parametrize("task_name, template", [("cb", "t5"), ("rte", "attempt"), ("stsb", "t5")])
@pytest.mark.parametrize("fast", [False, True])
def test_rank_picks_the_likeliest_candidate(task_name, template, fast):
    backbone = load_backbone("tiny-t5", dropout=False, evaluation="rank").eval()
    if fast:
        backbone.fast_forward = FastT5(backbone.model)
    task = get_task(task_name)
    embeds, mask = prompted_inputs(backbone)
    with torch.no_grad():
        predictions = backbone.predict(embeds, mask, task, template)
        expected = brute_force(backbone, embeds, mask, task, template)
    assert predictions == expected
    assert None not in predictions  # a ranked prediction is never invalid
    if task.regression:
        assert all(p in [float(t) for t in task.candidate_texts(template)] for p in predictions)


def test_candidate_texts():
    assert get_task("cb").candidate_texts("t5") == ["entailment", "contradiction", "neutral"]
    assert get_task("cb").candidate_texts("attempt") == ["0", "1", "2"]
    grid = get_task("stsb").candidate_texts("t5")
    assert len(grid) == 26 and grid[:3] == ["0.0", "0.2", "0.4"] and grid[-1] == "5.0"


def test_the_loop_evaluates_by_rank(fixture_data_dir, tokenized_cache):
    config = TrainConfig(task="cb", model="tiny-t5", data_dir=str(fixture_data_dir), epochs=1, batch_size=8,
                         evaluation="rank", dropout=False, device="cpu")
    trainer = Trainer([config], progress=False)
    assert trainer.backbone.evaluation == "rank"
    (trial,) = trainer.fit()
    (record,) = trial.state.history
    assert 0.0 <= record["score"] <= 1.0 and record["invalid_rate"] == 0.0


def test_bad_evaluation_values_are_refused():
    with pytest.raises(ConfigError, match=r"unknown evaluation 'beam'.*allowed: generate, rank"):
        TrainConfig(evaluation="beam").validate()
    with pytest.raises(ConfigError, match="encoder: forward must be 'hf' and evaluation 'generate'"):
        TrainConfig(model="minilm", evaluation="rank").validate()
