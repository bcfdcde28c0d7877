"""Generators behind one interface (`Policy`), built from plain specs.

A job names its generator with a spec `{"name": ..., **arguments}`: `name` is a key of
`REGISTRY` (`music`, the embedded world's TokenLM; `musicgen`, MusicGen in transformers) or a `module:Class` path to any
`Policy` subclass (a user's own model, the tests' two-codebook policy). `build_policy`
imports the class and calls its `from_spec(**arguments)`. Spec values that name a built
artifact (`Policy.ARTIFACTS`) must already be resolved to paths by the caller (the jobs do
it in `lightning_modules`, which may build artifacts; nothing here trains anything).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from suite.policies.base import Oracle, Policy, TextCond

REGISTRY: dict[str, str] = {
    "music": "suite.policies.music:MusicPolicy",
    "musicgen": "suite.policies.musicgen:MusicGenPolicy",
}

__all__ = ["REGISTRY", "Oracle", "Policy", "TextCond", "build_policy", "policy_class"]


def policy_class(name: str) -> type[Policy]:
    """The Policy subclass a spec's `name` points to (registry key or `module:Class`)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"policy: name must be one of {sorted(REGISTRY)} or 'module:Class', got {name!r}")
    target = REGISTRY.get(name, name)
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(
            f"policy: unknown name {name!r}; expected one of {sorted(REGISTRY)} or 'module:Class'"
        )
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"policy: cannot import {target!r} for name {name!r}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise ValueError(f"policy: {target!r} is not a suite.policies.Policy subclass")
    return cls


def build_policy(spec: Mapping[str, Any]) -> Policy:
    """Build a policy from `{"name": ..., **arguments}` (module docstring); eval mode."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(f"policy: a spec must be a mapping with a 'name', got {spec!r}")
    args = {k: v for k, v in spec.items() if k != "name"}
    cls = policy_class(spec["name"])
    try:
        policy = cls.from_spec(**args)
    except TypeError as err:
        raise ValueError(f"policy {spec['name']!r}: bad arguments {sorted(args)}: {err}") from err
    return policy.eval()
