"""The Hydra task behind `python -m suite`: build a job from its config and run one stage.

`run(cfg)` instantiates, in this order, the data module, the model, the loggers, the
callbacks and the trainer (each from its `_target_`), logs the resolved config and the
overrides to MLflow, runs `trainer.<stage>`, and returns `cfg.optimized_metric` for
sweepers. On any exception the MLflow run is marked FAILED (never left RUNNING) and the
exception is re-raised. A user mistake found while building the job (a `ValueError`,
`FileNotFoundError` or `KeyError` from a constructor) is printed as one line; in a
multirun it is re-raised so the other jobs of the sweep still run and Hydra reports it.

`PrepareMlflowStore` is a Hydra callback run once in the launching process, before any
job is launched (by the basic, joblib or submitit launcher): it creates the sqlite database
and the experiment (`lightning_modules.tracking.prepare_mlflow_store`), because concurrent
first-time migrations of a fresh MLflow database from parallel jobs crash.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lightning_modules.tracking import (  # noqa: F401 (suite.run's API)
    prepare_mlflow_store,
    record_resume_changes,
    resume_changes,
)

log = logging.getLogger("suite")

# `${cwd:}` is the directory the command runs in. Unlike `${hydra:runtime.cwd}` it also
# resolves outside a running job (in Hydra callbacks, launchers and tests' compose calls).
if not OmegaConf.has_resolver("cwd"):
    OmegaConf.register_new_resolver("cwd", lambda: os.getcwd())


def python_attribute(dotted: str) -> Any:
    """`${pyattr:suite.music.tokens.VOCAB_SIZE}`: a constant of the code, not a copy of it."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


if not OmegaConf.has_resolver("pyattr"):
    OmegaConf.register_new_resolver("pyattr", python_attribute)

USER_ERRORS = (ValueError, FileNotFoundError, KeyError)

# conf/hydra/launcher/submitit_*.yaml: the plugin's names with the suite's defaults, checked
# against the plugin's schema (a misspelt key is refused); Hydra calls that deprecated.
warnings.filterwarnings("ignore", r"(?s)\s*'hydra/launcher/\w+' is validated against ConfigStore")


# ---------------------------------------------------------------------------------------
# MLflow store
# ---------------------------------------------------------------------------------------


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


