"""MuLan-style text adherence and quality scores (paper section 3.1; DESIGN.md section 4).

- `MuLanScore`: mean cosine between the text tower's embedding of the prompt and the audio
  tower's embedding of the generated clip (the paper's MuLan text-adherence metric).
- `QualityScore`: `omega * MuLan + user preference` per clip, omega = 5 (paper section 3.1),
  averaged over clips.

The scorer models are duck-typed: a MuLan-style scorer has
`score(audio [B, S], prompts: list[str]) -> [B]` and a preference model has
`score(audio [B, S]) -> [B]` (the audio-models issue provides both). They are frozen judges,
so they are held outside the metric's module tree: their weights never appear in the
metric's (or a LightningModule's) parameters, state dict or optimiser. Each update moves an
`nn.Module` scorer to the metric's device if needed, and calls it under `torch.no_grad()` in
eval mode (restoring its previous train/eval mode afterwards).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from suite.metrics._base import MeanOfValues
from suite.metrics._checks import check_finite, check_rank, check_tensor


def _check_scorer(name: str, arg: str, scorer: object) -> object:
    if not callable(getattr(scorer, "score", None)):
        raise TypeError(
            f"{name}: `{arg}` must have a callable `score` method, got {type(scorer).__name__}"
        )
    return scorer


def _check_audio_prompts(name: str, audio: object, prompts: object) -> torch.Tensor:
    x = check_tensor(name, "audio", audio)
    check_rank(name, "audio", x, 2, "[B, S]")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name}: `audio` is empty, shape {tuple(x.shape)}")
    check_finite(name, "audio", x)
    if not isinstance(prompts, list | tuple) or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"{name}: `prompts` must be a list of str, got {type(prompts).__name__}")
    if len(prompts) != x.shape[0]:
        raise ValueError(
            f"{name}: got {len(prompts)} prompts for {x.shape[0]} audio clips; they must pair up"
        )
    return x


def _run_scorer(name: str, scorer: Any, device: torch.device, *args: Any) -> torch.Tensor:
    """`scorer.score(*args)` on `device`, no grad, eval mode; checks the `[B]` result."""
    module = scorer if isinstance(scorer, nn.Module) else None
    was_training = False
    if module is not None:
        first = next(module.parameters(), None)
        if first is not None and first.device != device:
            module.to(device)
        was_training = module.training
        module.eval()
    try:
        with torch.no_grad():
            out = scorer.score(*args)
    finally:
        if module is not None and was_training:
            module.train()
    batch = args[0].shape[0]
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (batch,):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name}: the scorer must return a tensor of shape [{batch}], got {got}")
    check_finite(name, "scorer output", out)
    return out


class MuLanScore(MeanOfValues):
    """Mean text-audio cosine of a MuLan-style scorer over every clip seen.

    `update(audio [B, S], prompts: list[str])`. Range [-1, 1]; higher is better.
    """

    higher_is_better = True
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0

    def __init__(self, scorer: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # object.__setattr__ keeps an nn.Module scorer out of the module tree (see top).
        object.__setattr__(self, "scorer", _check_scorer("MuLanScore", "scorer", scorer))

    def update(self, audio: torch.Tensor, prompts: list[str]) -> None:
        """Score B (clip, prompt) pairs and add them."""
        name = "MuLanScore.update"
        x = _check_audio_prompts(name, audio, prompts).to(self.device)  # [B, S]
        self._accumulate(_run_scorer(name, self.scorer, self.device, x, list(prompts)))


class QualityScore(MeanOfValues):
    """Mean over clips of `omega * MuLan(audio, prompt) + preference(audio)`, omega = 5.

    `update(audio [B, S], prompts: list[str])`. Higher is better; unbounded (the preference
    model's scale is its own). `compute_components()` gives the two means separately.
    """

    higher_is_better = True

    mulan_total: torch.Tensor
    preference_total: torch.Tensor

    def __init__(
        self, mulan_scorer: Any, preference_model: Any, omega: float = 5.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        name = "QualityScore"
        object.__setattr__(self, "mulan_scorer", _check_scorer(name, "mulan_scorer", mulan_scorer))
        object.__setattr__(
            self, "preference_model", _check_scorer(name, "preference_model", preference_model)
        )
        if isinstance(omega, bool) or not isinstance(omega, int | float) or not omega == omega:
            raise ValueError(f"{name}: omega must be a real number, got {omega!r}")
        self.omega = float(omega)
        # The components, so a run can log what moved the quality score.
        self.add_state("mulan_total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state(
            "preference_total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(self, audio: torch.Tensor, prompts: list[str]) -> None:
        """Score B clips with both models and add `omega * mulan + preference`."""
        name = "QualityScore.update"
        x = _check_audio_prompts(name, audio, prompts).to(self.device)  # [B, S]
        mulan = _run_scorer(name, self.mulan_scorer, self.device, x, list(prompts)).double()
        pref = _run_scorer(name, self.preference_model, self.device, x).double()  # [B]
        self.mulan_total += mulan.sum().to(self.mulan_total.device)
        self.preference_total += pref.sum().to(self.preference_total.device)
        self._accumulate(self.omega * mulan + pref)
        self.last_parts = {"mulan": mulan, "preference": pref}  # beside last_values (not states)

    def compute_components(self) -> dict[str, torch.Tensor]:
        """Synchronised means `{"mulan": ..., "preference": ..., "quality": ...}`."""
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
        ):
            quality = super().compute()
            return {
                "mulan": self.mulan_total / self.count,
                "preference": self.preference_total / self.count,
                "quality": quality,
            }
