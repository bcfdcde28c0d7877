"""Issue 21 in MLflow (no processes): a resumed run's history has no gap or duplicate, a run
ends FAILED / KILLED with its reason as a tag, and a possibly stale export is named."""

from __future__ import annotations

import time

import mlflow
import pytest

from lightning_modules import tracking


@pytest.fixture(params=["sqlite", "file"])
def client(request, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps it behind a switch
    uri = f"sqlite:///{tmp_path / 'm.db'}" if request.param == "sqlite" else f"file://{tmp_path / 'mlruns'}"
    return mlflow.MlflowClient(tracking_uri=uri)


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_truncate_deletes_the_steps_a_resume_redoes(client):
    experiment = client.create_experiment("e")
    run = client.create_run(experiment).info.run_id
    for step in range(8):
        client.log_metric(run, "train/loss", float(step), step=step)
        client.log_metric(run, "eval/x", 10.0 + step, step=step)
    # killed after the checkpoint of global step 5: points at steps >= 5 are redone
    assert tracking.truncate_metrics(client, run, 5) == 6
    assert _history(client, run, "train/loss") == [(s, float(s)) for s in range(5)]
    latest = client.get_run(run).data.metrics  # what the runs table shows
    assert latest == {"train/loss": 4.0, "eval/x": 14.0}
    for step in range(5, 8):  # the resumed run logs them again: no duplicate
        client.log_metric(run, "train/loss", float(step), step=step)
    assert _history(client, run, "train/loss") == [(s, float(s)) for s in range(8)]


def test_truncate_drops_a_metric_logged_only_after_the_checkpoint(tmp_path):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    run = client.create_run(client.create_experiment("e")).info.run_id
    client.log_metric(run, "late", 1.0, step=9)
    client.log_metric(run, "early", 1.0, step=1)
    tracking.truncate_metrics(client, run, 5)
    assert client.get_run(run).data.metrics == {"early": 1.0}


def test_end_run_sets_status_and_reason(tmp_path):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    run = client.create_run(client.create_experiment("e")).info.run_id
    tracking.end_run(client, run, "KILLED", "stopped by SIGTERM; the last checkpoint is x")
    got = client.get_run(run)
    assert got.info.status == "KILLED"
    assert got.data.tags["failure"] == "stopped by SIGTERM; the last checkpoint is x"


def test_an_export_overtaken_by_a_later_run_is_named_stale(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("e")
    first = client.create_run(experiment, run_name="beta15-seed0").info.run_id
    client.set_terminated(first, "FINISHED")
    record = {"mlflow_run_id": first, "name": "beta15-seed0", "step": 300}
    assert tracking.stale_export_note(record, uri) is None
    time.sleep(0.01)
    later = client.create_run(experiment, run_name="beta15-seed0").info.run_id
    client.set_terminated(later, "KILLED")
    note = tracking.stale_export_note(record, uri)
    assert note is not None and first in note and later in note and "step 300" in note and "KILLED" in note
    assert tracking.stale_export_note({"name": "x"}, uri) is None  # an export without a run id
