"""The audio judges of a policy job, at the policy's sample rate.

E (the diversity embedder of section 2.2), the MuLan-style scorer and the preference model
(section 3.1) each read audio at their own rate: 16 kHz for the suite's tiny judges, 48 kHz
for CLAP, while MusicGen writes 32 kHz. A judge whose rate differs from the policy's is
wrapped in `Resampled`, which converts every waveform it is given (polyphase filter,
`suite.models.mel.resample`) before calling it; the job logs that it does so. The judge's
own weights and methods are untouched.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from suite.models.mel import resample

log = logging.getLogger(__name__)


class Resampled(nn.Module):
    """A judge fed audio at `source_rate`: `forward`, `score` and `embed_audio` resample first."""

    def __init__(self, judge: nn.Module, source_rate: int):
        super().__init__()
        self.judge = judge
        self.source_rate = int(source_rate)
        self.sample_rate = self.source_rate  # what callers may now give it

    def _in(self, audio: torch.Tensor) -> torch.Tensor:
        return resample(audio, self.source_rate, self.judge.sample_rate)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.judge(self._in(audio))

    def score(self, audio: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.judge.score(self._in(audio), *args, **kwargs)

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return self.judge.embed_audio(self._in(audio))


def at_rate(judge: nn.Module, rate: int, what: str, owner: str) -> nn.Module:
    """`judge` itself at its own rate, else wrapped in `Resampled` (logged once)."""
    if judge.sample_rate == rate:
        return judge
    log.info("%s: the %s reads %d Hz audio; the policy's %d Hz audio is resampled for it",
             owner, what, judge.sample_rate, rate)  # fmt: skip
    return Resampled(judge, rate)
