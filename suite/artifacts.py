"""Cached artifacts under `artifacts/`: the corpus, the base model, the embedder, the scorers.

A job that needs an artifact asks for it by kind and config; `ensure` returns its folder,
building it first when it is missing (one log line says so, the builder shows a progress
bar); `find_built` only looks an already-built one up. Every artifact folder holds a `record.json`:

    {"kind": ..., "version": ..., "config": {...}, "source_hash": ..., "git_commit": ...,
     "created": ..., "build_seconds": ...}

The folder name is `<kind>-<hash of kind, version and config>`, so two configs never share
a folder and a config change builds a new artifact instead of silently reusing an old one.
`version` is the artifact kind's format/semantics version, bumped by developers when the
code that builds it changes meaning: an artifact whose record disagrees is stale and is
rebuilt (`on_stale="rebuild"`, the default) or refused with a message (`"refuse"`).
`source_hash` (a hash of the builder's source files) is recorded for provenance; when it
differs but the version agrees, the artifact is used and one warning line says so.

Folders are built in a temporary sibling and renamed into place, so an interrupted build
never leaves a half-written artifact that a later job would trust. A lock file makes
parallel jobs of a sweep wait for one build instead of racing to make the same artifact.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("suite.artifacts")

RECORD = "record.json"


class StaleArtifactError(RuntimeError):
    """An artifact on disk was made by code of another version."""


def project_root(start: Path | None = None) -> Path:
    """The nearest ancestor holding `pyproject.toml` (the checkout); the cwd as a fallback."""
    here = (start or Path(__file__)).resolve()
    for parent in [here, *here.parents]:
        if (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def default_root() -> Path:
    return Path(os.environ.get("SUITE_ARTIFACTS", project_root() / "artifacts"))


def canonical(config: Any) -> str:
    """A stable JSON text of a config (sorted keys), the input of the folder hash."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(kind: str, version: int, config: dict[str, Any]) -> str:
    text = f"{kind}|{version}|{canonical(config)}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def source_hash(files: Iterable[str | Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(f) for f in files):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=project_root(),
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def artifact_dir(kind: str, version: int, config: dict[str, Any], root: Path | None = None) -> Path:
    return Path(root or default_root()) / f"{kind}-{config_hash(kind, version, config)}"


def read_record(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def find_built(kind: str, config: dict[str, Any], root: Path | None = None) -> Path | None:
    """The folder of an already-built artifact (kind, config), or None; never builds.

    For callers that may not import the builders (they hold each kind's version): a folder
    `<root>/<kind>-*` qualifies when its record names this kind and config and its name is
    the hash of kind, the record's version and config. The highest version wins.
    """
    text = canonical(config)
    found: list[tuple[int, Path]] = []
    for folder in Path(root or default_root()).glob(f"{kind}-*"):
        record = read_record(folder) if folder.is_dir() else None
        if not record or record.get("kind") != kind or canonical(record.get("config")) != text:
            continue
        version = record.get("version")
        if isinstance(version, int) and folder == artifact_dir(kind, version, config, root):
            found.append((version, folder))
    return max(found)[1] if found else None


@contextlib.contextmanager
def locked(folder: Path):
    """An exclusive lock on `<folder>.lock` (blocks while another process builds it)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(
    kind: str,
    version: int,
    config: dict[str, Any],
    build: Callable[[Path], None],
    *,
    sources: Iterable[str | Path] = (),
    root: Path | None = None,
    on_stale: str = "rebuild",
) -> Path:
    """Return the folder of the artifact (kind, version, config), building it if needed.

    `build(tmp_folder)` writes the artifact's files into an empty folder; `ensure` adds
    the record and renames the folder into place.
    """
    if on_stale not in ("rebuild", "refuse"):
        raise ValueError(f"ensure: on_stale must be 'rebuild' or 'refuse', got {on_stale!r}")
    folder = artifact_dir(kind, version, config, root)
    with locked(folder):
        sources = list(sources)
        current_source = source_hash(sources) if sources else None
        record = read_record(folder)
        if record is not None:
            if record.get("version") == version and record.get("kind") == kind:
                if current_source and record.get("source_hash") not in (None, current_source):
                    log.warning(
                        "%s at %s was built by other source (%s, now %s); same version %s, using it",
                        kind,
                        folder,
                        record.get("source_hash"),
                        current_source,
                        version,
                    )
                return folder
            reason = f"version {record.get('version')} on disk, code is version {version}"
            if on_stale == "refuse":
                raise StaleArtifactError(
                    f"stale {kind} artifact at {folder}: {reason}; delete it or rebuild with "
                    f"`python -m suite prepare --config ...`"
                )
            log.info("rebuilding %s at %s (%s)", kind, folder, reason)
        elif folder.exists():
            log.info("rebuilding %s at %s (no valid %s)", kind, folder, RECORD)
        else:
            log.info("building %s -> %s (not cached yet)", kind, folder)

        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        start = time.time()
        try:
            build(tmp)
            record = {
                "kind": kind,
                "version": version,
                "config": json.loads(canonical(config)),
                "source_hash": current_source,
                "git_commit": git_commit(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "build_seconds": round(time.time() - start, 2),
            }
            (tmp / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("built %s in %.1f s", kind, time.time() - start)
        return folder
