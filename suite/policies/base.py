"""The policy interface: all that training and evaluation may know of a generator.

The paper's method (sections 2.1-2.4) needs four things of an autoregressive generator
m_theta(s_n | y_<n, x): its logits under a prompt and under a negative prompt (CFG, eq. 1),
one token at a time with a KV cache (sampling) and for a whole sequence at once (the KL of
eq. 2 and the log-probs of eq. 4), a way to hear what it made (the diversity reward's
embedder E reads audio) and a set of weights to fine-tune, export and merge (eq. 6).

`Policy` is that contract, shaped for the general case of which the embedded music world
is the smallest instance:

- tokens are `[B, K, L]`: K parallel codebooks (K = 1 for the music world, 4 for
  MusicGen) of L steps; logits are `[B, K, L, V]` (teacher forcing) or `[B, K, V]` (one
  decoding step). At each step the K tokens are drawn independently given the past, as
  MusicGen does with its codebooks;
- text conditioning is a `TextCond`: states `[B, T, D]` with a mask `[B, T]` (the music
  world's single sentence vector is T = 1). The empty prompt "" is the null condition; a
  negative prompt is just another prompt;
- `start(cond)` / `step(tokens, state)` decode incrementally over however many rows they
  are given, so the sampler runs the conditional and the negative rows as ONE batch of 2B
  rows (`suite.sampling`);
- `allowed_mask()` says which tokens may stand where, `[K, L, V]` (the music world's
  grammar; a codebook delay pattern), applied to teacher and student alike;
- `to_audio(tokens)` gives `(waveform [B, S], sample_rate)`;
- `trainable` is the sub-module that is fine-tuned, exported and merged (all of a small
  LM; only the decoder of an encoder-decoder). `fork()` copies the policy with its own
  trainable part and shares everything frozen (text encoder, codec).

A world may also offer an `oracle` (a rule-based judge of tokens, the music world's stand-in
for raters), `write_extras` (e.g. MIDI beside each WAV) and `reference_audio` (clean audio
for FAD); a real model without them simply gets no oracle metrics, no MIDI and no FAD.
"""

from __future__ import annotations

import abc
import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

#: x- of the paper's CFG (section 3.1): the negative prompt every job defaults to.
NEGATIVE_PROMPT = "Bad audio quality."


