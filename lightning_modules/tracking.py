"""The one place the jobs write to MLflow (besides the run task's start-of-run params).

The run task (`suite.run`) opens the run, logs the resolved config as params and marks the
run FINISHED / FAILED; everything a job adds while it runs goes through here: params the
run lacks (never a second value for a logged param: MLflow refuses to change one), files
(WAV, MIDI, exports with their provenance record) as run artifacts, and the MLflow run of
an artifact built on demand (`lightning_modules.artifacts`), which goes to the store the
run task `configure`d.

Also here, because they are MLflow and nothing else:
- `prepare_mlflow_store`: the database and the experiment, created once before any job
  (concurrent first-time migrations of a fresh sqlite database crash). Experiments get the
  tag `mlflow.experimentKind = custom_model_development`, which makes MLflow 3's UI open
  them on its training view (runs, metrics, charts) instead of the GenAI view (traces);
- `resolve_source`: a merge source named `runs:/<run_id>/<path>` (an export logged by a
  student run) downloaded into a local cache folder, refused in one line when the run or
  the file does not exist;
- `record_resume_changes`: a resumed run keeps its first params (MLflow never changes
  one), so the params a resume sets differently are listed in a tag and a warning.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_STORE: dict[str, str] = {}
_log = logging.getLogger("suite")

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # MLflow 3's training view (not GenAI's)
RUNS_SCHEME = "runs:/"
EXPORTS_ARTIFACT_PATH = "models"  # a student's export: runs:/<id>/models/<name>.safetensors


def configure(tracking_uri: str | None, experiment_name: str | None) -> None:
    """Where artifact builds log (set by the run task; None: they log nowhere)."""
    _STORE.clear()
    if tracking_uri:
        _STORE.update(uri=tracking_uri, experiment=experiment_name or "cfg-distill")


def tracking_uri() -> str | None:
    """The store the run task configured (else `MLFLOW_TRACKING_URI`; None: no store)."""
    return _STORE.get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or None


def prepare_mlflow_store(
    tracking_uri: str, experiment_name: str, artifact_location: str = ""
) -> str:
    """Create the MLflow database (running its migrations once) and the experiment, tagged
    with the training view's kind (also when it exists without the tag); return its id."""
    import mlflow

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        try:
            return client.create_experiment(
                experiment_name,
                artifact_location=artifact_location or None,
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        except mlflow.exceptions.MlflowException:
            # Another process created it between our look-up and our create: use theirs.
            experiment = client.get_experiment_by_name(experiment_name)
            if experiment is None:
                raise
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # a kind a user chose is kept
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


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


def log_export(module: Any, path: str | os.PathLike) -> list[str]:
    """Log an export (`x.safetensors` and its `x.json` record) as artifacts of the module's
    MLflow run(s) under `models/`; returns their `runs:/<id>/models/x.safetensors` URIs
    (also set as the run's tag `export`), which merge recipes accept as sources."""
    from suite.policies.exports import sidecar

    path = Path(path)
    files = [p for p in (path, sidecar(path)) if p.is_file()]
    log_files(module, files, EXPORTS_ARTIFACT_PATH)
    uris = []
    for logger in mlflow_loggers(module):
        uri = f"{RUNS_SCHEME}{logger.run_id}/{EXPORTS_ARTIFACT_PATH}/{path.name}"
        logger.experiment.set_tag(logger.run_id, "export", uri)
        uris.append(uri)
    return uris


def is_run_uri(source: Any) -> bool:
    return isinstance(source, str) and source.startswith(RUNS_SCHEME)


def split_run_uri(uri: str, where: str = "") -> tuple[str, str]:
    """`runs:/<run_id>/<path>` -> (run_id, path); ValueError naming the expected form."""
    run_id, _, path = uri.removeprefix(RUNS_SCHEME).strip("/").partition("/")
    path = path.strip("/")
    if not run_id or not path or ".." in Path(path).parts:
        raise ValueError(
            f"{where}source {uri}: expected runs:/<run_id>/<artifact path>, e.g. "
            f"runs:/<run_id>/{EXPORTS_ARTIFACT_PATH}/beta15-seed0.safetensors"
        )
    return run_id, path


def resolve_source(source: str, cache_dir: str | os.PathLike, where: str = "",
                   uri: str | None = None) -> str:  # fmt: skip
    """A merge source as a local file: a path is returned as it is; `runs:/<run_id>/<path>`
    is downloaded from the configured store (`uri`, else `tracking_uri()`) into
    `cache_dir/<run_id>/<path>` (kept while its size matches the logged artifact's).

    Refused in one line (FileNotFoundError) when there is no store, no such run or no such
    file in the run; ValueError for a malformed URI.
    """
    if not is_run_uri(source):
        return source
    run_id, path = split_run_uri(source, where)
    uri = uri or tracking_uri()
    if not uri:
        raise FileNotFoundError(
            f"{where}source {source}: no MLflow store to read it from (run with the mlflow "
            f"logger, or set MLFLOW_TRACKING_URI)"
        )
    client = _existing_client(uri, f"{where}source {source}: ")
    import mlflow

    try:
        client.get_run(run_id)
    except mlflow.exceptions.MlflowException as err:
        raise FileNotFoundError(
            f"{where}source {source}: no MLflow run {run_id!r} in {uri}"
        ) from err
    parent = str(Path(path).parent) if Path(path).parent != Path(".") else None
    listed = {a.path: a for a in client.list_artifacts(run_id, parent) if not a.is_dir}
    if path not in listed:
        have = sorted(listed) or ["nothing"]
        raise FileNotFoundError(
            f"{where}source {source}: run {run_id} has no artifact {path!r} "
            f"(under {parent or 'its root'}: {', '.join(have[:8])})"
        )
    target = Path(cache_dir) / run_id / path
    size = listed[path].file_size
    if target.is_file() and (size is None or target.stat().st_size == size):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        local = client.download_artifacts(run_id, path, dst_path=tmp)
        os.replace(local, target)  # atomic: parallel jobs may fetch the same export
    return str(target)


def _existing_client(uri: str, where: str):
    """An MlflowClient on `uri`, refusing a sqlite file that does not exist (MLflow would
    create an empty database)."""
    import mlflow

    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise FileNotFoundError(f"{where}no MLflow database at {db} ({uri})")
    return mlflow.MlflowClient(tracking_uri=uri)


# Keys a resume changes by design (where to resume from, how far to go, how many threads,
# the new job's output folder): not a change of the experiment, so not flagged.
RESUME_KEYS = ("ckpt_path", "trainer.max_steps", "trainer.max_epochs", "trainer.default_root_dir",
               "torch_threads")  # fmt: skip


def resume_changes(known: dict[str, str], params: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The logged params a resumed run now sets differently: {key: (first value, new value)}."""
    return {
        key: (known[key], str(value))
        for key, value in sorted(params.items())
        if key in known
        and known[key] != str(value)
        and key not in RESUME_KEYS
        and not key.startswith("paths.")
    }


def record_resume_changes(client: Any, run_id: str, known: dict[str, str], params: dict) -> None:
    """Warn, and tag the run, when a resume changes its hyper-parameters.

    MLflow keeps a param's first value, so without this the compare view would show the
    first start's value for a run whose later steps used another one.
    """
    changes = resume_changes(known, params)
    if not changes:
        return
    listing = "; ".join(f"{k}: {old} -> {new}" for k, (old, new) in changes.items())
    _log.warning("resuming run %s with changed hyper-parameters: %s", run_id, listing)
    client.set_tag(run_id, "resume_changed_params", listing[:5000])


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
