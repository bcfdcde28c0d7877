"""MuLan-style text-audio scorer: the suite's text-adherence metric (paper section 3.1).

The paper measures text adherence with MuLan (Huang et al. 2022): a text tower and an audio
tower trained contrastively on (caption, audio) pairs; the score of a generation is the
cosine between its audio embedding and its prompt's text embedding. MuLan is not public, so
the suite trains its own (DESIGN.md section 4):

- text tower: the frozen MiniLM sentence embedding (`suite.models.text_tower`, 384-d) followed
  by a trainable 2-layer projection to the joint space;
- audio tower: the ViT encoder of `suite.models.vit` on the same log-mel front-end as the
  embedder E, followed by a linear projection to the joint space;
- both outputs L2-normalised; score = cosine in [-1, 1];
- training: symmetric InfoNCE (CLIP's form, van den Oord et al. 2018) with a learned
  temperature `tau = exp(-logit_scale)`, clamped to tau >= 0.01 as in CLIP:

      L = 1/2 [ CE(softmax_j(s_ij / tau), targets_i) + CE(softmax_i(s_ij / tau), targets_j) ]

  where s_ij = cos(audio_i, text_j). Identical captions inside a batch are not negatives of
  each other: the target of row i is spread uniformly over every j whose caption embedding
  equals caption i's (a plain one-hot target would push apart equal texts).
- optional hard negatives (NegCLIP, Yuksekgonul et al. 2023; `suite.music.swaps`): each
  audio clip i may bring S extra captions n_ik (its own caption with one attribute changed)
  that join only ITS audio-to-text softmax, with weight w (a log-offset, w = 1 counts each
  as one more caption):

      a2t_i = -log [ sum_{j ~ i} e^{s_ij / tau} / (sum_j e^{s_ij / tau} + w sum_k e^{s(a_i, n_ik) / tau}) ]

  (written with the spread target above).
- optional hard negative audio, the mirror image (`datamodules.swap_negatives`'s
  `near_misses`): clips that lack exactly one attribute value caption j names weigh w' in
  caption j's text-to-audio softmax (a log-offset on s_ij / tau; w' = 1 is plain InfoNCE).
  Within one prompt the generations differ in which named attributes they realise, and
  ranking them is this direction's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from suite.models.mel import config_dict
from suite.models.text_tower import COND_DIM
from suite.models.vit import (
    TINY_PITCH_ENCODER,
    TINY_VIT,
    AudioEncoder,
    EncoderConfig,
    _from_dict,
    _positive_int,
)

MAX_LOGIT_SCALE = math.log(100.0)  # tau >= 0.01 (CLIP)


@dataclass(frozen=True)
class ScorerConfig:
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(vit=TINY_VIT))
    text_dim: int = COND_DIM
    text_hidden: int = 256
    joint_dim: int = 128
    init_temperature: float = 0.07  # CLIP's initial tau

    def __post_init__(self):
        if not isinstance(self.encoder, EncoderConfig):
            raise TypeError("ScorerConfig.encoder must be an EncoderConfig")
        for key in ("text_dim", "text_hidden", "joint_dim"):
            _positive_int("ScorerConfig", key, getattr(self, key))
        if not 0.01 <= self.init_temperature <= 10:
            raise ValueError(
                f"ScorerConfig.init_temperature must be in [0.01, 10], got {self.init_temperature!r}"
            )

    def to_dict(self) -> dict:
        return config_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ScorerConfig:
        data = dict(data)
        if "encoder" in data and not isinstance(data["encoder"], EncoderConfig):
            data["encoder"] = EncoderConfig.from_dict(dict(data["encoder"]))
        return _from_dict(cls, data)


# "tiny_pitch": the same ViT on the pitch-resolving front end (suite.models.vit.PITCH_MEL).
SCORER_PRESETS = {"tiny": ScorerConfig(), "tiny_pitch": ScorerConfig(encoder=TINY_PITCH_ENCODER)}


def info_nce(
    audio: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    text_key=None,
    negatives: torch.Tensor | None = None,
    negative_mask: torch.Tensor | None = None,
    negative_weight: float = 1.0,
    positives: torch.Tensor | None = None,
    near_misses: torch.Tensor | None = None,
    near_miss_weight: float = 1.0,
) -> torch.Tensor:
    """Symmetric InfoNCE of unit-norm `audio [B, J]` vs `text [B, J]` (module docstring).

    `text_key [B, K]` identifies captions (rows equal <=> same caption; default: `text`).
    `negatives [B, S, J]` (unit-norm) are clip i's own hard-negative captions, `negative_mask
    [B, S]` True where one exists; they join the audio-to-text softmax with `negative_weight`.
    `positives [B, B]` (bool, True on the diagonal) marks more positive pairs: caption j
    describes clip i; each side's target spreads evenly over its positives, as for equal
    captions. `near_misses [B, B]` (bool) marks clip i as a hard negative of caption j; those
    entries weigh `near_miss_weight` in the text-to-audio softmax (never a positive's).
    """
    scale = logit_scale.exp()
    logits = scale * audio @ text.T  # [B, B]
    key = text if text_key is None else text_key
    # equal rows <=> equal index among the unique rows (O(B K log B), not a [B, B, K] compare)
    _, caption = torch.unique(key, dim=0, return_inverse=True)  # [B]
    same = caption[:, None] == caption[None, :]  # [B, B], diagonal = 1
    if positives is not None:
        if positives.shape != same.shape or positives.dtype != torch.bool:
            raise ValueError(f"info_nce: positives must be a bool [{len(text)}, {len(text)}] tensor")
        if not positives.diagonal().all():
            raise ValueError("info_nce: positives must be True on the diagonal (each clip's own caption)")
        same = same | positives.to(same.device)
    same = same.to(logits.dtype)  # the targets in the logits precision (1/3 is not exact in fp32)
    row = logits
    if negatives is not None:
        if negative_mask is None or negative_mask.shape != negatives.shape[:2]:
            raise ValueError("info_nce: negatives [B, S, J] need a negative_mask [B, S]")
        if not negative_weight > 0:
            raise ValueError(f"info_nce: negative_weight must be > 0, got {negative_weight!r}")
        neg = scale * (audio[:, None, :] * negatives).sum(-1) + math.log(negative_weight)
        neg = neg.masked_fill(~negative_mask, float("-inf"))  # [B, S]
        row = torch.cat([logits, neg], dim=1)  # [B, B + S]
    column = logits
    if near_misses is not None:
        if near_misses.shape != same.shape or near_misses.dtype != torch.bool:
            raise ValueError(f"info_nce: near_misses must be a bool [{len(text)}, {len(text)}] tensor")
        if not near_miss_weight > 0:
            raise ValueError(f"info_nce: near_miss_weight must be > 0, got {near_miss_weight!r}")
        hard = near_misses.to(same.device) & (same == 0)  # [B, B]: a positive is never a negative
        column = logits + hard.to(logits.dtype) * math.log(near_miss_weight)
    a2t_logp = row.log_softmax(dim=1)[:, : len(text)]  # [B, B]
    a2t = -(same / same.sum(1, keepdim=True) * a2t_logp).sum(1).mean()
    t2a = -(same / same.sum(0, keepdim=True) * column.log_softmax(dim=0)).sum(0).mean()
    return 0.5 * (a2t + t2a)


class MuLanScorer(nn.Module):
    """`score(audio [B, S], prompts) -> [B]` cosine text adherence."""

    def __init__(self, config: ScorerConfig | None = None, text_tower=None):
        super().__init__()
        self.config = config or ScorerConfig()
        c = self.config
        self.audio_encoder = AudioEncoder(c.encoder)
        self.audio_proj = nn.Linear(self.audio_encoder.width, c.joint_dim)
        self.text_proj = nn.Sequential(
            nn.Linear(c.text_dim, c.text_hidden), nn.GELU(), nn.Linear(c.text_hidden, c.joint_dim)
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / c.init_temperature)))
        # The frozen tower is not a submodule: its weights stay out of our state_dict.
        self._text_tower = text_tower

    @property
    def sample_rate(self) -> int:
        return self.audio_encoder.sample_rate

    @property
    def temperature(self) -> float:
        return float(self.clamped_logit_scale().detach().exp().reciprocal())

    def clamped_logit_scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE)

    def embed_audio(self, audio: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        return F.normalize(self.audio_proj(self.audio_encoder(audio, sample_rate)), dim=-1)

    def embed_text(self, text_emb: torch.Tensor) -> torch.Tensor:
        if text_emb.dim() != 2 or text_emb.shape[1] != self.config.text_dim:
            raise ValueError(
                f"MuLanScorer: text embeddings must be [B, {self.config.text_dim}], "
                f"got {tuple(text_emb.shape)}"
            )
        return F.normalize(self.text_proj(text_emb), dim=-1)

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        """Joint-space audio embeddings from the audio trunk's output `[B, W]` (features
        cached from a frozen trunk: the LiT-style stage of the scorer's training)."""
        return F.normalize(self.audio_proj(features), dim=-1)

    def loss(
        self,
        audio: torch.Tensor,
        text_emb: torch.Tensor,
        negative_emb: torch.Tensor | None = None,
        negative_mask: torch.Tensor | None = None,
        negative_weight: float = 1.0,
        features: torch.Tensor | None = None,
        positives: torch.Tensor | None = None,
        near_misses: torch.Tensor | None = None,
        near_miss_weight: float = 1.0,
    ) -> torch.Tensor:
        """InfoNCE on a batch of paired audio `[B, S]` (or its trunk `features [B, W]`, with
        `audio` None) and MiniLM caption embeddings `[B, 384]`; optional hard-negative
        captions `negative_emb [B, K, 384]` with `negative_mask [B, K]`, and `positives
        [B, B]` (caption j describes clip i), `near_misses [B, B]` (clip i misses one
        value caption j names) weighted `near_miss_weight` in the text-to-audio softmax."""
        a = self.embed_features(features) if features is not None else self.embed_audio(audio)
        t = self.embed_text(text_emb)
        negatives = None
        if negative_emb is not None:
            negatives = self.embed_text(negative_emb.flatten(0, 1)).view(*negative_emb.shape[:2], -1)
        return info_nce(
            a, t, self.clamped_logit_scale(), text_key=text_emb, negatives=negatives,
            negative_mask=negative_mask, negative_weight=negative_weight, positives=positives,
            near_misses=near_misses, near_miss_weight=near_miss_weight,
        )

    def pair_loss(
        self, win: torch.Tensor, win_text: torch.Tensor, lose: torch.Tensor, lose_text: torch.Tensor
    ) -> torch.Tensor:
        """Bradley-Terry loss on adherence pairs: audio `win [B, S]` adheres better to its
        prompt (MiniLM embedding `win_text [B, 384]`) than `lose [B, S]` to `lose_text`:
        mean of -log sigmoid((cos_win - cos_lose) / tau), the cosines in the contrastive
        loss's units (the learned temperature tau)."""
        if not len(win) == len(win_text) == len(lose) == len(lose_text):
            raise ValueError(
                f"MuLanScorer.pair_loss: {len(win)} / {len(lose)} winner / loser clips but "
                f"{len(win_text)} / {len(lose_text)} text embeddings"
            )
        from suite.models.preference import bradley_terry_loss

        a = self.embed_audio(torch.cat([win, lose]))  # [2B, J], one forward over both sides
        t = self.embed_text(torch.cat([win_text, lose_text]))  # [2B, J]
        s = self.clamped_logit_scale().exp() * (a * t).sum(-1)  # [2B]
        return bradley_terry_loss(s[: len(win)], s[len(win) :])

    def score_embeddings(
        self, audio: torch.Tensor, text_emb: torch.Tensor, sample_rate: int | None = None
    ) -> torch.Tensor:
        """Cosine between audio `[B, S]` and MiniLM embeddings `[B, 384]` -> `[B]`."""
        if (text_emb.abs().sum(-1) == 0).any():
            raise ValueError("MuLanScorer: a text embedding is all zero (the null prompt)")
        a, t = self.embed_audio(audio, sample_rate), self.embed_text(text_emb)
        if len(a) != len(t):
            raise ValueError(f"MuLanScorer: {len(a)} audio clips but {len(t)} text embeddings")
        return (a * t).sum(-1)

    def score(self, audio: torch.Tensor, prompts: list[str], sample_rate: int | None = None):
        """Cosine text adherence of each clip to its prompt -> `[B]`."""
        if isinstance(prompts, str):
            raise TypeError("MuLanScorer.score: prompts must be a list of strings")
        for i, p in enumerate(prompts):
            if isinstance(p, str) and p.strip() == "":
                raise ValueError(f"MuLanScorer.score: prompts[{i}] is empty (the null prompt)")
        if self._text_tower is None:
            from suite.models.text_tower import default_tower

            self._text_tower = default_tower()
        device = next(self.parameters()).device
        return self.score_embeddings(
            audio, self._text_tower.encode(prompts).to(device), sample_rate
        )

    @classmethod
    def from_checkpoint(cls, path, config: ScorerConfig | None = None, map_location="cpu"):
        from suite.models.audio_checkpoint import load_model

        return load_model(cls, ScorerConfig, path, config, map_location)

    def save(self, path) -> None:
        from suite.models.audio_checkpoint import save_model

        save_model(self, path)