@dataclass
class TextCond:
    """Text conditioning of B rows: `states [B, T, D]` and `mask [B, T]` (True = a real state)."""

    states: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.states, torch.Tensor) or self.states.dim() != 3:
            raise ValueError(
                f"TextCond: states must be a tensor [B, T, D], got "
                f"{tuple(getattr(self.states, 'shape', ())) or type(self.states).__name__}"
            )
        if self.mask.dtype != torch.bool or tuple(self.mask.shape) != tuple(self.states.shape[:2]):
            raise ValueError(
                f"TextCond: mask must be a bool tensor {tuple(self.states.shape[:2])}, got "
                f"{self.mask.dtype} {tuple(self.mask.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return self.states.shape[0]

    def __len__(self) -> int:
        return self.batch_size

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextCond:
        return TextCond(self.states.to(device=device, dtype=dtype), self.mask.to(device))

    def repeat_interleave(self, n: int) -> TextCond:
        """Each row n times, adjacent (prompt-major, like the generations of a prompt)."""
        return TextCond(self.states.repeat_interleave(n, 0), self.mask.repeat_interleave(n, 0))

    def expand(self, batch: int) -> TextCond:
        """A 1-row condition (e.g. the negative prompt) as `batch` rows; B rows stay as they are."""
        if self.batch_size == batch:
            return self
        if self.batch_size != 1:
            raise ValueError(f"TextCond.expand: cannot expand {self.batch_size} rows to {batch}")
        return TextCond(
            self.states.expand(batch, -1, -1), self.mask.expand(batch, -1)
        )

    def __getitem__(self, index: slice | torch.Tensor) -> TextCond:
        return TextCond(self.states[index], self.mask[index])

    @staticmethod
    def cat(parts: Sequence[TextCond]) -> TextCond:
        """Rows of several conditions in one batch; shorter ones are padded (mask False)."""
        T = max(p.states.shape[1] for p in parts)
        states, masks = [], []
        for p in parts:
            pad = T - p.states.shape[1]
            s, m = p.states, p.mask
            if pad:
                s = torch.nn.functional.pad(s, (0, 0, 0, pad))
                m = torch.nn.functional.pad(m, (0, pad), value=False)
            states.append(s)
            masks.append(m)
        return TextCond(torch.cat(states), torch.cat(masks))


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """Every sub-module in eval mode, each restored to ITS OWN previous mode afterwards.

    A policy wrapper is not in the training job's module tree, so its own `training` flag
    need not match its trainable part's: restoring one flag for all would leave the
    student in eval mode after sampling.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode


class Oracle(Protocol):
    """A judge of tokens standing in for human raters (never a training signal)."""

    def scores(self, tokens: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """tokens `[P, N, K, L]` -> float64 `[P, N]` "quality", "adherence", "overall"."""

    def pair_distances(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mean musical distance over the pairs of each prompt's generations: `[P, N, K, L] -> [P]`."""


class Policy(nn.Module, abc.ABC):
    """A text-conditioned autoregressive generator over `[B, K, L]` tokens (module docstring).

    Subclasses set `num_codebooks`, `seq_len`, `vocab_size`, `sample_rate`, name their
    trainable sub-module in `TRAINABLE` (an attribute name) and implement the abstract
    methods. `ARTIFACTS` maps spec keys that may name a built artifact (a dict spec) to
    the artifact kind that builds it; the job resolves them before `from_spec` is called.
    """

    TRAINABLE: ClassVar[str] = "model"
    ARTIFACTS: ClassVar[dict[str, str]] = {}

    num_codebooks: int
    seq_len: int
    vocab_size: int
    sample_rate: int

    # ------------------------------------------------------------------ building
    @classmethod
    @abc.abstractmethod
    def from_spec(cls, **spec: Any) -> Policy:
        """Build the policy from a plain spec (paths, sizes); frozen parts in eval mode."""

    @property
    def trainable(self) -> nn.Module:
        """The sub-module that is fine-tuned, exported and merged."""
        return getattr(self, self.TRAINABLE)

    def frozen_modules(self) -> list[nn.Module]:
        """Every child module other than the trainable part (moved with the policy)."""
        return [m for name, m in self.named_children() if name != self.TRAINABLE]

    def fork(self) -> Policy:
        """A policy with its own copy of the trainable part, sharing every frozen part."""
        new = copy.copy(self)
        new._modules = dict(self._modules)
        new._parameters = dict(self._parameters)
        new._buffers = dict(self._buffers)
        new._modules[self.TRAINABLE] = copy.deepcopy(self.trainable)
        return new

    def architecture(self) -> dict[str, Any]:
        """JSON-able description of the trainable part's architecture (exports record it)."""
        return {}

    # ------------------------------------------------------------------ conditioning
    @abc.abstractmethod
    def encode_text(self, prompts: Sequence[str]) -> TextCond:
        """Prompts -> TextCond of len(prompts) rows; "" is the null condition."""

    # ------------------------------------------------------------------ decoding
    @abc.abstractmethod
    def start(self, cond: TextCond) -> tuple[Any, torch.Tensor]:
        """A fresh decoding state for the rows of `cond`, and the logits `[B, K, V]` of step 0."""

    @abc.abstractmethod
    def step(self, tokens: torch.Tensor, state: Any) -> torch.Tensor:
        """Feed the tokens `[B, K]` of the current step; return logits `[B, K, V]` of the next."""

    @abc.abstractmethod
    def forward(self, tokens: torch.Tensor, cond: TextCond) -> torch.Tensor:
        """Teacher-forced logits `[B, K, L, V]` of tokens `[B, K, L]` (float32).

        `logits[:, k, n]` is the distribution of `tokens[:, k, n]` given the steps before n.
        Runs in the caller's grad mode (the student's gradient flows through it).
        """

    def allowed_mask(self) -> torch.Tensor | None:
        """Bool `[K, L, V]`: which tokens may stand where (None: everything, everywhere)."""
        return None

    # Optional: the teacher-forced forward split at the output heads, so that the KL of eq. 2
    # can be computed a few positions at a time (`suite.rollout.chunked_scores`):
    # `forward(t, c) == head(hidden(t, c))`. Policies without it are scored whole.
    def hidden(self, tokens: torch.Tensor, cond: TextCond) -> torch.Tensor:
        """Final hidden states `[B, L, D]` of tokens `[B, K, L]` (teacher forcing)."""
        raise NotImplementedError(f"{type(self).__name__} does not split its forward")

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits `[B, K, l, V]` (float32) of hidden states `[B, l, D]`."""
        raise NotImplementedError(f"{type(self).__name__} does not split its forward")

    @property
    def splits_forward(self) -> bool:
        return type(self).hidden is not Policy.hidden

    # ------------------------------------------------------------------ audio
    @abc.abstractmethod
    def to_audio(self, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
        """tokens `[B, K, L]` -> (waveform `[B, S]` float32, sample rate)."""

    # ------------------------------------------------------------------ optional world parts
    @property
    def oracle(self) -> Oracle | None:
        """A rule-based judge of tokens, where the world has one."""
        return None

    def write_extras(self, tokens: torch.Tensor, stem: Path) -> list[Path]:
        """Files beside a sample's WAV (e.g. `stem.mid` for tokens `[K, L]`); none by default."""
        return []

    def reference_audio(self, size: int, seed: int, root: str | None) -> torch.Tensor | None:
        """`size` clean reference clips `[R, S]` for FAD, where the world can make them."""
        return None
