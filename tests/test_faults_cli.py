"""Issue 21 end to end, as a user runs it: `python -m suite fit` of the fault job
(`tests/configs/fault.yaml`, `faultjob.py`: the real PromptDataModule, ~10 s a run) under
kill -9, SIGTERM / SIGINT, poisoned updates, bad inputs and concurrent experiments.

Each slow test stays under ~40 s on 2 cores; the checks that need no process are in
`test_faults_preflight.py` and `test_faults_checkpoints.py`.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
FAULT = REPO / "tests" / "configs" / "fault.yaml"
CKPT = Path("checkpoints") / "fault-seed0"


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out.pop("MLFLOW_TRACKING_URI", None)
    out.update(PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]), PYTHONWARNINGS="ignore", **extra)
    return out


def command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "suite", "fit", "--config", str(FAULT), "torch_threads=1", *overrides]


def fault(cwd: Path, *overrides: str, environ: dict | None = None) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(command(*overrides), cwd=cwd, env=environ or env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def start(cwd: Path, *overrides: str) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(command(*overrides), cwd=cwd, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path} existed: {proc.stderr.read()[-3000:]}"
        assert time.time() < end, f"no {path} after {timeout} s"
        time.sleep(0.02)


def one_line_error(stderr: str) -> str:
    """The run's own error line; there must be exactly one and no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def weights(cwd: Path) -> dict[str, torch.Tensor]:
    return torch.load(cwd / CKPT / "last.ckpt", weights_only=True)["state_dict"]


def store(db: Path):
    conn = sqlite3.connect(db)
    runs = conn.execute("select run_uuid, status from runs").fetchall()
    tags = dict(conn.execute("select run_uuid || ':' || key, value from tags").fetchall())
    history = sorted(conn.execute("select key, step, value from metrics").fetchall())
    return runs, tags, history


def no_gap_no_duplicate(history: list, reference: list) -> None:
    def repeated(points):  # Lightning logs `epoch` twice where an epoch ends at an evaluation
        counts = collections.Counter((key, step) for key, step, _ in points)
        return sorted(k for k, n in counts.items() if n > 1)

    assert repeated(history) == repeated(reference)
    assert all(key == "epoch" for key, _ in repeated(history))
    assert history == reference  # same points, same values: nothing missing, nothing extra


# ------------------------------------------------------------------ item 4: kill -9, exact resume
@pytest.mark.slow
def test_kill_9_at_a_random_point_then_resume_gives_the_uninterrupted_run(tmp_path):
    delay = random.Random().uniform(0.0, 1.5)  # after the step-4 checkpoint: steps 5-8 or their eval
    whole = start(tmp_path / "a")
    killed = start(tmp_path / "b", "model.sleep_s=0.2")
    wait_for(tmp_path / "b" / CKPT / "step000004.ckpt", killed)
    time.sleep(delay)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert whole.wait() == 0
    resumed = fault(tmp_path / "b", "model.sleep_s=0.2", "ckpt_path=last")
    assert resumed.returncode == 0, (delay, resumed.stderr[-3000:])
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0, f"killed {delay:.2f} s after step 4"
    runs_a, _, history_a = store(tmp_path / "a" / "mlflow.db")
    runs_b, _, history_b = store(tmp_path / "b" / "mlflow.db")
    assert len(runs_b) == 1 and runs_b[0][1] == "FINISHED"
    no_gap_no_duplicate(history_b, history_a)


