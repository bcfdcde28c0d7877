"""The merged evaluator's comparisons: side-by-side win rates and FAD (paper 3.5, app. E, G).

`WinRates`: the paper's raters see two models' generations for the same prompt; here the
policy world's oracle stands in for them. One duel per PROMPT: quality duels compare the
mean of the oracle's overall score over each model's generations for the prompt
(generations of one prompt are not independent duels: counting each would make the tests
anticonservative); diversity duels compare the mean musical distance between a prompt's
generations (the oracle's, independent of the rewarded embedder E). Each is a `WinRate`
metric: `(W + T/2) / (W + L + T)` with the sign test on W / L beside the t-test and the
Wilcoxon test on the paired scores, and a bootstrap CI over prompts.

`FadSpaces`: FAD between the world's clean reference audio and the generations, in E's
space (`eval/fad`) and in the MuLan-style scorer's audio tower (`eval/fad_mulan`), with the
sample counts beside it (FAD is biased by n). The reference is rendered and embedded once
per job; under DDP each rank adds its share.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from suite.metrics import FrechetAudioDistance, WinRate
from suite.policies import Oracle, Policy
from suite.policies.base import NEGATIVE_PROMPT
from suite.policies.recipes import BASE, check_recipe
from suite.rollout import embed_audio, frozen

DEFAULT_BASELINE = {"name": "cfg3", "sources": [BASE], "gamma": 3.0,
                    "negative_prompt": NEGATIVE_PROMPT}  # fmt: skip
_BASELINE_KEYS = {"name", "sources", "coefficients", "method", "lambda", "gamma",
                  "negative_prompt", "temperature"}  # fmt: skip
_RESULT_KEYS = ("wins", "losses", "ties", "n", "p_ttest", "p_wilcoxon", "p_sign", "ci_low", "ci_high")


def check_baseline(owner: str, baseline: dict | None, win_rates: bool) -> dict | None:
    """The win-rate baseline as a complete recipe dict (None when win rates are off)."""
    if not win_rates:
        return None
    baseline = dict(DEFAULT_BASELINE) if baseline is None else baseline
    if not isinstance(baseline, dict):
        raise TypeError(f"{owner}: baseline must be a dict or None, got {baseline!r}")
    unknown = sorted(set(baseline) - _BASELINE_KEYS)
    if unknown:
        raise ValueError(f"{owner}: baseline has unknown keys {unknown}; allowed: {sorted(_BASELINE_KEYS)}")
    if not isinstance(baseline.get("name"), str) or not baseline["name"]:
        raise ValueError(f"{owner}: baseline needs a non-empty 'name', got {baseline.get('name')!r}")
    out = {
        "name": baseline["name"],
        "method": baseline.get("method", "lerp"),
        "gamma": float(baseline.get("gamma", 1.0)),
        "negative_prompt": baseline.get("negative_prompt", NEGATIVE_PROMPT),
        "temperature": float(baseline.get("temperature", 0.99)),
    }
    out["sources"], out["coefficients"], out["lambda"] = check_recipe(
        f"{owner}: baseline: ", baseline.get("sources"), baseline.get("coefficients"),
        out["method"], baseline.get("lambda"),
    )  # fmt: skip
    if out["gamma"] < 0 or out["temperature"] <= 0:
        raise ValueError(f"{owner}: baseline gamma must be >= 0 and temperature > 0, got {out}")
    return out


class WinRates(nn.Module):
    """Quality and diversity win rates of a model against a baseline, judged by an oracle."""

    def __init__(self, baseline: dict, oracle: Oracle, quality_tie_margin: float,
                 diversity_tie_margin: float, resamples: int, seed: int):  # fmt: skip
        super().__init__()
        self.baseline = baseline
        object.__setattr__(self, "oracle", oracle)
        kw = dict(num_resamples=resamples, seed=seed)
        self.quality = WinRate(tie_margin=quality_tie_margin, **kw)
        self.diversity = WinRate(tie_margin=diversity_tie_margin, **kw)

    def update(self, ours: torch.Tensor, theirs: torch.Tensor, prompts: list[str]) -> None:
        """Duels of generations `[P, N, K, L]` of the model and of the baseline."""
        a = self.oracle.scores(ours, prompts)["overall"].mean(1)  # [P]: one duel per prompt
        b = self.oracle.scores(theirs, prompts)["overall"].mean(1)
        self.quality.update(a, b)
        self.diversity.update(self.oracle.pair_distances(ours), self.oracle.pair_distances(theirs))

    def compute(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for kind, metric in (("quality", self.quality), ("diversity", self.diversity)):
            result = metric.compute()
            values[f"eval/winrate_{kind}"] = float(result["win_rate"])
            for key in _RESULT_KEYS:
                values[f"eval/winrate_{kind}_{key}"] = float(result[key])
        return values

    def reset(self) -> None:
        self.quality.reset()
        self.diversity.reset()


class _AudioTower(nn.Module):
    """The MuLan-style scorer's audio tower as an embedder `[B, S] -> [B, D]` (for FAD)."""

    def __init__(self, scorer: nn.Module):
        super().__init__()
        object.__setattr__(self, "scorer", scorer)  # not a submodule: it stays frozen elsewhere

    def parameters(self, recurse: bool = True):
        return self.scorer.parameters(recurse)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.scorer.embed_audio(audio)


