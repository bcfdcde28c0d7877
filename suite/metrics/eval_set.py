"""The evaluation metrics of paper section 3.1 as one module of torchmetrics.

A policy is evaluated by generating N pieces per held-out prompt and measuring quality
(`omega * MuLan + user preference`, omega = 5), pairwise diversity (mean `1 - cos` of the
embedder E's embeddings of a prompt's generations, figure 2), Vendi (appendix D.4), the KL
to the CFG teacher (eq. 2, figure 2 left) and entropy per token; where the policy's world
has an oracle judge (the music world does, DESIGN.md section 5) its quality and prompt
adherence are added. Every metric reduces correctly across processes (DDP).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from suite.metrics._base import MeanOfValues
from suite.metrics.diversity import PairwiseDiversity
from suite.metrics.entropy import TokenEntropy
from suite.metrics.intervals import PromptIntervals
from suite.metrics.scores import MuLanScore, QualityScore
from suite.metrics.vendi import VendiScore


class MeanValue(MeanOfValues):
    """Streaming mean of given per-item values (NaN items are skipped); DDP-safe states."""

    def update(self, values: torch.Tensor) -> None:
        values = torch.as_tensor(values).detach().reshape(-1)
        self._accumulate(values[~torch.isnan(values)])


def _prompt_means(values: torch.Tensor) -> torch.Tensor:
    """`[P, N]` per-generation values -> `[P]` each prompt's mean over its finite values
    (NaN where a prompt has none: `PromptIntervals` leaves those prompts out)."""
    values = torch.as_tensor(values).detach().double()
    finite = torch.isfinite(values)
    total = torch.where(finite, values, 0.0).sum(1)
    count = finite.sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.nan)


def synced_count(metric: MeanOfValues) -> torch.Tensor:
    """The metric's item count summed over processes (so every rank skips or computes alike)."""
    count = metric.count.clone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        count = count.to(metric.total.device)
        torch.distributed.all_reduce(count)
    return count


# The means that get a bootstrap interval over prompts (entropy is per token: it has none).
INTERVALS = ("quality", "mulan", "preference", "diversity", "vendi", "kl_teacher",
             "oracle_quality", "oracle_adherence", "oracle_diversity")  # fmt: skip


