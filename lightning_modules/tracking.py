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
  one), so the params a resume sets differently are listed in a tag and a warning;
- `truncate_metrics`: a run killed after its last checkpoint may have logged metrics for
  steps it will redo; a resume from global step c deletes the run's points at steps >= c
  (Lightning labels a point after the batch that made it, so everything a checkpoint at c
  knows is at steps < c), so the history has neither a gap nor a duplicate;
- `end_run`: the terminal status (FINISHED / FAILED / KILLED) and, for a failure, the
  one-line reason as the run's tag `failure`.
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


def experiment_name(module: Any) -> str | None:
    """The name of the MLflow experiment the module logs to, if any."""
    loggers = mlflow_loggers(module)
    if not loggers:
        return None
    try:
        return loggers[0].experiment.get_experiment(loggers[0].experiment_id).name
    except Exception:  # noqa: BLE001 - provenance only: never fail an export over it
        return None


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


def artifact_logger(kind: str, name: str, spec: Mapping[str, Any], run_id: str | None = None,
                    from_step: int = 0):  # fmt: skip
    """An MLflow logger for building artifact `name` of `kind` (its spec logged as params,
    once: the jobs themselves log none), or False when the run task configured no store.
    With `run_id` (a resumed build, `lightning_modules.build_resume`) it continues that run,
    dropping the points it logged at steps >= `from_step` (past its last checkpoint)."""
    if not _STORE:
        return False
    from lightning.pytorch.loggers import MLFlowLogger

    logger = MLFlowLogger(
        experiment_name=_STORE["experiment"],
        run_name=f"prepare-{name}",
        tracking_uri=_STORE["uri"],
        tags={"stage": "prepare", "artifact": kind},
        run_id=run_id,
    )
    if run_id is not None:
        dropped = truncate_metrics(logger.experiment, run_id, from_step)
        _log.info("resuming MLflow run %s of %s from step %d (%s points dropped)", run_id, name,
                  from_step, "no" if dropped is None else dropped)  # fmt: skip
        return logger  # its params were logged when the build started
    logger.log_hyperparams(flat_params(dict(spec)))
    return logger


# ---------------------------------------------------------------------------------------
# Resume and end of a run
# ---------------------------------------------------------------------------------------


def truncate_metrics(client: Any, run_id: str, from_step: int) -> int | None:
    """Delete the run's metric points at steps >= `from_step`; the number deleted, or None
    when the store cannot delete (a tracking server: MLflow's API has no metric delete)."""
    store = client._tracking_client.store
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if isinstance(store, SqlAlchemyStore):
        return _truncate_sql(store, run_id, int(from_step))
    try:
        from mlflow.store.tracking.file_store import FileStore
    except ImportError:  # pragma: no cover - a future MLflow without the file store
        return None
    if isinstance(store, FileStore):
        return _truncate_files(store, run_id, int(from_step))
    return None


def _truncate_sql(store: Any, run_id: str, from_step: int) -> int:
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric

    with store.ManagedSessionMaker(read_only=False) as session:
        late = session.query(SqlMetric).filter(SqlMetric.run_uuid == run_id, SqlMetric.step >= from_step)
        keys = sorted({m.key for m in late.all()})
        count = late.delete(synchronize_session=False)
        for key in keys:  # latest_metrics is what the runs table and compare view show
            latest = (session.query(SqlLatestMetric)
                      .filter(SqlLatestMetric.run_uuid == run_id, SqlLatestMetric.key == key)
                      .one_or_none())  # fmt: skip
            best = (session.query(SqlMetric)
                    .filter(SqlMetric.run_uuid == run_id, SqlMetric.key == key)
                    .order_by(SqlMetric.step.desc(), SqlMetric.timestamp.desc(), SqlMetric.value.desc())
                    .first())  # fmt: skip
            if latest is None:
                continue
            if best is None:
                session.delete(latest)
            else:
                latest.value, latest.step = best.value, best.step
                latest.timestamp, latest.is_nan = best.timestamp, best.is_nan
    return count


def _truncate_files(store: Any, run_id: str, from_step: int) -> int:
    _, run_dir = store._find_run_root(run_id)
    count = 0
    for path in Path(run_dir, "metrics").rglob("*"):
        if not path.is_file():
            continue
        lines = path.read_text().splitlines()
        kept = [line for line in lines if int(line.split()[2]) < from_step]
        if len(kept) != len(lines):
            count += len(lines) - len(kept)
            path.write_text("".join(f"{line}\n" for line in kept))
    return count


def stale_export_note(record: Mapping[str, Any], uri: str | None = None) -> str | None:
    """Why an export may be stale: a later run under its name started after the run that
    wrote it and did not export (it failed, was stopped, or still runs); None if not."""
    run_id, name = record.get("mlflow_run_id"), record.get("name")
    uri = uri or tracking_uri()
    if not run_id or not name or not uri:
        return None
    try:
        client = _existing_client(uri, "")
        first = client.get_run(run_id)
        later = client.search_runs([first.info.experiment_id], f"attributes.run_name = '{name}'",
                                   order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
    except Exception:  # noqa: BLE001 - a note only: another store, a deleted run
        return None
    if not later or later[0].info.run_id == run_id or later[0].info.start_time <= first.info.start_time:
        return None
    newer = later[0].info
    return (f"it was written by run {run_id} at step {record.get('step')}, but run {newer.run_id} "
            f"under the same name started later and has not exported ({newer.status})")


def end_run(client: Any, run_id: str, status: str, reason: str | None = None) -> None:
    """Set the run's terminal status, with the one-line reason as its `failure` tag."""
    if reason:
        client.set_tag(run_id, "failure", reason[:5000])
    client.set_terminated(run_id, status)
