"""Experiments superpos creates open on MLflow's training-runs table (tag mlflow.experimentKind)."""

import pytest

from trainables.tracking import client_for, experiment_id


class RecordingClient:
    """The two MlflowClient calls experiment_id makes (a real sqlite store takes ~10 s to create here)."""

    def __init__(self):
        self.created = {}

    def get_experiment_by_name(self, name):
        return None

    def create_experiment(self, name, artifact_location=None, tags=None):
        self.created[name] = tags
        return "1"


def test_new_experiments_carry_the_custom_model_development_kind():
    client = RecordingClient()
    experiment_id(client, "sweep", "http://127.0.0.1:5000")
    assert client.created["sweep"] == {"mlflow.experimentKind": "custom_model_development"}


@pytest.mark.slow
def test_the_tag_reaches_a_real_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_for(uri)
    exp = client.get_experiment(experiment_id(client, "sweep", uri))
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
