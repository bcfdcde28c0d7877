"""Shared helpers of the student tests (`test_student*.py`): tiny checkpoints and batches.

Tiny random-init models are saved to a temp dir once per test module, so every test loads
real checkpoints through the same code path as a run, in well under a second each. Prompts
are encoded by the policy's text tower (MiniLM, cached on disk); batches need only "prompt".
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from lightning_modules.student import DistillStudent
from suite.models.lm import TokenLM
from suite.models.mel import MelConfig
from suite.models.preference import PreferenceConfig, PreferenceModel
from suite.models.scorer import MuLanScorer, ScorerConfig
from suite.models.vit import AudioEmbedder, EmbedderConfig, EncoderConfig, ViTConfig
from suite.music.tokens import SEQ_LEN, VOCAB_SIZE

TINY_LM = dict(d_model=32, n_layers=1, n_heads=2, d_ff=64, n_prefix=2)
VIT = ViTConfig(width=16, depth=1, heads=2, head_dim=8, ff_dim=32)
PROMPTS = [
    "Upbeat jazz piece in C major.",
    "A sad piano ballad",
    "Rock song.",
    "A peaceful sunset on a beach",
]


def save_checkpoints(d: Path) -> dict[str, str]:
    """Tiny TokenLMs (music-sized and too short), embedders (32 / 22.05 kHz), scorer, preference."""
    torch.manual_seed(0)
    paths = {k: d / f"{k}.pt" for k in ("lm", "emb", "scorer", "pref", "emb22k", "lm_small")}
    TokenLM(VOCAB_SIZE, SEQ_LEN, **TINY_LM).save(paths["lm"])
    TokenLM(VOCAB_SIZE, 40, **TINY_LM).save(paths["lm_small"])
    AudioEmbedder(EmbedderConfig(EncoderConfig(vit=VIT), out_dim=8)).save(paths["emb"])
    AudioEmbedder(
        EmbedderConfig(EncoderConfig(mel=MelConfig(sample_rate=22050), vit=VIT), out_dim=8)
    ).save(paths["emb22k"])
    MuLanScorer(ScorerConfig(encoder=EncoderConfig(vit=VIT), text_hidden=16, joint_dim=8)).save(
        paths["scorer"]
    )
    PreferenceModel(PreferenceConfig(encoder=EncoderConfig(vit=VIT), hidden=8)).save(paths["pref"])
    return {k: str(v) for k, v in paths.items()}


def spec(checkpoint: str, **extra) -> dict:
    """The music policy spec of a TokenLM checkpoint."""
    return {"name": "music", "checkpoint": str(checkpoint), **extra}


def make(ckpts: dict, **kw) -> DistillStudent:
    args = dict(policy=spec(ckpts["lm"]), embedder=ckpts["emb"], beta_warmup_steps=0, lr=1e-3)
    args.update(kw)
    return DistillStudent(**args)


def ready(ckpts: dict, **kw) -> DistillStudent:
    m = make(ckpts, **kw)
    m.setup("fit")
    return m


def prompt_batch(b: int = 4, seed: int = 0) -> dict:
    """b prompts; the "cond" vectors of the old batches remain (the student ignores them)."""
    g = torch.Generator().manual_seed(seed)
    cond = torch.nn.functional.normalize(torch.randn(b, 384, generator=g), dim=-1)
    return {"prompt": [PROMPTS[i % len(PROMPTS)] for i in range(b)], "cond": cond,
            "index": torch.arange(b)}  # fmt: skip


class Prompts(Dataset):
    def __init__(self, n: int, seed: int):
        self.batch = prompt_batch(n, seed)

    def __len__(self):
        return len(self.batch["prompt"])

    def __getitem__(self, i):
        return {"prompt": self.batch["prompt"][i], "index": i}


def params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]
