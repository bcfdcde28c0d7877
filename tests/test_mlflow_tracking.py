"""MLflow habits (lightning_modules/tracking.py): the training view's experiment kind,
exports logged as run artifacts, and merge sources named `runs:/<run_id>/<path>`."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_models import make_evaluator, save_tiny_models

from lightning_modules import tracking
from suite.policies.exports import load_export, save_export

KIND = ("mlflow.experimentKind", "custom_model_development")


def _client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


@pytest.fixture(autouse=True)
def _no_store():
    """tracking's configured store is process-wide: every test starts and ends without one."""
    tracking.configure(None, None)
    yield
    tracking.configure(None, None)


# ------------------------------------------------------------------------ experiment kind
def test_a_fresh_store_opens_on_the_training_view(tmp_path):
    """MLflow 3's UI shows an experiment tagged custom_model_development with its training
    view (runs table, metric charts), not the GenAI view (traces, judges, prompts)."""
    uri = f"sqlite:///{tmp_path / 'sub' / 'mlflow.db'}"
    exp_id = tracking.prepare_mlflow_store(uri, "cfg-distill", str(tmp_path / "art"))
    experiment = _client(uri).get_experiment(exp_id)
    assert experiment.name == "cfg-distill"
    assert experiment.tags[KIND[0]] == KIND[1]
    assert experiment.artifact_location.endswith("art")
    assert tracking.prepare_mlflow_store(uri, "cfg-distill") == exp_id  # idempotent