class EvalMetrics(nn.Module):
    """The evaluation metrics of section 3.1 as torchmetrics, reduced correctly under DDP.

    Args:
        scorer: MuLan-style scorer (`score(audio, prompts) -> [B]`) or None.
        preference: user-preference model (`score(audio) -> [B]`) or None.
        omega: weight of MuLan in `quality = omega * MuLan + preference` (paper: 5).
        prefix: prefix of the metric names.

    Names from `compute()` (each only when its inputs were given):
        {prefix}quality, {prefix}mulan, {prefix}preference  (scorers; without a preference
            model quality is omega * MuLan alone, see `quality_terms`),
        {prefix}diversity (PairwiseDiversity on E's embeddings), {prefix}vendi,
        {prefix}oracle_quality, {prefix}oracle_adherence, {prefix}kl_teacher, {prefix}entropy,
        {prefix}oracle_diversity (the oracle's musical distance between a prompt's
        generations: a diversity judge independent of the rewarded embedder E);
        {prefix}<name>_ci_low / _ci_high: the 95 % bootstrap interval over PROMPTS of each
        mean in `INTERVALS` (`suite.metrics.intervals`; each prompt's value is the mean over
        its generations).
    The scorers are frozen judges kept out of the module tree (no weights in checkpoints).
    """

    def __init__(
        self,
        scorer: object | None = None,
        preference: object | None = None,
        omega: float = 5.0,
        prefix: str = "eval/",
    ):
        super().__init__()
        self.prefix = prefix
        self.omega = float(omega)
        self.diversity = PairwiseDiversity()
        self.vendi = VendiScore()
        self.entropy = TokenEntropy()
        self.kl_teacher = MeanValue()
        self.oracle_quality = MeanValue()
        self.oracle_adherence = MeanValue()
        self.oracle_diversity = MeanValue()  # the oracle's musical distance: E-independent
        both = scorer is not None and preference is not None
        self.quality = QualityScore(scorer, preference, omega) if both else None
        self.mulan = MuLanScore(scorer) if scorer is not None and preference is None else None
        self.preference = MeanValue() if preference is not None and scorer is None else None
        object.__setattr__(self, "_preference_model", preference)
        self.intervals = PromptIntervals(INTERVALS)

    def _metrics(self) -> dict[str, nn.Module]:
        return {name: m for name, m in self.named_children() if m is not None}

    @torch.no_grad()
    def update(
        self,
        prompts: Sequence[str],
        audio: torch.Tensor | None = None,
        embeddings: torch.Tensor | None = None,
        *,
        logits: torch.Tensor | None = None,
        temperature: float = 1.0,
        kl: torch.Tensor | None = None,
        oracle: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Add P prompts' N generations: audio `[P, N, S]`, embeddings `[P, N, D]`, sampling
        logits `[P, N, K, L, V]` (entropy of softmax(z / T)), per-sequence KL to the teacher
        `[P, N]`, the oracle's `{"quality", "adherence"}` scores `[P, N]` where there is one
        (and its mean musical distance between a prompt's generations, "pair_distance" `[P]`)."""
        from suite.rollout import frozen

        prompts = list(prompts)
        per_prompt = self.intervals.update  # (name, [P]): each prompt's mean over generations
        if oracle is not None:
            self.oracle_quality.update(oracle["quality"])
            self.oracle_adherence.update(oracle["adherence"])
            per_prompt("oracle_quality", _prompt_means(oracle["quality"]))
            per_prompt("oracle_adherence", _prompt_means(oracle["adherence"]))
            if "pair_distance" in oracle:
                self.oracle_diversity.update(oracle["pair_distance"])
                per_prompt("oracle_diversity", oracle["pair_distance"])
        if embeddings is not None:
            self.diversity.update(embeddings)
            self.vendi.update(embeddings)
            per_prompt("diversity", self.diversity.last_values)  # [P], as the metrics computed
            per_prompt("vendi", self.vendi.last_values)
        if logits is not None:
            self.entropy.update((logits / temperature).reshape(-1, *logits.shape[-2:]))
        if kl is not None:
            self.kl_teacher.update(kl)
            per_prompt("kl_teacher", _prompt_means(kl))
        if audio is not None:
            P, n = audio.shape[:2]
            flat_audio = audio.reshape(-1, audio.shape[-1])  # [P*N, S]
            row_prompts = [p for p in prompts for _ in range(n)]
            clips: dict[str, torch.Tensor] = {}  # name -> per-clip scores [P*N]
            if self.quality is not None:
                self.quality.update(flat_audio, row_prompts)
                clips = {"quality": self.quality.last_values, **self.quality.last_parts}
            if self.mulan is not None:
                self.mulan.update(flat_audio, row_prompts)
                clips = {"mulan": self.mulan.last_values}
            if self.preference is not None:
                model = self._preference_model
                with frozen(model if isinstance(model, nn.Module) else None):
                    clips = {"preference": model.score(flat_audio)}
                self.preference.update(clips["preference"])
            for name, scores in clips.items():
                per_prompt(name, _prompt_means(scores.reshape(P, n)))

    def compute(self) -> dict[str, float]:
        """Synchronised means of every metric that saw data (a collective under DDP)."""
        out: dict[str, float] = {}
        for name, metric in self._metrics().items():
            if name == "intervals":
                continue  # read below, beside the means it brackets
            if name == "quality":
                comps = metric.compute_components() if int(synced_count(metric)) else None
                if comps is not None:
                    for key, value in comps.items():
                        out[f"{self.prefix}{key}"] = float(value)
                continue
            if int(synced_count(metric)) == 0:
                continue  # e.g. adherence when no prompt names an attribute
            out[f"{self.prefix}{name}"] = float(metric.compute())
        if self.mulan is not None and f"{self.prefix}mulan" in out:
            # No preference model: quality is omega * MuLan alone (`quality_terms` says so).
            out[f"{self.prefix}quality"] = self.omega * out[f"{self.prefix}mulan"]
        cis = self.intervals.compute()
        if self.mulan is not None and "mulan" in cis:
            cis["quality"] = tuple(self.omega * v for v in cis["mulan"])
        for name, (low, high) in cis.items():
            if f"{self.prefix}{name}" in out:
                out[f"{self.prefix}{name}_ci_low"], out[f"{self.prefix}{name}_ci_high"] = low, high
        return out

    @property
    def quality_terms(self) -> str:
        """What `quality` sums: both terms, MuLan alone, or nothing (logged as a param)."""
        if self.quality is not None:
            return f"{self.omega:g}*mulan+preference"
        return f"{self.omega:g}*mulan (no preference model)" if self.mulan is not None else "none"

    def reset(self) -> None:
        for metric in self._metrics().values():
            metric.reset()