# ------------------------------------------------------------------ item 6: SIGTERM / SIGINT
@pytest.mark.slow
@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_writes_a_checkpoint_and_exits_non_zero_killed(tmp_path, name, code):
    proc = start(tmp_path, "model.sleep_s=0.2")
    wait_for(tmp_path / CKPT / "step000004.ckpt", proc)
    time.sleep(0.5)  # inside step 5 or 6: between two periodic checkpoints
    proc.send_signal(getattr(signal, name))
    assert proc.wait(timeout=60) == code
    assert f"error: stopped by {name}; the last checkpoint is" in proc.stderr.read()
    saved = sorted(p.name for p in (tmp_path / CKPT).glob("step*.ckpt"))
    assert len(saved) == 2 and saved[0] == "step000004.ckpt", saved  # one more, at the signal
    runs, tags, _ = store(tmp_path / "mlflow.db")
    assert runs[0][1] == "KILLED"
    assert tags[f"{runs[0][0]}:failure"].startswith(f"stopped by {name}; the last checkpoint is")
    if name == "SIGTERM":  # and the run goes on from there
        resumed = fault(tmp_path, "model.sleep_s=0.2", "ckpt_path=last")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        runs, tags, _ = store(tmp_path / "mlflow.db")
        assert runs[0][1] == "FINISHED" and f"{runs[0][0]}:failure" not in tags


# ------------------------------------------------------------------ item 3: a poisoned update
@pytest.mark.slow
def test_a_nan_update_fails_naming_step_cause_and_checkpoint_and_saves_no_poison(tmp_path):
    proc = fault(tmp_path, "model.poison_at_step=5")
    assert proc.returncode == 1
    line = one_line_error(proc.stderr)
    assert "non-finite weights after the update at global step 6" in line and "net.0.weight" in line
    assert "the last good checkpoint is" in line and "step000004.ckpt (global step 4)" in line
    runs, tags, _ = store(tmp_path / "mlflow.db")
    assert runs[0][1] == "FAILED" and tags[f"{runs[0][0]}:failure"] == line.removeprefix("error: ")
    for path in (tmp_path / CKPT).glob("*.ckpt"):
        state = torch.load(path, weights_only=True)["state_dict"]
        assert all(bool(torch.isfinite(t).all()) for t in state.values()), path


# ------------------------------------------------------------------ items 1, 7, 8: one line, nothing written
def _malicious(path: Path) -> Path:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {path.parent / 'PWNED'}",))

    torch.save({"state_dict": {}, "loops": {}, "global_step": 1, "x": Evil()}, path)
    return path


def _random_bytes(path: Path) -> Path:
    path.write_bytes(os.urandom(5000))
    return path


def _unwritable(tmp_path: Path) -> str:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/sys/kernel/suite-fault-test"  # root ignores permission bits; sysfs does not
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder / "x")


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, needle",
    [
        (lambda t: f"paths.ckpt_dir={_unwritable(t)}", "paths.ckpt_dir: "),
        (lambda t: f"model.export_path={_unwritable(t)}/f.pt", "model.export_path: "),
        (lambda t: f"hydra.run.dir={_unwritable(t)}", "hydra.run.dir: "),
        (lambda t: f"paths.mlflow_db={_unwritable(t)}/m.db", "paths.mlflow_db: "),
        (lambda t: "seed=abc", "seed must be an int, got 'abc'"),
        (lambda t: "torch_threads=-1", "torch_threads must be an int >= 1 or null, got -1"),
        (lambda t: f"ckpt_path={_malicious(t / 'evil.ckpt')}", "refused: it asks to import `posix.system`"),
        (lambda t: "name=a/b", "name must be a plain name"),
        (lambda t: "trainer.max_steps=abc", "trainer.max_steps must be an int >= -1, got 'abc'"),
        (lambda t: "ckpt_path=last", "ckpt_path=last: no "),
        (lambda t: f"ckpt_path={_random_bytes(t / 'random.ckpt')}", "is not a readable checkpoint"),
    ],
    ids=["ro-checkpoints", "ro-models", "ro-run-dir", "ro-mlflow", "seed-abc", "threads-minus-1",
         "malicious-ckpt", "name-with-slash", "max-steps-abc", "last-without-checkpoint",
         "random-bytes-ckpt"],  # fmt: skip
)
def test_bad_inputs_are_refused_in_one_line_before_anything_is_written(tmp_path, override, needle):
    work = tmp_path / "work"
    proc = fault(work, override(tmp_path))
    assert proc.returncode == 2
    assert needle in one_line_error(proc.stderr)
    assert sorted(p.name for p in work.iterdir()) == []  # no store, no run folder, no checkpoint
    assert not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------------ items 2, 5, 6, 9: runs and their files
