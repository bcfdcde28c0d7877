"""Running `python -m suite ...` from a test: a subprocess with its own MLflow store and run
folder under `tmp`, one torch thread, and the repository (plus tests/) on PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_suite(*args: str, tmp: Path, extra: tuple[str, ...] = (), timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO)])
    common = ["torch_threads=1", f"paths.mlflow_db={tmp / 'mlflow.db'}",
              f"paths.mlflow_artifacts={tmp / 'mlart'}", f"hydra.run.dir={tmp / 'out'}", *extra]  # fmt: skip
    return subprocess.run([sys.executable, "-m", "suite", *args, *common], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def mlflow_runs(tmp: Path):
    """Every run of the test's store."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])
