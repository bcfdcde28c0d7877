"""Exported weights with provenance: safetensors + a JSON record (paper eq. 6 merges them).

A fine-tuned student or a merge is exported as the policy's TRAINABLE part only (all of
a small LM; the decoder of an encoder-decoder) in `<name>.safetensors`, with a record of
how it was made, stored twice: in the safetensors header (key `suite_export`) and beside
it in `<name>.json` for people and tools that do not read headers. The record holds at
least:

    format        "suite.export/1"
    kind          "student" | "merge" | ...
    policy        the policy's name and architecture (what the weights fit)
    base_hash     hash of the base model theta_init's trainable weights
    weights_hash  hash of the exported weights (checked on load: a tampered file is refused)

plus what the producer knows (beta, gamma, temperature, seed, MLflow run id; sources and
lambdas for merges). Merge recipes read the record, never the file name.

Both files are written to temporary names and renamed into place, so a failure leaves
nothing half-written. The suite's older `.pt` exports (`{format, config, state_dict}` of a
TokenLM) still load, with a one-line deprecation note and a record that knows nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

FORMAT = "suite.export/1"
_HEADER_KEY = "suite_export"
_LEGACY_MERGE_KEY = "merge_record"  # suite.merging.save_merged's older merged files
REQUIRED = ("kind", "policy", "base_hash")
_warned: set[str] = set()


def weights_hash(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 (first 16 hex digits) over the sorted keys, dtypes, shapes and bytes of a state."""
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def sidecar(path: str | os.PathLike) -> Path:
    """The JSON record beside an export: `x.safetensors` -> `x.json`."""
    return Path(path).with_suffix(".json")


def save_export(state: Mapping[str, torch.Tensor], path: str | os.PathLike, record: dict) -> Path:
    """Write `state` as safetensors with its provenance `record` (module docstring)."""
    from safetensors.torch import save_file

    from suite.audio_files import atomic_write

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_export: {path} must end in .safetensors")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"save_export: the record for {path} lacks {missing}")
    # safetensors refuses shared storage (tied embeddings): every tensor gets its own copy.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"save_export: refusing to export non-finite weights ({bad[:5]}) to {path}")
    full = {"format": FORMAT, **record, "weights_hash": weights_hash(tensors)}
    try:
        text = json.dumps(full, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise TypeError(f"save_export: the record for {path} is not JSON-serialisable: {err}") from err
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={_HEADER_KEY: text}))
    atomic_write(sidecar(path), lambda tmp: Path(tmp).write_text(json.dumps(full, indent=2,
                                                                             sort_keys=True) + "\n"))  # fmt: skip
    return path


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance record of an export (from its header), without loading the weights."""
    from safetensors import safe_open

    path = _existing(path)
    if path.suffix == ".pt":
        return _legacy_record(path, None)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad file
        raise ValueError(f"export {path} cannot be read: truncated or not safetensors ({err})") from err
    return _record_from_metadata(path, metadata)


def load_export(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """`(state on CPU, record)` of an export; refuses a corrupt or tampered file (ValueError)."""
    from safetensors.torch import load_file

    path = _existing(path)
    if path.suffix == ".pt":
        return _load_legacy(path)
    record = read_record(path)
    try:
        state = load_file(str(path))
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"export {path} cannot be read: truncated or corrupt ({err})") from err
    want = record.get("weights_hash")
    if want is not None and weights_hash(state) != want:
        raise ValueError(
            f"export {path}: its weights do not match the hash in its record "
            f"({weights_hash(state)} vs {want}); the file was modified after it was written"
        )
    return state, record


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"export not found: {path}")
    return path


def _record_from_metadata(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    if _HEADER_KEY in metadata:
        return json.loads(metadata[_HEADER_KEY])
    if _LEGACY_MERGE_KEY in metadata:  # a merge written by suite.merging.save_merged
        old = json.loads(metadata[_LEGACY_MERGE_KEY])
        _deprecated(path, "a merged file without a provenance record")
        return {"format": "legacy-merge", "kind": "merge", "policy": None, "base_hash": None,
                "sources": old.get("sources"), "coefficients": old.get("coefficients"),
                "architecture": old.get("config")}  # fmt: skip
    raise ValueError(f"export {path} has no '{_HEADER_KEY}' record; was it written by the suite?")


def _deprecated(path: Path, what: str) -> None:
    if str(path) not in _warned:
        _warned.add(str(path))
        log.warning("%s is %s (deprecated): it loads, but its beta and base model are unknown; "
                    "re-export it as .safetensors", path, what)  # fmt: skip


def _legacy_record(path: Path, config: dict | None) -> dict[str, Any]:
    return {"format": "legacy-pt", "kind": "unknown", "policy": None, "base_hash": None,
            "architecture": config}  # fmt: skip


def _load_legacy(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A `TokenLM.save` file (`{format, config, state_dict}`), the suite's old export."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt file or unsafe pickle content
        raise ValueError(f"export {path} cannot be read: {err}") from err
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise ValueError(f"export {path} is not a suite .pt export ({{format, config, state_dict}})")
    _deprecated(path, "an old .pt export")
    return dict(payload["state_dict"]), _legacy_record(path, payload.get("config"))