@pytest.mark.slow
def test_a_failed_start_never_repoints_the_resume_and_mlflow_tracking_uri_is_used(tmp_path):
    db = tmp_path / "elsewhere.db"
    environ = env(MLFLOW_TRACKING_URI=f"sqlite:///{db}")
    first = fault(tmp_path, "trainer.max_steps=4", environ=environ)
    assert first.returncode == 0, first.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists() and db.is_file()  # the variable named the store
    (good_run, _), = store(db)[0]
    # A start under the same name that fails at its first step: its MLflow run is FAILED,
    # but it saved no checkpoint, so the resume still belongs to the first run.
    failed = fault(tmp_path, "model.nan_loss_at_step=0", environ=environ)
    assert failed.returncode == 1 and "non-finite training loss" in one_line_error(failed.stderr)
    assert (tmp_path / "checkpoints" / "fault-seed0.mlflow_run_id").read_text() == good_run
    resumed = fault(tmp_path, "trainer.max_steps=8", "ckpt_path=last", environ=environ)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs, _, history = store(db)
    assert dict(runs)[good_run] == "FINISHED" and sorted(dict(runs).values()) == ["FAILED", "FINISHED"]
    steps = sorted({step for key, step, _ in history if key == "train/loss"})
    assert steps == list(range(8))


@pytest.mark.slow
def test_restored_at_the_end_exports_and_another_experiment_may_not_overwrite(tmp_path):
    export = tmp_path / "models" / "fault.pt"
    first = fault(tmp_path, f"model.export_path={export}", "trainer.max_steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    record = json.loads(export.with_suffix(".json").read_text())
    export.unlink()  # as if the run had died after its last checkpoint, before exporting
    resumed = fault(tmp_path, f"model.export_path={export}", "trainer.max_steps=4", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "nothing left to train; finishing the run (export)" in resumed.stdout + resumed.stderr
    assert export.is_file() and json.loads(export.with_suffix(".json").read_text()) == record
    assert record["step"] == 4 and record["mlflow_experiment"] == "cfg-distill" and record["mlflow_run_id"]
    other = fault(tmp_path, f"model.export_path={export}", "experiment=throwaway", "trainer.max_steps=2")
    assert other.returncode == 2
    line = one_line_error(other.stderr)
    assert f"run {record['mlflow_run_id']}" in line and "'cfg-distill'" in line and "'throwaway'" in line
    assert json.loads(export.with_suffix(".json").read_text()) == record


@pytest.mark.slow
def test_a_refused_job_of_a_sweep_says_so_at_once_and_the_others_run(tmp_path):
    """Hydra reports a multirun job's error only when the sweep ends: the job logs it first."""
    export = tmp_path / "models" / "fault.safetensors"
    first = fault(tmp_path, f"model.export_path={export}", "trainer.max_steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    proc = subprocess.run(
        [*command("trainer.max_steps=2", "experiment=throwaway"), "-m",
         f"model.export_path={export},{tmp_path}/models/other.safetensors"],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0  # Hydra re-raises the refused job's error at the end
    logs = {p.parent.name: p.read_text() for p in (tmp_path / "multirun").rglob("run.log")}
    refused = [text for text in logs.values() if "holds the export of run" in text]
    assert len(refused) == 1 and "(this job of the sweep stops; the others go on)" in refused[0]
    assert (tmp_path / "models" / "other.safetensors").is_file()  # the other job ran


@pytest.mark.slow
def test_a_path_in_a_sweep_override_does_not_nest_checkpoint_folders(tmp_path):
    proc = subprocess.run(
        [*command("trainer.max_steps=2"), "-m", f"model.export_path={tmp_path}/x/y.pt"],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = [p for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()]
    assert "/" not in folder.name and (folder / "last.ckpt").is_file()
    assert folder.name.startswith("fault-model.export_path=") and "_x_y.pt" in folder.name
