"""The one place the jobs write to MLflow (besides the run task's start-of-run params).

The run task (`suite.run`) opens the run, logs the resolved config as params and marks the
run FINISHED / FAILED; everything a job adds while it runs goes through here: params the
run lacks (never a second value for a logged param: MLflow refuses to change one), files
(WAV, MIDI, exports) as run artifacts, and the MLflow run of an artifact built on demand
(`lightning_modules.artifacts`), which goes to the store the run task `configure`d.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_STORE: dict[str, str] = {}


def configure(tracking_uri: str | None, experiment_name: str | None) -> None:
    """Where artifact builds log (set by the run task; None: they log nowhere)."""
    _STORE.clear()
    if tracking_uri:
        _STORE.update(uri=tracking_uri, experiment=experiment_name or "cfg-distill")


def mlflow_loggers(module: Any) -> list:
    """The MLflow loggers of a LightningModule's trainer (none outside a trainer)."""
    from lightning.pytorch.loggers import MLFlowLogger

    if getattr(module, "_trainer", None) is None:
        return []
    return [lg for lg in module.loggers if isinstance(lg, MLFlowLogger)]


def run_id(module: Any) -> str | None:
    """The MLflow run id the module logs to, if any."""
    loggers = mlflow_loggers(module)
    return loggers[0].run_id if loggers else None


def log_missing_params(module: Any, params: Mapping[str, Any]) -> None:
    """Log the params the run does not have yet (rank zero only); other loggers get all."""
    if getattr(module, "global_rank", 0) != 0 or getattr(module, "_trainer", None) is None:
        return
    mlflow = mlflow_loggers(module)
    for logger in module.loggers:
        if logger in mlflow:
            known = logger.experiment.get_run(logger.run_id).data.params
            missing = {k: v for k, v in params.items() if k not in known}
            if missing:
                logger.log_hyperparams(missing)
        else:
            logger.log_hyperparams(dict(params))


def log_files(module: Any, paths: Iterable[Path], artifact_path: str) -> None:
    """Log files as artifacts of the module's MLflow run(s) under `artifact_path`."""
    paths = list(paths)
    for logger in mlflow_loggers(module):
        for path in paths:
            logger.experiment.log_artifact(logger.run_id, str(path), artifact_path=artifact_path)


def flat_params(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts / lists as flat `a.b.0.c` params (MLflow params are flat strings)."""
    if isinstance(tree, Mapping):
        items: dict[str, str] = {}
        for key, value in tree.items():
            items.update(flat_params(value, f"{prefix}{key}."))
        return items
    if isinstance(tree, list | tuple):
        return flat_params({str(i): v for i, v in enumerate(tree)}, prefix)
    return {prefix[:-1]: str(tree)[:500]}


def artifact_logger(kind: str, name: str, spec: Mapping[str, Any]):
    """An MLflow logger for building artifact `name` of `kind` (its spec logged as params,
    once: the jobs themselves log none), or False when the run task configured no store."""
    if not _STORE:
        return False
    from lightning.pytorch.loggers import MLFlowLogger

    logger = MLFlowLogger(
        experiment_name=_STORE["experiment"],
        run_name=f"prepare-{name}",
        tracking_uri=_STORE["uri"],
        tags={"stage": "prepare", "artifact": kind},
    )
    logger.log_hyperparams(flat_params(dict(spec)))
    return logger
