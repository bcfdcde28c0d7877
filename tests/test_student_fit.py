"""Lightning runs of the student: fit with validation, export, checkpoints, resume, DDP.

Tiny checkpoints and prompt batches come from `student_common` (see `test_student.py` for
the step and the evaluation helpers).
"""

from __future__ import annotations

import json
import socket

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from student_common import Prompts, make, params, save_checkpoints, spec
from torch.utils.data import DataLoader

from lightning_modules.policy_job import load_policy
from lightning_modules.student import DistillStudent
from suite.objectives import diversity_rewards
from suite.policies.exports import load_export, sidecar, weights_hash


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return save_checkpoints(tmp_path_factory.mktemp("student_fit_ckpts"))


def _trainer(tmp_path, max_steps, **kw):
    from lightning.pytorch.callbacks import ModelCheckpoint

    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", devices=1, logger=kw.pop("logger", False),
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1)],
        default_root_dir=tmp_path, **kw,
    )  # fmt: skip


def test_fit_with_validation_logs_metric_names(ckpts, tmp_path):
    from lightning.pytorch.loggers import MLFlowLogger

    logger = MLFlowLogger(
        experiment_name="t",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "art"),
    )
    export = tmp_path / "export" / "student.safetensors"
    m = make(ckpts, scorer=ckpts["scorer"], preference=ckpts["pref"], n_audio_samples=2,
             export_path=str(export))  # fmt: skip
    trainer = _trainer(tmp_path, 3, logger=logger, val_check_interval=3, limit_val_batches=1)
    train = DataLoader(Prompts(12, 0), batch_size=4)
    val = DataLoader(Prompts(2, 1), batch_size=2)
    trainer.fit(m, train, val)
    assert trainer.global_step == 3
    names = set(trainer.callback_metrics)
    for name in ("train/kl", "train/reward_mean", "train/entropy", "time/sampling",
                 "eval/quality", "eval/mulan", "eval/preference", "eval/diversity", "eval/vendi",
                 "eval/oracle_quality", "eval/kl_teacher", "eval/entropy"):  # fmt: skip
        assert name in names, name
    arts = logger.experiment.list_artifacts(logger.run_id, "samples/step3")
    assert {a.path.rsplit(".", 1)[-1] for a in arts} == {"wav", "mid", "tsv"}
    # The export records the MLflow run that trained it.
    assert json.loads(sidecar(export).read_text())["mlflow_run_id"] == logger.run_id


def test_export_after_fit_records_its_provenance(ckpts, tmp_path):
    with pytest.raises(ValueError, match="export_path"):
        make(ckpts, export_path=str(tmp_path / "student.pt"))
    export = tmp_path / "student.safetensors"
    m = make(ckpts, beta=5.0, gamma=2.5, temperature=0.9, eval_seed=7, export_path=str(export))
    trainer = _trainer(tmp_path, 2)
    trainer.fit(m, DataLoader(Prompts(8, 0), batch_size=4))
    assert export.is_file() and sidecar(export).is_file()
    record = json.loads(sidecar(export).read_text())
    assert record["kind"] == "student"
    assert record["beta"] == 5.0 and record["gamma"] == 2.5 and record["temperature"] == 0.9
    assert record["seed"] == 7 and record["step"] == 2
    assert "mlflow_run_id" in record and record["mlflow_run_id"] is None  # no MLflow logger
    base = load_policy(spec(ckpts["lm"]))
    assert record["base_hash"] == weights_hash(base.trainable.state_dict())
    # The exported weights are the trained student's, with the same record in the header.
    state, header = load_export(export)
    assert header == record
    student = m.student.state_dict()
    assert state.keys() == student.keys()
    assert all(torch.equal(state[k], student[k].cpu()) for k in state)
    assert record["weights_hash"] != record["base_hash"]  # training moved the weights
    # The Lightning checkpoint holds the trainable part once: no frozen parts, no copies.
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    keys = set(ckpt["state_dict"])
    assert all(k.startswith("student.") for k in keys)
    assert keys == {f"student.{k}" for k in base.trainable.state_dict()}


