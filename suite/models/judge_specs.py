"""How a job names an audio judge: a checkpoint, an artifact spec, or a model spec.

The policy jobs take `embedder`, `scorer` and `preference` (paper sections 2.2, 3.1) as
- a path to a suite checkpoint (`AudioEmbedder`, `MuLanScorer`, `PreferenceModel`);
- an artifact spec (`{seed, data, model, train}`) that `lightning_modules.artifacts`
  builds on demand (the embedded world's tiny judges);
- a model spec `{"name": ..., **arguments}` for a judge of real audio that is not trained
  here: `clap` (a CLAP model in a local directory, the MuLan-style scorer for MusicGen).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

MODEL_SPECS = {"clap": ("scorer", "suite.models.clap:ClapScorer")}


def is_model_spec(spec: Any) -> bool:
    return isinstance(spec, dict) and "name" in spec


def load_judge(kind: str, spec: Any, resolve: Callable[[str, Any], Any]) -> nn.Module:
    """The judge of `kind` named by `spec`; `resolve(kind, spec)` turns paths / artifact specs
    into a checkpoint file."""
    import importlib

    if is_model_spec(spec):
        name = spec["name"]
        if name not in MODEL_SPECS or MODEL_SPECS[name][0] != kind:
            ok = sorted(n for n, (k, _) in MODEL_SPECS.items() if k == kind)
            raise ValueError(f"{kind}: unknown model spec name {name!r}; for a {kind}: {ok or 'none'}")
        module, _, cls = MODEL_SPECS[name][1].partition(":")
        args = {k: v for k, v in spec.items() if k != "name"}
        return getattr(importlib.import_module(module), cls).from_spec(**args)
    from suite.models.preference import PreferenceModel
    from suite.models.scorer import MuLanScorer
    from suite.models.vit import AudioEmbedder

    classes = {"embedder": AudioEmbedder, "scorer": MuLanScorer, "preference": PreferenceModel}
    return classes[kind].from_checkpoint(resolve(kind, spec))
