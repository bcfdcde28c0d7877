"""The MLflow store of a job: where it is, and creating it once before any job runs.

`PrepareMlflowStore` is a Hydra callback run once in the launching process, before any
job is launched (by the basic, joblib or submitit launcher): it checks that the run folder
and the store can be written (one line and exit 2 otherwise, before anything is created),
then creates the sqlite database and the experiment (`lightning_modules.tracking.
prepare_mlflow_store`), because concurrent first-time migrations of a fresh MLflow database
from parallel jobs crash.

`MLFLOW_TRACKING_URI`, as MLflow users expect, names the store when the command line does
not (`paths.mlflow_db`, `paths.mlflow_uri` or `logger.mlflow.tracking_uri`): the config's
default `sqlite:///<root>/mlflow.db` is only the default (`use_env_tracking_uri`).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from lightning_modules.tracking import prepare_mlflow_store
from suite.preflight import Refused, check_outputs, store_outputs, tracking_uri_from_env

log = logging.getLogger("suite")


def mlflow_settings(cfg: DictConfig) -> dict[str, str] | None:
    """Tracking URI, experiment and artifact root of the config's MLflow logger, if any."""
    loggers = cfg.get("logger") or {}
    for spec in loggers.values():
        if spec is not None and str(spec.get("_target_", "")).endswith("MLFlowLogger"):
            return {
                "tracking_uri": str(spec.tracking_uri),
                "experiment_name": str(spec.experiment_name),
                "artifact_location": str(spec.get("artifact_location") or ""),
            }
    return None


def task_overrides(config: DictConfig | None = None) -> list[str]:
    """The command line's overrides (from the config given, else the running job's)."""
    if config is not None and OmegaConf.select(config, "hydra.overrides.task") is not None:
        return [str(o) for o in config.hydra.overrides.task]
    if HydraConfig.initialized():
        return [str(o) for o in HydraConfig.get().overrides.task]
    return []


def use_env_tracking_uri(cfg: DictConfig, overrides: list[str]) -> str | None:
    """Point the config's MLflow logger at `MLFLOW_TRACKING_URI` unless the command line
    chose a store; a remote store keeps its own artifact location. Returns the URI used."""
    uri = tracking_uri_from_env(overrides)
    if uri is None or OmegaConf.select(cfg, "paths.mlflow_uri") is None:
        return None
    with open_dict(cfg):
        cfg.paths.mlflow_uri = uri
        explicit = any(o.startswith("paths.mlflow_artifacts=") for o in overrides)
        if uri.startswith("sqlite:///") and not explicit and "mlflow_artifacts" in cfg.paths:
            # as for the default store: run artifacts beside the database
            cfg.paths.mlflow_artifacts = str(Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts")
        if "://" in uri and not uri.startswith(("sqlite:", "file:")):
            for spec in (cfg.get("logger") or {}).values():
                if spec is not None and str(spec.get("_target_", "")).endswith("MLFlowLogger"):
                    spec.artifact_location = None
    return uri


def refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class PrepareMlflowStore(Callback):
    """Hydra callback: check the run folder and the store, then create the store before the
    first job of a run or sweep (and, for a sweep, refuse in one line a launcher whose
    optional plugin is not installed)."""

    def _prepare(self, config: DictConfig, folder_key: str, single_run: bool) -> None:
        use_env_tracking_uri(config, task_overrides(config))
        settings = mlflow_settings(config)
        outputs: dict[str, tuple[str, bool]] = {}
        try:
            folder = OmegaConf.select(config, folder_key)
        except Exception:  # noqa: BLE001 - an interpolation only a running job resolves
            folder = None
        if folder:
            outputs[folder_key] = (str(folder), False)
        if settings is not None:
            outputs.update(store_outputs(settings["tracking_uri"], settings["artifact_location"]))
        try:
            check_outputs(outputs)
            if single_run:  # a sweep's jobs are checked in the job (their names vary)
                from suite.run_checks import precheck

                precheck(config, settings)
        except (Refused, ValueError, FileNotFoundError) as err:
            refuse(str(err) if isinstance(err, Refused) else f"{type(err).__name__}: {err}")
        if settings is not None:
            prepare_mlflow_store(**settings)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._prepare(config, "hydra.run.dir", single_run=True)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
        module = target.rpartition(".")[0]
        if module.startswith("hydra_plugins.") and not _importable(module):
            plugin = module.split(".")[1].replace("_", "-")  # e.g. hydra-ray-launcher
            refuse(f"hydra.launcher: {target} is not installed: `pip install {plugin}`")
        self._prepare(config, "hydra.sweep.dir", single_run=False)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False
