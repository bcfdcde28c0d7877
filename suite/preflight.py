"""Checks a job passes before anything is trained or written: one line per refusal.

The run task (`suite.run`) and its Hydra callback call these before the MLflow run exists
and before step 1, so a mistake costs seconds, never a run, and never touches another
run's files. Each refusal is a `Refused` (a `ValueError`) whose message names the key, the
value and what was expected; the run task prints it in one line and exits 2.

- `check_int`: top-level numbers (`seed=abc`, `torch_threads=-1`) named by their key;
- `safe_name`: run names become safe file names (a path in a sweep override must not nest
  checkpoint folders); `check_name` refuses an experiment `name` that is a path;
- `unwritable` / `check_outputs`: every folder a job writes (checkpoints, export, MLflow
  store and artifacts, run folder) is probed with a real temporary file in its nearest
  existing ancestor (permission bits alone mislead: root ignores them, a read-only mount
  does not), creating nothing;
- `inspect_checkpoint`: `ckpt_path` loads with `torch.load(weights_only=True)` (a file that
  asks to import code is refused and never run), is a Lightning checkpoint, has training
  state for a fit, and holds finite weights;
- `check_export_owner`: an export of another MLflow experiment is never overwritten;
- `tracking_uri_from_env`: `MLFLOW_TRACKING_URI` is the store unless the command line sets one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from hashlib import sha1
from pathlib import Path
from typing import Any


class Refused(ValueError):
    """A job refused before it started (printed as one line, exit status 2)."""


# ---------------------------------------------------------------------------------------
# Values and names
# ---------------------------------------------------------------------------------------


def check_int(key: str, value: Any, low: int | None = None, allow_none: bool = False) -> int | None:
    """`value` as an int (>= low), else `Refused` naming `key`."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, int) and not isinstance(value, bool) and (low is None or value >= low)
    if not ok:
        bound = f" >= {low}" if low is not None else ""
        none = " or null" if allow_none else ""
        raise Refused(f"{key} must be an int{bound}{none}, got {value!r}")
    return int(value)


_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+@-]+")


def safe_name(name: str, limit: int = 120) -> str:
    """A run name usable as one file name: no `/`, spaces or shell-hostile characters, at
    most `limit` characters (a long one keeps a hash of the whole name)."""
    safe = _UNSAFE.sub("_", str(name)).strip("._") or "run"
    if len(safe) > limit:
        safe = f"{safe[: limit - 9]}-{sha1(str(name).encode()).hexdigest()[:8]}"
    return safe


def check_name(name: Any) -> str:
    """The experiment `name` becomes folder and file names: it must not be a path."""
    text = str(name)
    if not text or "/" in text or "\\" in text or text.startswith(".") or "\0" in text:
        raise Refused(f"name must be a plain name (no '/', not starting with '.'), got {text!r}")
    return text


# ---------------------------------------------------------------------------------------
# Writable outputs
# ---------------------------------------------------------------------------------------


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def unwritable(path: str | os.PathLike, is_file: bool = False) -> str | None:
    """Why `path` (a folder, or a file when `is_file`) cannot be written, else None."""
    path = Path(path).expanduser()
    if is_file and path.is_dir():
        return f"{path} is a folder, not a file"
    if not is_file and path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    folder = path.parent if is_file else path
    base = _nearest_existing(folder)
    if not base.is_dir():
        return f"{base} is a file, so {folder} cannot be created"
    try:
        with tempfile.NamedTemporaryFile(dir=base, prefix=".suite-write-probe-"):
            pass
    except OSError as err:
        where = "" if base == folder else f" (its nearest existing folder {base})"
        return f"{folder}{where} is not writable: {err.strerror or err}"
    if is_file and path.is_file():
        try:
            with path.open("r+b"):
                pass
        except OSError as err:
            return f"{path} is not writable: {err.strerror or err}"
    return None


def check_outputs(outputs: dict[str, tuple[str | os.PathLike, bool]]) -> None:
    """`{key: (path, is_file)}`: refuse the first output that cannot be written."""
    for key, (path, is_file) in outputs.items():
        problem = unwritable(path, is_file)
        if problem:
            raise Refused(f"{key}: {problem}; nothing was run (make it writable or set {key}=...)")


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def store_outputs(tracking_uri: str, artifact_location: str = "") -> dict[str, tuple[str, bool]]:
    """The files and folders an MLflow store writes (local stores only)."""
    out: dict[str, tuple[str, bool]] = {}
    db = sqlite_path(tracking_uri)
    if db is not None:
        out["paths.mlflow_db"] = (str(db), True)
    elif tracking_uri.startswith("file:") or "://" not in tracking_uri:
        out["paths.mlflow_uri"] = (tracking_uri.removeprefix("file://").removeprefix("file:"), False)
    if artifact_location and "://" not in artifact_location:
        out["paths.mlflow_artifacts"] = (artifact_location, False)
    return out