def test_resume_keeps_step_ema_and_student(ckpts, tmp_path):
    train = DataLoader(Prompts(8, 0), batch_size=4)
    m = make(ckpts, baseline="ema", beta=5.0)
    _trainer(tmp_path, 2).fit(m, train)
    ema, student = m.ema_baseline, params(m.student)
    last = tmp_path / "step2.ckpt"  # a copy: the resumed run rewrites ckpt/last.ckpt
    last.write_bytes((tmp_path / "ckpt" / "last.ckpt").read_bytes())
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["distill_student"]["ema_baseline"] == pytest.approx(ema)
    assert all(k.startswith("student.") for k in ckpt["state_dict"])  # no teacher copy

    seen = {}

    class Probe(L.Callback):
        def on_train_start(self, trainer, module):
            seen["step"], seen["ema"] = trainer.global_step, module.ema_baseline
            seen["student"] = params(module.student)
            seen["policy_is_student"] = module.policy.trainable is module.student
            seen["teacher_equals_base"] = all(
                torch.equal(a, b) for a, b in zip(params(module.teacher), params(m.teacher))
            )

    m2 = make(ckpts, baseline="ema", beta=5.0)
    t2 = _trainer(tmp_path, 3)
    t2.callbacks.append(Probe())
    t2.fit(m2, train, ckpt_path=str(last))
    assert seen["step"] == 2 and seen["ema"] == pytest.approx(ema)
    assert all(torch.equal(a, b) for a, b in zip(seen["student"], student))
    assert seen["policy_is_student"]  # the sampling policy is the restored student
    assert seen["teacher_equals_base"]  # the teacher is theta_init again, not the student
    assert t2.global_step == 3 and m2.ema_baseline != ema

    # load_from_checkpoint rebuilds the student without setup().
    m3 = DistillStudent.load_from_checkpoint(str(last))
    assert all(torch.equal(a, b) for a, b in zip(params(m3.student), student))
    assert all(torch.equal(a, b) for a, b in zip(params(m3.policy), student))


# ------------------------------------------------------------------------ DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, port, ckpt, logprobs, emb, baseline, out):
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        m = DistillStudent(policy=spec(ckpt), embedder=ckpt, baseline=baseline, ema_decay=0.9)
        m.ema_baseline = 0.3 if baseline == "ema" else None
        half = logprobs.shape[0] // 2
        lp = logprobs[rank * half : (rank + 1) * half].clone().requires_grad_(True)
        rewards = diversity_rewards(emb[rank * half : (rank + 1) * half])
        loss, info = m.diversity_surrogate(lp, rewards)
        loss.backward()
        torch.save(
            {"loss": loss.detach(), "grad": lp.grad, "adv": info["advantages"],
             "mean": info["reward_mean"], "ema": m.ema_baseline},
            f"{out}/rank{rank}.pt",
        )  # fmt: skip
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("baseline", ["batch", "ema"])
def test_ddp_baseline_matches_single_process(ckpts, tmp_path, baseline):
    g = torch.Generator().manual_seed(1)
    logprobs = torch.randn(6, 2, generator=g)
    emb = torch.randn(6, 2, 8, generator=g)
    m = make(ckpts, baseline=baseline, ema_decay=0.9)
    m.ema_baseline = 0.3 if baseline == "ema" else None
    lp = logprobs.clone().requires_grad_(True)
    loss, info = m.diversity_surrogate(lp, diversity_rewards(emb))
    loss.backward()
    mp.spawn(_ddp_worker, args=(_free_port(), ckpts["lm"], logprobs, emb, baseline,
                                str(tmp_path)), nprocs=2, join=True)  # fmt: skip
    r = [torch.load(tmp_path / f"rank{i}.pt") for i in range(2)]
    torch.testing.assert_close(torch.cat([r[0]["adv"], r[1]["adv"]]), info["advantages"])
    # DDP averages gradients over ranks: the mean of the per-rank losses / gradients.
    torch.testing.assert_close((r[0]["loss"] + r[1]["loss"]) / 2, loss.detach())
    torch.testing.assert_close(torch.cat([r[0]["grad"], r[1]["grad"]]) / 2, lp.grad)
    for k in range(2):
        torch.testing.assert_close(r[k]["mean"], info["reward_mean"])
        if baseline == "ema":
            assert r[k]["ema"] == pytest.approx(m.ema_baseline)
