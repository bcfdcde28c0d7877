"""The run task's checks of a composed job config (`suite.preflight` does the checking).

Called twice for a single run: by the Hydra callback `suite.mlflow_store.PrepareMlflowStore`
before anything exists (so a refused run does not even create the MLflow store), and by
`suite.run.run` in the job (the only place for a multirun's jobs, whose names and folders
depend on the job). Everything here reads the config and the disk; nothing is written.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from suite import preflight
from suite.preflight import run_id_path


def check_values(cfg: DictConfig) -> tuple[int, int | None]:
    """The experiment name, the seed and the thread count; returns (seed, threads)."""
    preflight.check_name(cfg.name)
    seed = preflight.check_int("seed", cfg.seed)
    threads = preflight.check_int("torch_threads", cfg.get("torch_threads"), low=1, allow_none=True)
    if _select(cfg, "trainer.max_steps") is not None:
        preflight.check_int("trainer.max_steps", _select(cfg, "trainer.max_steps"), low=-1)
    return seed, threads


def resume_from(cfg: DictConfig) -> tuple[preflight.CheckpointInfo | None, str | None]:
    """`ckpt_path` checked (`preflight.inspect_checkpoint`) and, for `last`, the MLflow run
    to continue: the one named in the checkpoint, else in `<ckpt_dir>.mlflow_run_id`."""
    ckpt = cfg.get("ckpt_path")
    if ckpt in (None, "", "null"):
        return None, None
    for_fit = cfg.stage == "fit"
    if ckpt != "last":
        return preflight.inspect_checkpoint(str(ckpt), for_fit), None
    last = Path(cfg.paths.ckpt_dir) / "last.ckpt"
    if not last.is_file():
        raise preflight.Refused(
            f"ckpt_path=last: no {last} to resume from (has run {cfg.run_name!r} saved a checkpoint?)"
        )
    info = preflight.inspect_checkpoint(last, for_fit)
    run_id = info.mlflow_run_id
    if run_id is None and run_id_path(cfg.paths.ckpt_dir).is_file():
        run_id = run_id_path(cfg.paths.ckpt_dir).read_text().strip() or None
    return info, run_id


def _select(cfg: DictConfig, key: str):
    try:
        return OmegaConf.select(cfg, key, default=None)
    except Exception:  # noqa: BLE001 - `${hydra:...}` outside a running job
        return None


def job_outputs(cfg: DictConfig, settings: dict[str, str] | None) -> dict[str, tuple[str, bool]]:
    """{key: (path, is_file)} of everything the job writes."""
    outputs: dict[str, tuple[str, bool]] = {}
    if cfg.stage == "fit":
        ckpt_dir = str(_select(cfg, "paths.ckpt_dir") or "")
        for key, spec in (cfg.get("callbacks") or {}).items():
            dirpath = _select(spec, "dirpath") if spec is not None else None
            if dirpath:
                outputs["paths.ckpt_dir" if str(dirpath) == ckpt_dir else f"callbacks.{key}.dirpath"] = (str(dirpath), False)
    export = _select(cfg, "model.export_path")  # the student's, or a merged evaluator's
    if export:
        outputs["model.export_path"] = (str(export), True)
    if settings:
        outputs.update(preflight.store_outputs(settings["tracking_uri"], settings["artifact_location"]))
    root = _select(cfg, "trainer.default_root_dir")
    if root:
        outputs["trainer.default_root_dir"] = (str(root), False)
    return outputs


def check_job(cfg: DictConfig, settings: dict[str, str] | None, resume_run_id: str | None) -> None:
    """Every output the job writes is writable, and an export of another experiment is
    not overwritten; refused in one line before anything is created."""
    preflight.check_outputs(job_outputs(cfg, settings))
    export = _select(cfg, "model.export_path")
    if cfg.stage == "fit" and export and settings:
        preflight.check_export_owner(str(export), settings["experiment_name"], resume_run_id,
                                     _client(settings), f"run {preflight.safe_name(str(cfg.run_name))!r}")  # fmt: skip


def _client(settings: dict[str, str]):
    """A client on the store, or None when its sqlite file does not exist yet (MLflow
    would create it)."""
    import mlflow

    db = preflight.sqlite_path(settings["tracking_uri"])
    if db is not None and not db.is_file():
        return None
    return mlflow.MlflowClient(tracking_uri=settings["tracking_uri"])


def run_exists(settings: dict[str, str], run_id: str) -> bool:
    import mlflow

    client = _client(settings)
    if client is None:
        return False
    try:
        client.get_run(run_id)
        return True
    except mlflow.exceptions.MlflowException:
        return False


def precheck(cfg: DictConfig, settings: dict[str, str] | None) -> None:
    """What a single run can check before Hydra creates anything (the Hydra callback)."""
    check_values(cfg)
    run_name = preflight.safe_name(str(cfg.run_name))
    if run_name != str(cfg.run_name):
        cfg.run_name = run_name
    if cfg.stage not in ("fit", "validate", "test", "predict"):
        return
    _, resume_run_id = resume_from(cfg)
    check_job(cfg, settings, resume_run_id)