def tracking_uri_from_env(task_overrides: list[str]) -> str | None:
    """`MLFLOW_TRACKING_URI` when set and the command line names no store of its own."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    keys = ("paths.mlflow_db", "paths.mlflow_uri", "logger.mlflow.tracking_uri", "logger=", "logger/")
    explicit = any(o.lstrip("+~").startswith(keys) for o in task_overrides)
    if explicit or not uri:
        return None
    return uri


# ---------------------------------------------------------------------------------------
# Checkpoints and exports
# ---------------------------------------------------------------------------------------


def run_id_path(ckpt_dir: str | os.PathLike) -> Path:
    """`<ckpt_dir>.mlflow_run_id`: beside (not inside) the checkpoint folder, which Lightning
    wants empty on a fresh run; written by `SafeCheckpoint` after a verified save only."""
    path = Path(ckpt_dir)
    return path.with_name(path.name + ".mlflow_run_id")


def remember_run_id(ckpt_dir: str | os.PathLike, run_id: str) -> None:
    path = run_id_path(ckpt_dir)
    if path.is_file() and path.read_text().strip() == run_id:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(run_id)
    os.replace(tmp, path)


@dataclass
class CheckpointInfo:
    path: str
    global_step: int
    mlflow_run_id: str | None


_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")


def _first_line(error: BaseException) -> str:
    """The error's first sentence (torch appends paragraphs of advice)."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    return text.splitlines()[0].split(". ")[0].strip().rstrip(".")


def inspect_checkpoint(path: str | os.PathLike, for_fit: bool = True) -> CheckpointInfo:
    """Load `ckpt_path` safely and check it can be resumed (see the module docstring)."""
    import pickle

    import torch

    path = Path(path)
    if path.is_dir():
        raise Refused(f"ckpt_path: {path} is a folder; give a .ckpt file or `last`")
    if not path.is_file():
        raise Refused(f"ckpt_path: checkpoint file not found: {path}")
    if path.stat().st_size == 0:
        raise Refused(f"ckpt_path: {path} is empty (0 bytes), not a checkpoint")
    corrupt = f"ckpt_path: {path} is not a readable checkpoint (truncated, corrupt or not a torch file"
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        raise Refused(f"{corrupt}: not a zip archive)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = _GLOBAL.search(str(err))
        if found is None:
            raise Refused(f"{corrupt}: {_first_line(err)})") from None
        raise Refused(f"ckpt_path: {path} refused: it asks to import `{found.group(1)}` when loaded, "
                      f"which a checkpoint never needs (loaded weights-only: nothing in it was "
                      f"run)") from None  # fmt: skip
    except Exception as err:  # noqa: BLE001 - any other failure: not a usable checkpoint
        raise Refused(f"{corrupt}: {_first_line(err)})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise Refused(f"ckpt_path: {path} is not a Lightning checkpoint (no state_dict)")
    if for_fit and ("loops" not in ckpt or "global_step" not in ckpt):
        raise Refused(f"ckpt_path: {path} holds weights but no training state: it cannot resume a fit")
    bad = [k for k, v in ckpt["state_dict"].items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]  # fmt: skip
    if bad:
        others = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path)
        raise Refused(f"ckpt_path: {path} holds non-finite weights ({', '.join(bad[:3])}): resuming "
                      f"would start from poison; resume from an earlier checkpoint "
                      f"({', '.join(others[-3:]) or 'none in ' + str(path.parent)})")  # fmt: skip
    resume = ckpt.get("suite_resume") or {}
    return CheckpointInfo(str(path), int(ckpt.get("global_step", 0)), resume.get("mlflow_run_id"))


def export_owner(export_path: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance record of an existing export (its `.json` sidecar), if any."""
    sidecar = Path(export_path).with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None


def check_export_owner(export_path: str, experiment: str, resumed_run: str | None,
                       client: Any = None, run_name: str = "this run") -> None:  # fmt: skip
    """Refuse to overwrite an export that a run of another MLflow experiment wrote."""
    record = export_owner(export_path)
    if not record or record.get("kind") != "student":
        return
    owner_run = record.get("mlflow_run_id")
    if owner_run and owner_run == resumed_run:
        return
    owner_experiment = record.get("mlflow_experiment")
    if owner_experiment is None and owner_run and client is not None:
        try:
            run = client.get_run(owner_run)
            owner_experiment = client.get_experiment(run.info.experiment_id).name
        except Exception:  # noqa: BLE001 - the run is in another store or was deleted
            owner_experiment = None
    if owner_experiment and owner_experiment != experiment:
        raise Refused(
            f"model.export_path: {export_path} holds the export of run {owner_run} (MLflow experiment "
            f"{owner_experiment!r}, step {record.get('step')}); {run_name} goes to experiment "
            f"{experiment!r} and would overwrite it: set model.export_path=<another .safetensors>"
        )
