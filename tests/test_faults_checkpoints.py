"""Issue 21, items 1, 3 and 4 in one process: checkpoints are verified, never poisoned, written
after their step's evaluation, and carry what an exact resume needs.

The fault job of `faultjob.py` trains on the real `PromptDataModule` (hashing tower) with
`SafeCheckpoint` and `FiniteGuard`, as `conf/callbacks/default.yaml` configures every job.
The student's own exact resume (EMA baseline, per-step sampling streams, prompt order) is
checked on tiny models at the end.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from faultjob import FaultModule, HashTower

from datamodules.prompts import PromptDataModule
from lightning_modules.callbacks import FiniteGuard
from lightning_modules.checkpointing import (
    RESUME_KEY,
    CheckpointWriteError,
    SafeCheckpoint,
    rng_states,
    set_rng_states,
    verify_checkpoint,
)
from lightning_modules.guards import NonFiniteError, guarded_sampling


def data(batch_size: int = 6) -> PromptDataModule:
    return PromptDataModule("freeform", "freeform", batch_size=batch_size, seed=0, tower=HashTower())


def trainer(tmp_path, max_steps: int, every: int = 2, guard: bool = True, extra=(), **kw) -> L.Trainer:
    callbacks = [SafeCheckpoint(dirpath=tmp_path / "ckpt", filename="step{step:06d}", save_last=True,
                                save_top_k=-1, every_n_train_steps=every, auto_insert_metric_name=False)]  # fmt: skip
    if guard:
        callbacks.append(FiniteGuard())
    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[*callbacks, *extra],
        default_root_dir=tmp_path, val_check_interval=kw.pop("val_check_interval", 2),
        check_val_every_n_epoch=None, limit_val_batches=1, **kw,
    )  # fmt: skip


def ckpt(tmp_path, name: str) -> dict:
    return torch.load(tmp_path / "ckpt" / name, weights_only=True)


def all_finite(tmp_path) -> bool:
    return all(
        bool(torch.isfinite(t).all())
        for path in (tmp_path / "ckpt").glob("*.ckpt")
        for t in torch.load(path, weights_only=True)["state_dict"].values()
    )


# ------------------------------------------------------------------ item 1: verified saves
def test_a_save_that_writes_nothing_stops_the_run(tmp_path, monkeypatch):
    # Lightning 2.6 swallows a PermissionError while writing: the file is simply not there.
    import lightning.fabric.plugins.io.torch_io as torch_io

    monkeypatch.setattr(torch_io, "_atomic_save", lambda checkpoint, filepath: None)
    with pytest.raises(CheckpointWriteError, match="step000002.ckpt was not written"):
        trainer(tmp_path, 4).fit(FaultModule(), datamodule=data())


def test_verify_refuses_empty_and_garbage_files(tmp_path):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "junk.ckpt").write_bytes(b"\x00junk" * 100)
    for name, needle in (("empty.ckpt", "is empty"), ("junk.ckpt", "does not load back"),
                         ("absent.ckpt", "was not written")):  # fmt: skip
        with pytest.raises(CheckpointWriteError, match=needle):
            verify_checkpoint(tmp_path / name)


# ------------------------------------------------------------------ item 3: poisoned weights
@pytest.mark.parametrize("guard", [True, False], ids=["guard", "checkpoint-only"])
def test_nan_weights_never_reach_a_checkpoint(tmp_path, guard):
    # A NaN gradient at step index 2: the loss is finite, the update poisons the weights.
    with pytest.raises(NonFiniteError) as info:
        trainer(tmp_path, 6, every=1, guard=guard).fit(FaultModule(poison_at_step=2), datamodule=data())
    text = str(info.value)
    assert "global step 3" in text and "net.0.weight" in text
    assert "the last good checkpoint is" in text and "step000002.ckpt (global step 2)" in text
    assert all_finite(tmp_path)
    assert not (tmp_path / "ckpt" / "step000003.ckpt").exists()


def test_sampling_from_overflowing_probabilities_names_step_and_checkpoint(tmp_path):
    with pytest.raises(NonFiniteError) as info:
        trainer(tmp_path, 6).fit(FaultModule(blowup_at_step=3), datamodule=data())
    text = str(info.value)
    assert "sampling at global step 3" in text and "not finite" in text
    assert "step000002.ckpt (global step 2)" in text
    assert all_finite(tmp_path)


def test_guarded_sampling_passes_other_errors_through():
    with pytest.raises(RuntimeError, match="something else"):
        guarded_sampling("X", object(), "sampling", lambda: (_ for _ in ()).throw(RuntimeError("something else")))
    assert guarded_sampling("X", object(), "sampling", lambda: 3) == 3


# ------------------------------------------------------------------ item 4: exact resume
def test_a_save_due_with_an_evaluation_follows_the_evaluation(tmp_path):
    trainer(tmp_path, 4).fit(FaultModule(), datamodule=data())
    for step in (2, 4):
        state = ckpt(tmp_path, f"step{step:06d}.ckpt")[RESUME_KEY]
        assert state["evaluated_step"] == step  # written after the evaluation of its step
    # Lightning then resumes "on last": it neither repeats nor skips that evaluation.
    assert ckpt(tmp_path, "step000002.ckpt")["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"]["total"]["completed"] == 1


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.save(rng_states(), tmp_path / "rng.pt")
    first = (torch.rand(3), random.random(), np.random.rand())
    set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


class _Crash(L.Callback):
    """A crash (as kill -9 would leave it) right after the checkpoint of `after_step`."""

    def __init__(self, after_step: int):
        self.after_step = after_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.after_step + 1:
            raise RuntimeError("crash")


def _weights(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("after_step", [2, 4])  # mid-epoch (3 batches an epoch) and later
def test_resume_after_a_crash_ends_with_the_uninterrupted_weights(tmp_path, after_step):
    L.seed_everything(0, verbose=False)  # torch, numpy and random: the job draws from all three
    whole = FaultModule()
    trainer(tmp_path / "a", 8).fit(whole, datamodule=data())
    L.seed_everything(0, verbose=False)
    crashed = FaultModule()
    with pytest.raises(RuntimeError, match="crash"):
        trainer(tmp_path / "b", 8, extra=[_Crash(after_step + 1)]).fit(crashed, datamodule=data())
    L.seed_everything(123, verbose=False)  # as a fresh process: only the checkpoint carries state
    resumed = FaultModule()
    trainer(tmp_path / "b", 8).fit(resumed, datamodule=data(), ckpt_path=str(tmp_path / "b" / "ckpt" / "last.ckpt"))
    want, got = _weights(whole), _weights(resumed)
    assert max(float((want[k] - got[k]).abs().max()) for k in want) == 0.0


def test_the_student_resumes_exactly(tmp_path):
    from student_common import make, save_checkpoints

    ckpts = save_checkpoints(tmp_path / "models")

    def student():
        return make(ckpts, baseline="ema", n_eval_generations=2, n_audio_samples=0)

    def run(folder, max_steps, extra=(), ckpt_path=None):
        module = student()
        t = trainer(folder, max_steps, every=2, extra=extra, val_check_interval=2)
        t.fit(module, datamodule=data(batch_size=3), ckpt_path=ckpt_path)
        return module

    L.seed_everything(0, verbose=False)
    whole = run(tmp_path / "a", 5)
    L.seed_everything(0, verbose=False)
    with pytest.raises(RuntimeError, match="crash"):
        run(tmp_path / "b", 5, extra=[_Crash(3)])
    L.seed_everything(123, verbose=False)
    resumed = run(tmp_path / "b", 5, ckpt_path=str(tmp_path / "b" / "ckpt" / "last.ckpt"))
    want, got = _weights(whole.student), _weights(resumed.student)
    assert max(float((want[k] - got[k]).abs().max()) for k in want) == 0.0
    assert whole.ema_baseline == resumed.ema_baseline


# ------------------------------------------------------------------ items 6 and 9, in process
def test_a_signal_outside_training_stops_at_once_and_inside_waits_for_the_checkpoint():
    import os
    import signal

    from lightning_modules import interrupts

    assert interrupts.install()
    try:
        with pytest.raises(interrupts.RunInterrupted) as info:  # setup, step-0 evaluation: at once
            os.kill(os.getpid(), signal.SIGTERM)
        assert info.value.exit_code == 143 and interrupts.signal_of(info.value) == signal.SIGTERM
        interrupts.PENDING.clear()
        interrupts.PENDING.training = True  # a SafeCheckpoint is training: recorded only
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupts.PENDING.signum == signal.SIGINT
        with pytest.raises(interrupts.RunInterrupted):  # a second signal: at once
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        interrupts.uninstall()


def test_a_judge_artifact_of_another_architecture_is_refused():
    from lightning_modules.policy_job import check_artifact_architecture
    from suite.models.vit import AudioEmbedder, EmbedderConfig, EncoderConfig, ViTConfig

    def config(width):
        return EmbedderConfig(EncoderConfig(vit=ViTConfig(width=width, depth=1, heads=2, head_dim=8, ff_dim=32)), out_dim=8)

    spec = {"seed": 0, "model": {"model_config": config(16).to_dict()}}
    check_artifact_architecture("embedder", spec, AudioEmbedder(config(16)), "DistillStudent")
    check_artifact_architecture("embedder", "/a/path.pt", AudioEmbedder(config(64)), "DistillStudent")
    with pytest.raises(ValueError) as info:  # e.g. a width-64 model.pt put in the artifact's folder
        check_artifact_architecture("embedder", spec, AudioEmbedder(config(64)), "DistillStudent")
    assert "encoder.vit.width: checkpoint=64 requested=16" in str(info.value)
