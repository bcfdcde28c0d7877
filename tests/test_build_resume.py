"""Resumable artifact builds (lightning_modules/build_resume.py): a build killed after a
partial checkpoint resumes from it, in the same MLflow run, and leaves no partial state."""

from __future__ import annotations

import json

import pytest
import torch
from test_real_audio_judges import _folder

from lightning_modules import build_resume, tracking
from lightning_modules.artifacts import resolve
from lightning_modules.embedder import EmbedderJob
from suite import artifacts
from suite.models.vit import AudioEmbedder


class Killed(RuntimeError):
    pass


def _spec(tmp_path):
    return {"seed": 0, "data": {"folder": str(_folder(tmp_path)), "batch_size": 4, "val_files": 2,
                                "clip_seconds": 3.0},
            "model": {"preset": "tiny"},
            "train": {"max_steps": 5, "val_every": 5, "checkpoint_every": 2, "accelerator": "cpu"}}  # fmt: skip


@pytest.fixture
def counted_steps(monkeypatch):
    """Records the global step of every training step; kills the build at `kill_at` once."""
    seen, state = [], {"kill_at": None}
    original = EmbedderJob.training_step

    def step(self, batch, batch_idx):
        seen.append(self.global_step)
        if self.global_step == state["kill_at"]:
            state["kill_at"] = None
            raise Killed(f"killed at step {self.global_step}")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(EmbedderJob, "training_step", step)
    return seen, state


def test_a_killed_build_resumes_from_its_last_partial_checkpoint(tmp_path, counted_steps):
    seen, state = counted_steps
    spec = _spec(tmp_path)
    root = tmp_path / "artifacts"
    state["kill_at"] = 3
    with pytest.raises(Killed):
        resolve("embedder", spec, root=root)
    folder = artifacts.artifact_dir("embedder", 5, spec, root)
    partial = build_resume.partial_dir(folder)
    assert not folder.exists()  # nothing a later job could trust
    ckpt, step = build_resume.resume_point(partial)
    assert step == 2 and ckpt is not None  # steps 0, 1 done; step 2's checkpoint
    assert seen == [0, 1, 2, 3]

    seen.clear()
    path = resolve("embedder", spec, root=root)
    assert seen == [2, 3, 4]  # only the steps after the checkpoint
    assert json.loads((folder / build_resume.RESUMED).read_text()) == [2]
    assert not partial.exists()
    AudioEmbedder.from_checkpoint(path)


def test_an_uninterrupted_build_leaves_no_partial_state_and_no_resume_note(tmp_path, counted_steps):
    spec = _spec(tmp_path)
    path = resolve("embedder", spec, root=tmp_path / "artifacts")
    assert not build_resume.partial_dir(path.parent).exists()
    assert not (path.parent / build_resume.RESUMED).exists()


def test_a_damaged_partial_checkpoint_is_named_and_left_alone(tmp_path):
    partial = tmp_path / ".embedder-abc.partial"
    partial.mkdir()
    (partial / build_resume.LAST).write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"cannot resume .*last\.ckpt.*delete"):
        build_resume.resume_point(partial)
    assert (partial / build_resume.LAST).read_bytes() == b"not a checkpoint"
    assert build_resume.partial_dir(tmp_path / ".embedder-abc.tmp-123") == partial
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="checkpoint_every"):
            build_resume.checkpoint_every({"checkpoint_every": bad})
    assert build_resume.checkpoint_every({"val_every": 7}) == 7
    assert build_resume.checkpoint_every({}) == 250


def test_a_resumed_build_continues_its_mlflow_run(tmp_path, counted_steps):
    import mlflow

    seen, state = counted_steps
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.prepare_mlflow_store(uri, "builds")
    tracking.configure(uri, "builds")
    try:
        spec = _spec(tmp_path)
        spec["train"]["log_every"] = 1
        state["kill_at"] = 3
        with pytest.raises(Killed):
            resolve("embedder", spec, root=tmp_path / "artifacts")
        resolve("embedder", spec, root=tmp_path / "artifacts")
    finally:
        tracking.configure(None, None)
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("builds").experiment_id])
    assert len(runs) == 1  # one run per artifact, across the resume
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")]
    assert sorted(steps) == sorted(set(steps)) == [0, 1, 2, 3, 4]  # no step logged twice
    assert torch.isfinite(torch.tensor(runs[0].data.metrics["val/recall1"]))
