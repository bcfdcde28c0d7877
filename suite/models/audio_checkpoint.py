"""One-call saving and loading of the audio models (embedder, scorer, preference model).

DESIGN.md section 6: untrusted files are read with `torch.load(weights_only=True)`, and
nothing is half-written (temp file, then `os.replace`). Two layouts are accepted:

- the suite's export: `{"format": FORMAT, "class": name, "config": dict, "state_dict": ...}`;
- a Lightning `.ckpt` written by one of `lightning_modules/{embedder,scorer,preference}.py`:
  the model config is `hyper_parameters["model_config"]` and the weights are the
  `state_dict` entries under the `model.` prefix.

A checkpoint whose class or config differs from what the caller asked for is refused with a
ValueError that names the file and the differing keys, rather than loaded into a wrong model.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT = "cfg-distill-suite/audio-model/v1"


def save_model(model: torch.nn.Module, path) -> Path:
    """Write `model` (which has `.config.to_dict()`) atomically to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "class": type(model).__name__,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _flatten(data, prefix: str = "") -> dict:
    if not isinstance(data, dict):
        return {prefix: data}
    out = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_diff(saved: dict, wanted: dict) -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    a, b = _flatten(saved), _flatten(wanted)
    return [f"{k}: checkpoint={a.get(k)!r} requested={b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]  # fmt: skip


def read_checkpoint(path, map_location="cpu") -> tuple[str | None, dict, dict]:
    """-> (class name or None for Lightning files, config dict, model state_dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio model checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt file, pickle with forbidden globals ...
        raise ValueError(f"cannot read audio model checkpoint {path}: {err}") from err
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not an audio model checkpoint (top level is not a dict)")
    if payload.get("format") == FORMAT:
        return payload["class"], payload["config"], payload["state_dict"]
    if "state_dict" in payload and "hyper_parameters" in payload:
        hparams = payload["hyper_parameters"]
        if "model_config" not in hparams:
            raise ValueError(f"{path}: Lightning checkpoint without hyper_parameters.model_config")
        state = {k[6:]: v for k, v in payload["state_dict"].items() if k.startswith("model.")}
        return hparams.get("model_class"), dict(hparams["model_config"]), state
    raise ValueError(f"{path}: unknown checkpoint layout (keys {sorted(payload)[:8]})")


def load_model(cls, config_cls, path, config=None, map_location="cpu"):
    """Build `cls(config)` from the checkpoint at `path`, refusing any mismatch clearly."""
    saved_class, saved_cfg, state = read_checkpoint(path, map_location)
    if saved_class is not None and saved_class != cls.__name__:
        raise ValueError(f"{path} holds a {saved_class}, not a {cls.__name__}")
    if config is not None:
        diff = config_diff(saved_cfg, config.to_dict())
        if diff:
            raise ValueError(f"{path}: config mismatch for {cls.__name__}: " + "; ".join(diff))
    try:
        model = cls(config_cls.from_dict(saved_cfg))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: invalid {cls.__name__} config: {err}") from err
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit {cls.__name__}: {err}") from err
    return model.eval()
