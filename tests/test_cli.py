"""The `python -m suite` front door: argv shim, bad input, MLflow runs, sweeps, failures, resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from suite.__main__ import UsageError, conf_dir, is_hydra_form, to_hydra_argv

REPO = Path(__file__).resolve().parent.parent
TOY = REPO / "tests" / "configs" / "toy.yaml"


# ---------------------------------------------------------------------------------------
# The argv shim (pure function, no processes)
# ---------------------------------------------------------------------------------------


def test_shim_rewrites_stage_and_config():
    argv = to_hydra_argv(["fit", "--config", str(TOY), "model.lr=0.5"])
    assert argv[:4] == ["--config-path", str(TOY.parent), "--config-name", "toy"]
    assert argv[4:6] == ["--config-dir", str(conf_dir())]
    assert argv[-1] == "stage=fit"
    assert "model.lr=0.5" in argv


@pytest.mark.parametrize("stage", ["fit", "validate", "test", "predict", "prepare"])
def test_shim_accepts_every_stage(stage):
    assert to_hydra_argv([stage, f"--config={TOY}"])[-1] == f"stage={stage}"


def test_shim_puts_hydra_flags_before_overrides():
    argv = to_hydra_argv(
        ["test", "--config", str(TOY), "a=1", "-m", "seed=0,1", "--cfg", "job", "--info", "b=2"]
    )
    assert argv[6:] == ["-m", "--cfg", "job", "--info", "a=1", "seed=0,1", "b=2", "stage=test"]
    argv = to_hydra_argv(["fit", "--config", str(TOY), "--info", "searchpath", "x=1"])
    assert argv[6:] == ["--info", "searchpath", "x=1", "stage=fit"]


def test_relative_config_is_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    argv = to_hydra_argv(["test", "--config", "tests/configs/toy.yaml"])
    assert argv[1] == str(TOY.parent)


def test_hydra_form_passes_through():
    assert is_hydra_form(["--config-path", "/x", "--config-name", "y", "hydra.run.dir=z"])
    assert is_hydra_form(["seed=1"])
    assert not is_hydra_form(["fit", "--config", "a.yaml"])
    assert not is_hydra_form([])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--config", str(TOY)], "unknown stage 'train'"),
        (["fit"], "missing --config"),
        (["fit", "--config"], "--config needs a file"),
        (["fit", "--config", "nope/absent.yaml"], "config file not found: nope/absent.yaml"),
        (["fit", "--config", "README.md"], "must be a .yaml file"),
        ([], "usage"),
    ],
)
def test_shim_rejects_bad_input(argv, needle):
    with pytest.raises(UsageError, match=None) as info:
        to_hydra_argv(argv)
    assert needle in str(info.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel:\n  lr: [1, 2\nseed: 0\n")
    with pytest.raises(UsageError) as info:
        to_hydra_argv(["fit", "--config", str(bad)])
    assert str(bad) in str(info.value)
    assert f"{bad}:4:" in str(info.value) or f"{bad}:3:" in str(info.value)


# ---------------------------------------------------------------------------------------
# End to end through a subprocess, as a user runs it
# ---------------------------------------------------------------------------------------


def suite(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO)])
    env["PYTHONWARNINGS"] = "ignore"
    proc = subprocess.run(
        [sys.executable, "-m", "suite", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"suite {args} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def runs(cwd: Path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cfg-distill")
    return client, client.search_runs([experiment.experiment_id])


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--config", str(TOY)], "unknown stage"),
        (["fit"], "missing --config"),
        (["fit", "--config", "absent.yaml"], "config file not found"),
    ],
)
def test_bad_command_lines_exit_cleanly_and_write_nothing(tmp_path, args, needle):
    proc = suite(tmp_path, *args, check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()


def test_unknown_override_key_is_one_message_no_traceback(tmp_path):
    proc = suite(tmp_path, "fit", "--config", str(TOY), "model.nonsense=1", check=False)
    assert proc.returncode != 0
    assert "nonsense" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_user_error_inside_the_job_is_one_line_and_run_never_created(tmp_path):
    proc = suite(tmp_path, "fit", "--config", str(TOY), "data.n=0", check=False)
    assert proc.returncode == 2
    assert "ToyData: n must be >= 1, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    client, found = runs(tmp_path)  # the store exists (made before the job), but no run
    assert found == []


def test_cfg_job_prints_the_composed_config(tmp_path):
    proc = suite(tmp_path, "fit", "--config", str(TOY), "seed=3", "--cfg", "job", "model.lr=0.2")
    assert "lr: 0.2" in proc.stdout
    assert "name: toy" in proc.stdout and "seed: 3" in proc.stdout and "stage: fit" in proc.stdout
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_single_run_lands_in_mlflow_and_resumes(tmp_path):
    suite(
        tmp_path,
        "fit",
        "--config",
        str(TOY),
        "seed=0",
        "trainer.max_steps=4",
        "callbacks.checkpoint.every_n_train_steps=2",
        "validate_first=true",
        "+model.report_run_status=true",
    )
    client, found = runs(tmp_path)
    assert len(found) == 1
    run = found[0]
    # validate_first: the initial weights are evaluated at step 0, before any update.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")][0] == 0
    # ... and the validate's end did not leave the run FINISHED while fit was running.
    assert run.data.metrics["toy/running_at_train_start"] == 1.0
    assert run.info.run_name == "toy-seed0"
    assert run.info.status == "FINISHED"
    assert run.data.params["model.lr"] == "0.1"
    assert run.data.params["seed"] == "0"
    assert run.data.tags["stage"] == "fit"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "config")}
    assert artifacts == {"config/config.yaml", "config/overrides.yaml"}
    assert (tmp_path / "checkpoints" / "toy-seed0" / "last.ckpt").is_file()

    # Resume: continues the step count and the same MLflow run.
    suite(
        tmp_path,
        "fit",
        "--config",
        str(TOY),
        "seed=0",
        "trainer.max_steps=8",
        "ckpt_path=last",
        "callbacks.checkpoint.every_n_train_steps=2",
        "validate_first=true",
        "model.lr=0.05",  # a changed hyper-parameter must not crash MLflow's param log
    )
    client, found = runs(tmp_path)
    assert len(found) == 1 and found[0].info.status == "FINISHED"
    val_steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")]
    assert val_steps.count(0) == 1  # a resume does not evaluate step 0 again
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert max(steps) >= 7 and min(steps) <= 1
    # The param keeps its first value (MLflow), and the run says what the resume changed.
    resumed = client.get_run(run.info.run_id)
    assert resumed.data.params["model.lr"] == "0.1"
    assert resumed.data.tags["resume_changed_params"] == "model.lr: 0.1 -> 0.05"


@pytest.mark.slow
def test_joblib_multirun_of_two_jobs_on_a_fresh_store(tmp_path):
    suite(
        tmp_path,
        "fit",
        "--config",
        str(TOY),
        "-m",
        "model.lr=0.1,0.05",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )
    _, found = runs(tmp_path)
    names = sorted(r.info.run_name for r in found)
    assert names == ["toy-model.lr=0.05", "toy-model.lr=0.1"]
    assert all(r.info.status == "FINISHED" for r in found)
    assert {r.data.params["model.lr"] for r in found} == {"0.1", "0.05"}
    assert all(r.data.tags["sweep"] == "toy" for r in found)


@pytest.mark.slow
def test_failing_job_ends_failed_and_other_sweep_jobs_finish(tmp_path):
    proc = suite(
        tmp_path, "fit", "--config", str(TOY), "-m", "model.fail_at_step=2,null", check=False
    )
    assert proc.returncode != 0
    _, found = runs(tmp_path)
    status = {r.data.params["model.fail_at_step"]: r.info.status for r in found}
    assert status == {"2": "FAILED", "None": "FINISHED"}


def test_report_command_reaches_the_report(tmp_path):
    proc = suite(tmp_path, "report", "--experiment", "nothing-here", check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "docs").exists()


def test_resume_changes_lists_changed_params_not_resume_knobs():
    from suite.run import resume_changes

    known = {
        "model.lr": "0.1",
        "seed": "0",
        "ckpt_path": "None",
        "trainer.max_steps": "4",
        "paths.root": "/a",
        "model.beta": "15",
    }
    new = {
        "model.lr": "0.05",
        "seed": "0",
        "ckpt_path": "last",
        "trainer.max_steps": "8",
        "paths.root": "/b",
        "model.beta": "15",
        "model.extra": "1",
    }
    assert resume_changes(known, new) == {"model.lr": ("0.1", "0.05")}
    assert resume_changes(known, known) == {}
