"""Experiments superpos creates open on MLflow's training-runs table (tag mlflow.experimentKind)."""

from trainables.tracking import client_for, experiment_id


def test_new_experiments_carry_the_custom_model_development_kind(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_for(uri)
    exp = client.get_experiment(experiment_id(client, "sweep", uri))
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment_id(client, "sweep", uri) == exp.experiment_id  # an existing experiment is reused, not re-created
