"""Reading TokenLM checkpoints: `TokenLM.save` files and PretrainLM Lightning checkpoints.

The base model theta_init (paper section 3) is a `TokenLM` (`suite.models.lm`) saved by
`TokenLM.save` (`{format, config, state_dict}`) or by Lightning while pretraining; both
are read with `torch.load(weights_only=True)` (tensors and plain values only) and the
architecture is rebuilt from the stored config before the weights are loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from suite.models.lm import _FORMAT, CONFIG_KEYS, TokenLM


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, state_dict) from a `TokenLM.save` file or a Lightning checkpoint of PretrainLM.

    Uses `torch.load(weights_only=True)`: both formats hold only tensors and plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TokenLM checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file or unsafe pickle content
        raise ValueError(f"TokenLM: cannot read checkpoint {path}: {err}") from err
    if not isinstance(payload, dict):
        raise ValueError(f"TokenLM: {path} is not a checkpoint dict")
    if payload.get("format") == _FORMAT:
        return dict(payload["config"]), payload["state_dict"]
    if "state_dict" in payload and "hyper_parameters" in payload:  # Lightning checkpoint
        hp = payload["hyper_parameters"]
        config = {k: hp[k] for k in CONFIG_KEYS if k in hp}
        prefix = "model."
        state = {
            k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)
        }
        if not state or "vocab_size" not in config:
            raise ValueError(
                f"TokenLM: Lightning checkpoint {path} holds no TokenLM under 'model.' "
                f"with its config in hyper_parameters"
            )
        return config, state
    raise ValueError(
        f"TokenLM: {path} is neither a TokenLM.save file (format {_FORMAT}) nor a Lightning "
        f"checkpoint with 'state_dict' and 'hyper_parameters'; keys: {sorted(payload)[:10]}"
    )


def load_lm(
    path: str | os.PathLike,
    expected_config: dict[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> TokenLM:
    """Rebuild a TokenLM from a checkpoint (`TokenLM.save` file or PretrainLM Lightning ckpt).

    If `expected_config` is given, any differing architecture key is refused (ValueError
    naming the keys and both values) instead of silently loading another model.
    """
    config, state_dict = read_checkpoint(path)
    if expected_config is not None:
        diff = [
            f"{k}: checkpoint {config.get(k)!r} vs expected {v!r}"
            for k, v in expected_config.items()
            if config.get(k) != v
        ]
        if diff:
            raise ValueError(f"load_lm: {path} is of another architecture: " + "; ".join(diff))
    model = TokenLM.from_config(config)
    model.load_state_dict_checked(state_dict)
    return model.to(map_location).eval()
