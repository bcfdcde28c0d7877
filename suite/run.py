"""The Hydra task behind `python -m suite`: build a job from its config and run one stage.

`run(cfg)` first checks what a mistake would cost a run (`suite.preflight`): the seed and
thread count, the run name (made safe for file names), `ckpt_path` (loaded weights-only,
finite, resumable) and every output folder (checkpoints, export, MLflow store, run folder:
writable; an export of another MLflow experiment is not overwritten). Then it
instantiates, in this order, the data module, the model, the loggers, the callbacks and
the trainer (each from its `_target_`), logs the resolved config and the overrides to
MLflow, runs `trainer.<stage>`, and returns `cfg.optimized_metric` for sweepers.

How it ends is `suite.run_end`'s: a user mistake is one line and exit 2 (in a multirun it
is re-raised so the other jobs of the sweep still run and Hydra reports it); a detected
failure (non-finite step, lost checkpoint) is one line, MLflow FAILED with the line as the
run's `failure` tag, exit 1; SIGINT / SIGTERM write a checkpoint and end KILLED, exit 130 /
143 (`lightning_modules.interrupts`); any other exception ends FAILED (never RUNNING).

Resuming (`ckpt_path=last`) continues the MLflow run named in the checkpoint, deletes the
metric points the killed run logged past the checkpoint (`tracking.truncate_metrics`), and
completes a run restored at its last step (final evaluation, export; Lightning skips both).
The MLflow store is `suite.mlflow_store`'s (`MLFLOW_TRACKING_URI` honoured).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import time
import warnings
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lightning_modules import interrupts
from lightning_modules.tracking import (  # noqa: F401 (suite.run's API)
    prepare_mlflow_store,
    record_resume_changes,
    resume_changes,
)
from suite import preflight
from suite.mlflow_store import (  # noqa: F401 (suite.run's API; conf/_base_.yaml names it)
    PrepareMlflowStore,
    mlflow_settings,
    task_overrides,
    use_env_tracking_uri,
)
from suite.preflight import remember_run_id, run_id_path  # noqa: F401 (suite.run's API)
from suite.run_checks import check_job, check_values, resume_from, run_exists  # noqa: F401 (API)

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

# conf/hydra/launcher/submitit_*.yaml: the plugin's names with the suite's defaults, checked
# against the plugin's schema (a misspelt key is refused); Hydra calls that deprecated.
warnings.filterwarnings("ignore", r"(?s)\s*'hydra/launcher/\w+' is validated against ConfigStore")


# ---------------------------------------------------------------------------------------
# Naming, params, resuming
# ---------------------------------------------------------------------------------------


def job_run_name(cfg: DictConfig) -> str:
    """`beta15-seed0` for a single run; `beta15-diversity.beta=5` for a multirun job; safe as
    one file name (a path in an override must not nest checkpoint folders)."""
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN and hydra_cfg.job.override_dirname:
            return preflight.safe_name(f"{cfg.name}-{hydra_cfg.job.override_dirname}")
    return preflight.safe_name(str(cfg.run_name))


def run_tags(cfg: DictConfig) -> dict[str, str]:
    tags = {str(k): str(v) for k, v in (cfg.get("tags") or {}).items()}
    tags["stage"] = str(cfg.stage)
    tags["experiment_config"] = str(cfg.name)
    if OmegaConf.select(cfg, "artifacts.corpus") is not None:  # the music world's artifacts
        from suite.music.corpus import WORLD_VERSION

        # numbers from different worlds must not meet in one report (suite.report_runs.one_world)
        tags["music_world_version"] = WORLD_VERSION
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


def log_run_start(loggers: list[Any], cfg: DictConfig, resumed: bool, from_step: int = 0) -> None:
    """Params, resolved config and overrides; on resume, only what the first start lacked.

    MLflow refuses to change a logged param, so a resumed run keeps its original params
    and gets its new config as `config/resume-<time>/` artifacts instead; the params it
    changes are listed in the tag `resume_changed_params` (and a warning). A resume from
    global step `from_step` deletes the run's metric points at steps >= `from_step` (a run
    killed after its checkpoint logged steps the resume redoes).
    """
    from lightning.pytorch.loggers import MLFlowLogger

    from lightning_modules.tracking import truncate_metrics

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
            if "failure" in client.get_run(run_id).data.tags:
                client.delete_tag(run_id, "failure")  # it is running again
            if from_step > 0:
                dropped = truncate_metrics(client, run_id, from_step)
                if dropped is None:
                    log.warning("this MLflow store cannot delete metrics: points the stopped run "
                                "logged at steps >= %d may appear twice", from_step)  # fmt: skip
                    client.set_tag(run_id, "resume_metric_overlap_from_step", str(from_step))
                elif dropped:
                    log.info("resume: removed %d metric points at steps >= %d that the stopped "
                             "run logged after its checkpoint", dropped, from_step)  # fmt: skip
        logger.log_hyperparams(params)
        client.log_text(run_id, resolved, f"{folder}/config.yaml")
        client.log_text(run_id, overrides, f"{folder}/overrides.yaml")


def mark_running(loggers: list[Any]) -> None:
    from lightning.pytorch.loggers import MLFlowLogger

    for logger in (lg for lg in loggers if isinstance(lg, MLFlowLogger) and lg._initialized):
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

    from suite.run_end import FitWatcher, end_runs, finish_restored_fit

    cfg.run_name = job_run_name(cfg)
    seed, threads = check_values(cfg)
    if threads:
        # Parallel CPU jobs (joblib sweeps) must not oversubscribe the cores.
        import torch

        torch.set_num_threads(threads)
    pl.seed_everything(seed, workers=True, verbose=False)
    if use_env_tracking_uri(cfg, task_overrides()):
        log.info("MLflow store: %s (MLFLOW_TRACKING_URI)", cfg.paths.mlflow_uri)
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
                 str(d.get("prompts") or cfg.data.eval_prompts), str(cfg.negative_prompt), float(cfg.gamma),
                 int(d.get("generations", 4)), int(d.get("body_candidates", 10)),
                 str(d.get("out", f"{cfg.paths.root}/docs/diagnostics.csv")), str(cfg.paths.root),
                 seed, *(OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                         for v in (cfg.model.get("scorer"), cfg.model.get("preference"))),
                 seeds=list(d["seeds"]) if d.get("seeds") is not None else None)  # fmt: skip
        return None
    ckpt, resume_run_id = resume_from(cfg)
    if resume_run_id and settings and not run_exists(settings, resume_run_id):
        log.warning("the checkpoint's MLflow run %s is not in %s: resuming into a new run",
                    resume_run_id, settings["tracking_uri"])  # fmt: skip
        resume_run_id = None
    check_job(cfg, settings, resume_run_id)
    ckpt_path = ckpt.path if ckpt else None

    loggers: list[Any] = []
    trainer: pl.Trainer | None = None
    interrupts.install()
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
        watcher = FitWatcher()
        callbacks = [*instantiate_group(cfg.get("callbacks")), watcher]
        # The step-0 point of the training curves (paper figure 2 starts from the base
        # model): a fresh fit first evaluates the initial weights like every later eval.
        validate_first = cfg.stage == "fit" and bool(cfg.get("validate_first")) and not ckpt_path
        # Fit evaluates under no_grad; a standalone validate under inference_mode would leave
        # inference tensors (metric states) that fit's evaluations cannot update.
        extra = {"inference_mode": False} if validate_first else {}
        trainer = hydra.utils.instantiate(
            cfg.trainer, logger=loggers or False, callbacks=callbacks, **extra
        )
        if rank_zero_only.rank == 0:
            log_run_start(loggers, cfg, resumed=bool(resume_run_id),
                          from_step=ckpt.global_step if ckpt else 0)  # fmt: skip

        stage = str(cfg.stage)
        if stage == "fit":
            if validate_first:
                trainer.validate(model, datamodule=datamodule)
                mark_running(loggers)  # validate's end marked the run FINISHED: fit goes on
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
            finish_restored_fit(trainer, model, datamodule, watcher, ckpt.global_step if ckpt else None)
        else:
            getattr(trainer, stage)(model, datamodule=datamodule, ckpt_path=ckpt_path)
        if interrupts.PENDING.signum is not None:  # a signal during the very last hook
            raise interrupts.RunInterrupted(interrupts.PENDING.signum)
        return metric_value(dict(trainer.callback_metrics), cfg.get("optimized_metric"))
    except BaseException as error:
        error.suite_reason = end_runs(loggers, error, trainer)
        raise
    finally:
        interrupts.uninstall()


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


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> float | None:
    try:
        return run(cfg)
    except BaseException as error:
        from suite.run_end import exit_status

        ending = exit_status(error)
        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        if ending is not None and multirun:
            # The launcher reports a job's error only when the whole sweep has ended (hours
            # later for a long one): say it now, in the job's log and on the console.
            log.error("%s (this job of the sweep stops; the others go on)", ending[1])
        if ending is None or multirun:
            raise
        status, message = ending
        log.error("%s", message)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(status)