def test_an_existing_experiment_gets_the_kind_and_a_chosen_kind_is_kept(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _client(uri)
    old = client.create_experiment("old")  # made by an older suite: no kind
    mine = client.create_experiment("mine", tags={KIND[0]: "genai_development"})
    assert tracking.prepare_mlflow_store(uri, "old") == old
    assert client.get_experiment(old).tags[KIND[0]] == KIND[1]
    tracking.prepare_mlflow_store(uri, "mine")
    assert client.get_experiment(mine).tags[KIND[0]] == "genai_development"


def test_run_module_keeps_its_store_api():
    from suite import run

    assert run.prepare_mlflow_store is tracking.prepare_mlflow_store


# ------------------------------------------------------------------------ exports and runs:/
def _export(directory: Path, name: str, value: float) -> Path:
    state = {"w": torch.full((2, 3), value), "b": torch.arange(3.0)}
    record = {"kind": "student", "name": name, "policy": {"name": "toy"}, "base_hash": "abc",
              "beta": value}  # fmt: skip
    return save_export(state, directory / f"{name}.safetensors", record)


@pytest.fixture
def logged(tmp_path):
    """A store with one run that logged an export through `tracking.log_export`."""
    from lightning.pytorch.loggers import MLFlowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.prepare_mlflow_store(uri, "cfg-distill", str(tmp_path / "mlartifacts"))
    logger = MLFlowLogger(experiment_name="cfg-distill", tracking_uri=uri, run_name="beta15-seed0")
    module = SimpleNamespace(_trainer=object(), loggers=[logger])  # what log_export reads
    path = _export(tmp_path / "models", "beta15-seed0", 15.0)
    uris = tracking.log_export(module, path)
    return uri, logger.run_id, uris, path


def test_log_export_logs_the_weights_and_their_record_and_tags_the_uri(logged):
    uri, run_id, uris, path = logged
    client = _client(uri)
    listed = {a.path for a in client.list_artifacts(run_id, "models")}
    assert listed == {"models/beta15-seed0.safetensors", "models/beta15-seed0.json"}
    want = f"runs:/{run_id}/models/beta15-seed0.safetensors"
    assert uris == [want] and client.get_run(run_id).data.tags["export"] == want


def test_a_runs_uri_resolves_to_the_same_export_in_a_cache(logged, tmp_path):
    uri, run_id, uris, path = logged
    cache = tmp_path / "cache"
    local = Path(tracking.resolve_source(uris[0], cache, uri=uri))
    assert local == cache / run_id / "models" / "beta15-seed0.safetensors"
    state, record = load_export(local)  # the record travels in the header
    want_state, want_record = load_export(path)
    assert record == want_record and record["beta"] == 15.0
    assert all(torch.equal(state[k], want_state[k]) for k in want_state)
    # A second resolution reuses the cached file; the configured store is the default.
    stamp = local.stat().st_mtime_ns
    tracking.configure(uri, "cfg-distill")
    assert Path(tracking.resolve_source(uris[0], cache)) == local
    assert local.stat().st_mtime_ns == stamp
    assert tracking.resolve_source("models/x.safetensors", cache) == "models/x.safetensors"


def test_bad_runs_uris_are_refused_in_one_line(logged, tmp_path, monkeypatch):
    uri, run_id, _, _ = logged
    cache = tmp_path / "cache"
    cases = [
        (f"runs:/{'0' * 32}/models/beta15-seed0.safetensors", FileNotFoundError,
         f"no MLflow run '{'0' * 32}' in {uri}"),
        (f"runs:/{run_id}/models/beta0-seed0.safetensors", FileNotFoundError,
         f"run {run_id} has no artifact 'models/beta0-seed0.safetensors' (under models: "
         f"models/beta15-seed0.json, models/beta15-seed0.safetensors)"),
        (f"runs:/{run_id}", ValueError, "expected runs:/<run_id>/<artifact path>"),
        ("runs:///x.safetensors", ValueError, "expected runs:/<run_id>/<artifact path>"),
    ]  # fmt: skip
    for source, error, needle in cases:
        with pytest.raises(error) as info:
            tracking.resolve_source(source, cache, "Job: ", uri=uri)
        text = str(info.value)
        assert needle in text and text.startswith(f"Job: source {source}") and "\n" not in text
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow sets it when used
    with pytest.raises(FileNotFoundError, match="no MLflow store to read it from"):
        tracking.resolve_source(f"runs:/{run_id}/models/a.safetensors", cache)
    missing = tmp_path / "absent.db"
    with pytest.raises(FileNotFoundError, match=f"no MLflow database at {missing}"):
        tracking.resolve_source(f"runs:/{run_id}/m/a.safetensors", cache, uri=f"sqlite:///{missing}")
    assert not missing.exists() and not cache.exists()


def test_merged_evaluator_merges_runs_uris_like_files(tmp_path):
    """LERP of two exports named by runs:/ equals LERP of the same files; the merge's own
    record names the runs:/ sources; a missing run is refused in setup, a bad form at once."""
    from lightning.pytorch.loggers import MLFlowLogger

    ckpts = save_tiny_models(tmp_path / "ckpts")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.prepare_mlflow_store(uri, "cfg-distill", str(tmp_path / "mlartifacts"))
    sources = []
    for name in ("beta0-seed0", "beta15-seed0"):
        logger = MLFlowLogger(experiment_name="cfg-distill", tracking_uri=uri, run_name=name)
        sources += tracking.log_export(SimpleNamespace(_trainer=object(), loggers=[logger]),
                                       ckpts[name])  # fmt: skip
    tracking.configure(uri, "cfg-distill")
    out = tmp_path / "lerp.safetensors"
    m = make_evaluator(ckpts, sources=sources, root=str(tmp_path), export_path=str(out))
    m.setup("test")
    ref = make_evaluator(ckpts)
    ref.setup("test")
    got, want = m.policy.trainable.state_dict(), ref.policy.trainable.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert [s.label for s in m.source_info] == ["beta0-seed0", "beta15-seed0"]
    assert (tmp_path / "models" / "mlflow").is_dir()
    _, record = load_export(out)
    assert [s["source"] for s in record["sources"]] == sources
    bad = make_evaluator(ckpts, sources=[sources[0].replace(sources[0][6:38], "f" * 32), "base"],
                         root=str(tmp_path))  # fmt: skip
    with pytest.raises(FileNotFoundError, match=f"MergedEvaluator: source runs:/{'f' * 32}/"):
        bad.setup("test")
    with pytest.raises(ValueError, match="MergedEvaluator: source runs:/abc: expected"):
        make_evaluator(ckpts, sources=["runs:/abc", "base"])


def test_a_students_fit_logs_its_export_to_its_run(tmp_path):
    """DistillStudent.on_train_end: the export and its record become artifacts of the run
    that trained it, and its runs:/ URI gives back the same weights and record."""
    import lightning as L
    from lightning.pytorch.loggers import MLFlowLogger
    from student_common import Prompts, make, save_checkpoints
    from torch.utils.data import DataLoader

    ckpts = save_checkpoints(tmp_path / "ckpts")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger(experiment_name="t", tracking_uri=uri,
                          artifact_location=str(tmp_path / "art"))  # fmt: skip
    export = tmp_path / "models" / "beta15-seed0.safetensors"
    m = make(ckpts, export_path=str(export), n_audio_samples=0)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=logger,
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, limit_val_batches=0,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(m, DataLoader(Prompts(4, 0), batch_size=4))
    run = _client(uri).get_run(logger.run_id)
    assert run.data.tags["export"] == f"runs:/{logger.run_id}/models/beta15-seed0.safetensors"
    listed = {a.path for a in _client(uri).list_artifacts(logger.run_id, "models")}
    assert listed == {"models/beta15-seed0.safetensors", "models/beta15-seed0.json"}
    local = tracking.resolve_source(run.data.tags["export"], tmp_path / "cache", uri=uri)
    (state, record), (want_state, want_record) = load_export(local), load_export(export)
    assert record == want_record and record["mlflow_run_id"] == logger.run_id
    assert all(torch.equal(state[k], want_state[k]) for k in want_state)
    trained = m.student.state_dict()
    assert all(torch.equal(state[k], trained[k]) for k in trained)
