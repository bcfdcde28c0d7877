"""User-preference-style quality model (paper section 3.1, "User Preference" score).

The paper's quality metric combines MuLan adherence with a reward model trained on human
pairwise preferences. The suite trains its stand-in from pairs of the base model's
generations judged by the oracle (`datamodules.generations`, the tiny default), or from pairs
where the clean rendition of a piece is preferred to a flawed one (DESIGN.md section 4). The
model is an audio network (the ViT encoder of `suite.models.vit` on a log-mel front end:
D.1's, or the pitch-resolving `PITCH_MEL` of the "tiny_pitch" preset) with a scalar head;
it is trained with the Bradley-Terry likelihood (Bradley and Terry, 1952):

    P(w > l) = sigmoid(r(w) - r(l)),     L = -log sigmoid(r(w) - r(l)) = softplus(r(l) - r(w)).

The score of a clip is its scalar reward r(audio); only differences of r are identified by
the loss, so absolute values are meaningful only relative to each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from suite.models.mel import config_dict
from suite.models.vit import (
    TINY_PITCH_ENCODER,
    TINY_VIT,
    AudioEncoder,
    EncoderConfig,
    _from_dict,
    _positive_int,
)


@dataclass(frozen=True)
class PreferenceConfig:
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(vit=TINY_VIT))
    hidden: int = 64

    def __post_init__(self):
        if not isinstance(self.encoder, EncoderConfig):
            raise TypeError("PreferenceConfig.encoder must be an EncoderConfig")
        _positive_int("PreferenceConfig", "hidden", self.hidden)

    def to_dict(self) -> dict:
        return config_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreferenceConfig:
        data = dict(data)
        if "encoder" in data and not isinstance(data["encoder"], EncoderConfig):
            data["encoder"] = EncoderConfig.from_dict(dict(data["encoder"]))
        return _from_dict(cls, data)


# "tiny_pitch": the same ViT on the pitch-resolving front end (suite.models.vit.PITCH_MEL).
PREFERENCE_PRESETS = {
    "tiny": PreferenceConfig(),
    "tiny_pitch": PreferenceConfig(encoder=TINY_PITCH_ENCODER),
}


def bradley_terry_loss(r_win: torch.Tensor, r_lose: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(r_win - r_lose) over pairs (`[B]` each), computed stably."""
    if r_win.shape != r_lose.shape:
        raise ValueError(
            f"bradley_terry_loss: shapes differ, {tuple(r_win.shape)} vs {tuple(r_lose.shape)}"
        )
    return F.softplus(r_lose - r_win).mean()


class PreferenceModel(nn.Module):
    """`score(audio [B, S]) -> [B]` scalar quality reward."""

    def __init__(self, config: PreferenceConfig | None = None):
        super().__init__()
        self.config = config or PreferenceConfig()
        self.encoder = AudioEncoder(self.config.encoder)
        self.head = nn.Sequential(
            nn.Linear(self.encoder.width, self.config.hidden),
            nn.GELU(),
            nn.Linear(self.config.hidden, 1),
        )

    @property
    def sample_rate(self) -> int:
        return self.encoder.sample_rate

    def forward(self, audio: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        return self.head(self.encoder(audio, sample_rate)).squeeze(-1)  # [B]

    score = forward

    def loss(self, win: torch.Tensor, lose: torch.Tensor) -> torch.Tensor:
        """Bradley-Terry loss for preferred audio `win [B, S]` over `lose [B, S]`."""
        if win.shape[0] != lose.shape[0]:
            raise ValueError(
                f"PreferenceModel.loss: {win.shape[0]} winners vs {lose.shape[0]} losers"
            )
        # One forward over both halves so normalisation statistics match.
        r = self(torch.cat([win, lose]))  # [2B]
        return bradley_terry_loss(r[: len(win)], r[len(win) :])

    @classmethod
    def from_checkpoint(cls, path, config: PreferenceConfig | None = None, map_location="cpu"):
        from suite.models.audio_checkpoint import load_model

        return load_model(cls, PreferenceConfig, path, config, map_location)

    def save(self, path) -> None:
        from suite.models.audio_checkpoint import save_model

        save_model(self, path)