class PrepareMlflowStore(Callback):
    """Hydra callback: create the MLflow store before the first job of a run or sweep (and,
    for a sweep, refuse in one line a launcher whose optional plugin is not installed)."""

    def _prepare(self, config: DictConfig) -> None:
        settings = mlflow_settings(config)
        if settings is not None:
            prepare_mlflow_store(**settings)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._prepare(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
        module = target.rpartition(".")[0]
        if module.startswith("hydra_plugins.") and not _importable(module):
            plugin = module.split(".")[1].replace("_", "-")  # e.g. hydra-ray-launcher
            print(f"error: hydra.launcher: {target} is not installed: `pip install {plugin}`",
                  file=sys.stderr)  # fmt: skip
            sys.exit(2)
        self._prepare(config)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


# ---------------------------------------------------------------------------------------
# Naming, params, resuming
# ---------------------------------------------------------------------------------------


def job_run_name(cfg: DictConfig) -> str:
    """`beta15-seed0` for a single run; `beta15-diversity.beta=5` for a multirun job."""
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN and hydra_cfg.job.override_dirname:
            return f"{cfg.name}-{hydra_cfg.job.override_dirname}"
    return str(cfg.run_name)


def run_tags(cfg: DictConfig) -> dict[str, str]:
    tags = {str(k): str(v) for k, v in (cfg.get("tags") or {}).items()}
    tags["stage"] = str(cfg.stage)
    tags["experiment_config"] = str(cfg.name)
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        tags["config_name"] = str(hydra_cfg.job.config_name)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            tags["sweep"] = str(hydra_cfg.job.config_name)
            tags["sweep_dir"] = str(hydra_cfg.sweep.dir)
    return tags


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists to `a.b.0.c` keys (MLflow params are flat)."""
    items: dict[str, Any] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            items.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            items.update(flatten(value, f"{prefix}{index}."))
    else:
        items[prefix[:-1]] = tree
    return items


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without Hydra's own section, flattened for MLflow params."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    params = {k: v for k, v in flatten(resolved).items() if not k.startswith("logger.")}
    # MLflow caps a param value at 6000 characters; long lists are kept in the config artifact.
    return {k: (str(v)[:500] if v is not None else "None") for k, v in params.items()}


def resume_from(cfg: DictConfig) -> tuple[str | None, str | None]:
    """Turn `ckpt_path` into a file and, for `last`, the MLflow run to continue."""
    ckpt = cfg.get("ckpt_path")
    if ckpt in (None, "", "null"):
        return None, None
    if ckpt != "last":
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"ckpt_path: checkpoint file not found: {ckpt}")
        return str(ckpt), None
    ckpt_dir = Path(cfg.paths.ckpt_dir)
    last = ckpt_dir / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(
            f"ckpt_path=last: no {last} to resume from (has run {cfg.run_name!r} saved a checkpoint?)"
        )
    run_id_file = run_id_path(cfg.paths.ckpt_dir)
    run_id = run_id_file.read_text().strip() if run_id_file.is_file() else None
    return str(last), run_id


def run_id_path(ckpt_dir: str) -> Path:
    """Beside (not inside) the checkpoint folder, which Lightning wants empty on a fresh run."""
    path = Path(ckpt_dir)
    return path.with_name(path.name + ".mlflow_run_id")


def remember_run_id(ckpt_dir: str, run_id: str) -> None:
    path = run_id_path(ckpt_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(run_id)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------


def instantiate_group(group: DictConfig | None, **kwargs: Any) -> list[Any]:
    """Instantiate every entry of a group like `callbacks:` or `logger:` that has a target."""
    if not group:
        return []
    return [
        hydra.utils.instantiate(spec, **kwargs)
        for spec in group.values()
        if spec is not None and "_target_" in spec
    ]


def log_run_start(loggers: list[Any], cfg: DictConfig, resumed: bool) -> None:
    """Params, resolved config and overrides; on resume, only what the first start lacked.

    MLflow refuses to change a logged param, so a resumed run keeps its original params
    and gets its new config as `config/resume-<time>/` artifacts instead; the params it
    changes are listed in the tag `resume_changed_params` (and a warning).
    """
    from lightning.pytorch.loggers import MLFlowLogger

    params = hyperparameters(cfg)
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    overrides = ""
    if HydraConfig.initialized():
        overrides = OmegaConf.to_yaml(OmegaConf.create(list(HydraConfig.get().overrides.task)))
    for logger in loggers:
        if not isinstance(logger, MLFlowLogger):
            logger.log_hyperparams(params)
            continue
        client, run_id = logger.experiment, logger.run_id
        folder = "config"
        if resumed:
            known = client.get_run(run_id).data.params
            record_resume_changes(client, run_id, known, params)
            params = {k: v for k, v in params.items() if k not in known}
            folder = f"config/resume-{time.strftime('%Y%m%d-%H%M%S')}"
            client.update_run(run_id, status="RUNNING")
        logger.log_hyperparams(params)
        client.log_text(run_id, resolved, f"{folder}/config.yaml")
        client.log_text(run_id, overrides, f"{folder}/overrides.yaml")
        remember_run_id(cfg.paths.ckpt_dir, run_id)


def _started_mlflow(loggers: list[Any]) -> list[Any]:
    """The MLflow loggers whose run exists (a logger creates its run on first use)."""
    from lightning.pytorch.loggers import MLFlowLogger

    return [lg for lg in loggers if isinstance(lg, MLFlowLogger) and lg._initialized]


def mark_failed(loggers: list[Any]) -> None:
    for logger in _started_mlflow(loggers):
        try:
            logger.experiment.set_terminated(logger.run_id, "FAILED")
        except Exception as error:  # noqa: BLE001 - never hide the original failure
            log.warning("could not mark MLflow run %s FAILED: %s", logger.run_id, error)


def mark_running(loggers: list[Any]) -> None:
    for logger in _started_mlflow(loggers):
        logger.experiment.update_run(logger.run_id, status="RUNNING")


def metric_value(metrics: dict[str, Any], name: str | None) -> float | None:
    if not name:
        return None
    if name not in metrics:
        # A finished job stays FINISHED; only a sweeper that optimises gets nothing back.
        log.warning("optimized_metric %r was not logged; logged: %s", name, sorted(metrics))
        return None
    value = float(metrics[name])
    return value if math.isfinite(value) else None


def run(cfg: DictConfig) -> float | None:
    """Build the job described by `cfg` and run `cfg.stage`; see the module docstring."""
    import lightning.pytorch as pl
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    cfg.run_name = job_run_name(cfg)
    if cfg.get("torch_threads"):
        # Parallel CPU jobs (joblib sweeps) must not oversubscribe the cores.
        import torch

        torch.set_num_threads(int(cfg.torch_threads))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    settings = mlflow_settings(cfg) or {}
    from lightning_modules import tracking

    # Artifacts built on demand (lightning_modules.artifacts) log their training here too.
    tracking.configure(settings.get("tracking_uri"), settings.get("experiment_name"))
    if cfg.stage == "prepare":
        return prepare(cfg)
    if cfg.stage == "diagnose":
        from lightning_modules.diagnose import diagnose

        d = cfg.get("diagnose") or {}
        diagnose(OmegaConf.to_container(cfg.generator, resolve=True),
                 OmegaConf.to_container(cfg.model.embedder, resolve=True)
                 if OmegaConf.is_config(cfg.model.embedder) else cfg.model.embedder,
                 str(cfg.data.eval_prompts), str(cfg.negative_prompt), float(cfg.gamma),
                 int(d.get("generations", 4)), int(d.get("body_candidates", 10)),
                 str(d.get("out", f"{cfg.paths.root}/docs/diagnostics.csv")), str(cfg.paths.root),
                 int(cfg.seed))  # fmt: skip
        return None
    ckpt_path, resume_run_id = resume_from(cfg)

    loggers: list[Any] = []
    try:
        log.info("data: %s", cfg.data.get("_target_"))
        datamodule = hydra.utils.instantiate(cfg.data)
        log.info("model: %s", cfg.model.get("_target_"))
        model = hydra.utils.instantiate(cfg.model)
        if resume_run_id:
            # Lightning would log the module's hparams again, and MLflow refuses a changed
            # param value: the first start logged them; log_run_start records the new config.
            model._log_hyperparams = False
            datamodule._log_hyperparams = False

        logger_kwargs = {"tags": run_tags(cfg)}
        if resume_run_id:
            logger_kwargs["run_id"] = resume_run_id
        loggers = instantiate_group(cfg.get("logger"), **logger_kwargs)
        callbacks = instantiate_group(cfg.get("callbacks"))
        # The step-0 point of the training curves (paper figure 2 starts from the base
        # model): a fresh fit first evaluates the initial weights like every later eval.
        validate_first = cfg.stage == "fit" and bool(cfg.get("validate_first")) and not ckpt_path
        # Fit evaluates under no_grad; a standalone validate under inference_mode would leave
        # inference tensors (metric states) that fit's evaluations cannot update.
        extra = {"inference_mode": False} if validate_first else {}
        trainer: pl.Trainer = hydra.utils.instantiate(
            cfg.trainer, logger=loggers or False, callbacks=callbacks, **extra
        )
        if rank_zero_only.rank == 0:
            log_run_start(loggers, cfg, resumed=bool(resume_run_id))

        stage = str(cfg.stage)
        if stage == "fit":
            if validate_first:
                trainer.validate(model, datamodule=datamodule)
                mark_running(loggers)  # validate's end marked the run FINISHED: fit goes on
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        else:
            getattr(trainer, stage)(model, datamodule=datamodule, ckpt_path=ckpt_path)
        return metric_value(dict(trainer.callback_metrics), cfg.get("optimized_metric"))
    except BaseException:
        mark_failed(loggers)
        raise


def prepare(cfg: DictConfig) -> None:
    """`python -m suite prepare --config X.yaml`: build every artifact job X needs, then stop.

    Artifacts are built by the `prepare_data` hooks of the job's DataModule and
    LightningModule (the Lightning idiom for one-time, rank-0 work), so `fit` builds the
    same artifacts when they are missing; this stage only runs those hooks.
    """
    datamodule = hydra.utils.instantiate(cfg.data) if cfg.get("data") is not None else None
    model = hydra.utils.instantiate(cfg.model)
    for part in (datamodule, model):
        hook = getattr(part, "prepare_data", None)
        if callable(hook):
            hook()
    log.info("prepare: every artifact of %s is built", cfg.name)
    return None


def user_error_message(error: BaseException) -> str | None:
    """One line for a user mistake (possibly wrapped by hydra.utils.instantiate), else None."""
    from hydra.errors import InstantiationException

    seen = error
    while isinstance(seen, InstantiationException) and seen.__cause__ is not None:
        seen = seen.__cause__
    if isinstance(seen, USER_ERRORS):
        text = seen.args[0] if isinstance(seen, KeyError) and seen.args else str(seen)
        return f"{type(seen).__name__}: {text}"
    return None


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> float | None:
    try:
        return run(cfg)
    except BaseException as error:
        message = user_error_message(error)
        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        if message is None or multirun:
            raise
        log.error("%s", message)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