class FadSpaces:
    """FAD in E's space and, with a scorer, in its audio tower's (module docstring)."""

    def __init__(self, judges: dict[str, nn.Module], device: torch.device):
        self.spaces: dict[str, Any] = {"fad": judges["embedder"]}
        if "scorer" in judges:
            self.spaces["fad_mulan"] = _AudioTower(judges["scorer"])
        self.device = device
        self.metrics: dict[str, FrechetAudioDistance] = {}

    def fill_reference(self, policy: Policy, size: int, seed: int, root: str | None) -> None:
        """Embed the world's clean reference audio; a world without one gets no FAD."""
        audio = policy.reference_audio(size, seed, root)  # [R, S] or None
        if audio is None:
            return
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        audio = audio[rank::world]  # each rank adds its share; the sync sums them
        for name, model in self.spaces.items():
            self.metrics[name] = FrechetAudioDistance(
                num_features=_width(model, audio.shape[-1]), reset_real_features=False
            ).to(self.device)
        chunk = 32
        for start in tqdm(range(0, audio.shape[0], chunk), desc="FAD reference (embed)",
                          unit="chunk", disable=audio.shape[0] <= chunk):  # fmt: skip
            part = audio[start : start + chunk].to(self.device)  # [c, S]
            for name, model in self.spaces.items():
                self.metrics[name].update(embed_audio(model, part).to(self.device), real=True)

    def update(self, audio: torch.Tensor, embeddings: torch.Tensor) -> None:
        """Generations' audio `[P, G, S]` (E's embeddings `[P, G, D]` already computed)."""
        for name, metric in self.metrics.items():
            feats = embeddings if name == "fad" else embed_audio(self.spaces[name], audio)
            metric.update(feats.reshape(-1, feats.shape[-1]), real=False)

    def compute(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for name, fad in self.metrics.items():
            values[f"eval/{name}"] = float(fad.compute())
            if name == "fad":
                values["eval/fad_n"], values["eval/fad_n_ref"] = float(fad.n_fake), float(fad.n_real)
        return values

    def reset(self) -> None:
        for fad in self.metrics.values():
            fad.reset()  # keeps the reference side


def _width(embedder: nn.Module, samples: int) -> int:
    """Output width of an audio embedder (one silent clip through it)."""
    param = next(embedder.parameters())
    with frozen(embedder if isinstance(embedder, nn.Module) else None):
        return int(embedder(torch.zeros(1, samples, device=param.device)).shape[-1])
