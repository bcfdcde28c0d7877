"""Merge recipes over exports: LERP (eq. 6), the uniform / weighted soup, SLERP.

A recipe names its sources: `base` (the base policy theta_init itself) or export files
(`suite.policies.exports`). `build_merged` loads every source's trainable weights and
provenance record, refuses sources fine-tuned from different base models (naming both
files and both hashes), merges the weights with `suite.merging` (which checks keys, shapes
and dtypes) and loads the result into a fork of the base policy. What each source is
(its beta, its label) comes from its record, never from its file name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from suite import merging
from suite.policies.base import Policy
from suite.policies.exports import load_export, weights_hash

BASE = "base"
METHODS = ("single", "lerp", "merge", "slerp")


@dataclass
class Source:
    """One source of a recipe: its label, file (None for the base), weights and record."""

    label: str
    path: Path | None
    state: dict[str, torch.Tensor] = field(repr=False)
    record: dict[str, Any]

    @property
    def beta(self) -> str:
        """The source's beta for MLflow's params: its record's, `base`, or `?` if unknown."""
        if self.path is None:
            return BASE
        beta = self.record.get("beta")
        if beta is None:
            return "?"
        return f"{float(beta):g}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_recipe(
    where: str, sources: Any, coefficients: Any, method: str, lam: Any
) -> tuple[list[str], list[float] | None, float | None]:
    """Validate a recipe; returns plain (sources, coefficients, lam). Raises ValueError."""

    def fail(message: str) -> None:
        raise ValueError(f"{where}{message}")

    if isinstance(sources, str | Path):
        sources = [sources]
    if not isinstance(sources, list | tuple) or not sources:
        fail(f"sources must be a non-empty list of exports or '{BASE}', got {sources!r}")
    sources = [str(s) for s in sources]
    if any(not s for s in sources):
        fail(f"sources must be export paths or '{BASE}', got {sources!r}")
    if method not in METHODS:
        fail(f"method must be one of {METHODS}, got {method!r}")
    if lam is not None:
        if not _is_number(lam) or not 0.0 <= float(lam) <= 1.0:
            fail(f"lambda must be a number in [0, 1], got {lam!r}")
        lam = float(lam)
    if coefficients is not None:
        if not isinstance(coefficients, list | tuple) or not all(_is_number(c) for c in coefficients):
            fail(f"coefficients must be a list of numbers, got {coefficients!r}")
        coefficients = [float(c) for c in coefficients]
    k = len(sources)
    if method == "single" and k != 1:
        fail(f"method 'single' evaluates one source, got {k}: {sources}")
    if k == 1:
        if lam is not None:
            fail(f"lambda={lam} needs two sources to interpolate, got one: {sources}")
        if coefficients not in (None, [1.0]):
            fail(f"one source takes no coefficients (or [1.0]), got {coefficients}")
        return sources, None, None
    if method in ("lerp", "slerp"):
        if k != 2:
            fail(f"method {method!r} interpolates two sources, got {k}: {sources}")
        if lam is None:
            fail(f"method {method!r} needs lambda in [0, 1] (lambda is null)")
        if coefficients is not None:
            fail(f"method {method!r} takes lambda, not coefficients ({coefficients})")
        return sources, None, lam
    if lam is not None:
        fail(f"method 'merge' takes coefficients (or none: uniform), not lambda={lam}")
    if coefficients is not None:
        if len(coefficients) != k:
            fail(f"{len(coefficients)} coefficients for {k} sources")
        if any(c < 0 for c in coefficients) or abs(sum(coefficients) - 1.0) > 1e-6:
            fail(f"coefficients must be >= 0 and sum to 1, got {coefficients}")
    return sources, coefficients, None


def load_source(source: str, base: Policy, base_hash: str, where: str = "") -> Source:
    """`base` -> the base policy's trainable weights; a path -> an export (checked)."""
    if source == BASE:
        state = {k: v.detach().clone() for k, v in base.trainable.state_dict().items()}
        return Source(BASE, None, state, {"kind": "base", "base_hash": base_hash})
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{where}export not found: {path}; train it first (a student's `fit` exports "
            f"models/<name>-seed<seed>.safetensors) or fix the path"
        )
    state, record = load_export(path)
    label = str(record.get("name") or path.stem)
    return Source(label, path, state, record)


def check_same_base(sources: Sequence[Source], base_hash: str, where: str = "") -> None:
    """Refuse sources whose records name different base models (or another than `base_hash`)."""
    known = [s for s in sources if s.record.get("base_hash")]
    for a, b in zip(known, known[1:]):
        if a.record["base_hash"] != b.record["base_hash"]:
            raise ValueError(
                f"{where}cannot merge exports of different base models: {a.path or BASE} has "
                f"base_hash {a.record['base_hash']}, {b.path or BASE} has {b.record['base_hash']}"
            )
    for s in known:
        if s.record["base_hash"] != base_hash:
            raise ValueError(
                f"{where}{s.path} was fine-tuned from base model {s.record['base_hash']}, but this "
                f"job's base policy has hash {base_hash}: give the base it was trained from"
            )


def check_architecture(sources: Sequence[Source], base: Policy, where: str = "") -> None:
    """Refuse a source whose record names another architecture than the base policy's."""
    want = base.architecture()
    for s in sources:
        have = (s.record.get("policy") or {}).get("architecture") or s.record.get("architecture")
        if not have or not want:
            continue
        diff = {k: (have.get(k), v) for k, v in want.items() if k in have and have[k] != v}
        if diff:
            detail = ", ".join(f"{k}: export {a!r} vs base {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"{where}{s.path} is of another architecture than the base policy ({detail})")


def build_merged(
    base: Policy,
    sources: Sequence[Source],
    method: str,
    coefficients: Sequence[float] | None,
    lam: float | None,
    where: str = "",
) -> tuple[Policy, list[float]]:
    """Merge the sources' weights into a fork of `base`; returns (policy, coefficients)."""
    base_hash = weights_hash(base.trainable.state_dict())
    check_same_base(sources, base_hash, where)
    check_architecture(sources, base, where)
    states = [s.state for s in sources]
    names = [str(s.path or BASE) for s in sources]
    if len(states) == 1:
        merged, coeffs = states[0], [1.0]
    else:
        try:
            merging._check_compatible("merge", states, names)
        except ValueError as err:
            raise ValueError(f"{where}cannot merge {names}: {err}") from err
        if method == "lerp":
            merged, coeffs = merging.lerp(states[0], states[1], lam), [1.0 - lam, lam]
        elif method == "slerp":
            merged, coeffs = merging.slerp(states[0], states[1], lam), [1.0 - lam, lam]
        else:
            k = len(states)
            coeffs = list(coefficients) if coefficients is not None else [1.0 / k] * k
            merged = merging.merge(states, coeffs)
    policy = base.fork()
    try:
        policy.trainable.load_state_dict(merged)
    except RuntimeError as err:  # missing / unexpected keys or shapes: another architecture
        # torch's first line only says "Error(s) in loading state_dict": the keys follow it
        lines = [line.strip() for line in str(err).splitlines()]
        detail = "; ".join(line for line in lines[1:] if line) or lines[0]
        raise ValueError(
            f"{where}{names} do not fit the base policy's architecture "
            f"{base.architecture()}: {detail}"
        ) from err
    return policy.eval(), coeffs
