"""Scale-out configs: Hydra's submitit launchers (local, SLURM), the optional Ray launcher
(conf/hydra/launcher/) and `trainer=fsdp`; a 2-job sweep through submitit's local executor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import suite.run  # noqa: F401  (the ${cwd:} resolver; silences the launcher schema notice)

REPO = Path(__file__).resolve().parent.parent
TOY = REPO / "tests" / "configs" / "toy.yaml"
LAUNCHERS = "hydra_plugins.hydra_submitit_launcher.submitit_launcher"


def compose_experiment(name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(
    "launcher, target, settings",
    [
        ("submitit_local", f"{LAUNCHERS}.LocalLauncher", {"timeout_min": 720, "gpus_per_node": 0}),
        ("submitit_slurm", f"{LAUNCHERS}.SlurmLauncher",
         {"timeout_min": 720, "gpus_per_node": 1, "cpus_per_task": 8, "tasks_per_node": 1}),
        ("ray", "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher", {}),
    ],  # fmt: skip
)
def test_launcher_configs_compose_with_the_suites_defaults(launcher, target, settings):
    cfg = compose_experiment("beta15", [f"hydra/launcher={launcher}"])
    node = cfg.hydra.launcher
    assert node._target_ == target
    assert {k: node[k] for k in settings} == settings
    assert cfg.hydra.callbacks.mlflow_store._target_ == "suite.run.PrepareMlflowStore"
    first = (REPO / "conf" / "hydra" / "launcher" / f"{launcher}.yaml").read_text().splitlines()[0]
    assert first.startswith("# Run: python -m suite ")
    if launcher != "ray":  # the plugin is a dependency: the launcher class is there
        assert hydra.utils.get_class(target).__name__ == target.rsplit(".", 1)[1]


def test_a_misspelt_submitit_setting_is_refused():
    with pytest.raises(Exception, match="Could not override 'hydra.launcher.timeout_minutes'"):
        compose_experiment("beta15", ["hydra/launcher=submitit_slurm",
                                      "hydra.launcher.timeout_minutes=5"])  # fmt: skip


def test_fsdp_trainer_builds_lightnings_fsdp_strategy():
    from lightning.pytorch.strategies import FSDPStrategy

    cfg = compose_experiment("beta15", ["trainer=fsdp"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.devices == -1
    assert cfg.trainer.precision == "bf16-mixed"
    strategy = hydra.utils.instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy._state_dict_type == "full"
    assert strategy._timeout.total_seconds() == 3600


@pytest.mark.slow
def test_submitit_local_sweep_of_two_jobs_lands_finished_in_mlflow(tmp_path):
    """The store is made by PrepareMlflowStore in the launching process, then both jobs run
    at once in submitit's local executor (their own processes) and end FINISHED."""
    import mlflow

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]),
               PYTHONWARNINGS="ignore")  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "suite", "fit", "--config", str(TOY), "-m", "model.lr=0.1,0.05",
         "hydra/launcher=submitit_local", "torch_threads=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Submitit 'local' sweep output dir" in proc.stdout + proc.stderr
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cfg-distill")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    found = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in found) == ["toy-model.lr=0.05", "toy-model.lr=0.1"]
    assert all(r.info.status == "FINISHED" for r in found)
    assert all(r.data.tags["sweep"] == "toy" for r in found)
    # each job ran in its own submitit process, with its log in the sweep folder
    logs = list((tmp_path / "multirun").glob("toy/*/.submitit/*/*_log.out"))
    assert len(logs) == 2
