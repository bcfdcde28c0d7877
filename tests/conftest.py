"""Shared pytest setup: keep torch on the 2 CI cores and runs deterministic."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# One thread: the tiny test models gain nothing from two, and one avoids oversubscribing
# the cores while CLI tests run jobs in subprocesses.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _no_leaked_mlflow_tracking_uri(monkeypatch):
    """Lightning's MLFlowLogger exports MLFLOW_TRACKING_URI into this process; the suite honours
    that variable, so without this the subprocesses of later tests would log to an earlier
    test's store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
