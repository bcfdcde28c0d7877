"""Tiny random-init models and exports for the merged evaluator's tests (not a test module).

`save_tiny_models(d)` writes, as a run would find them: the base TokenLM theta_init
(`base.pt`, the policy's checkpoint), three "fine-tunes" of it exported with their records
(`beta<b>-seed0.safetensors` + `.json`, base_hash = the base's), a TokenLM of another
width (legacy `wide.pt`) and the audio judges (E, the MuLan-style scorer, the preference
model). Each TokenLM has its own random init, so every source differs from every other.
"""

from __future__ import annotations

from pathlib import Path

import torch

from suite.models.lm import CONFIG_KEYS, TokenLM
from suite.models.preference import PreferenceConfig, PreferenceModel
from suite.models.scorer import MuLanScorer, ScorerConfig
from suite.models.vit import AudioEmbedder, EmbedderConfig, EncoderConfig, ViTConfig
from suite.music.tokens import SEQ_LEN, VOCAB_SIZE
from suite.policies.exports import save_export, weights_hash

TINY_LM = dict(d_model=32, n_layers=1, n_heads=2, d_ff=64, n_prefix=2)
VIT = ViTConfig(width=16, depth=1, heads=2, head_dim=8, ff_dim=32)
PROMPTS = ["Upbeat jazz piece in C major.", "A sad piano ballad", "Rock song."]
BETAS = {"beta0-seed0": (0, 1), "beta15-seed0": (15, 2), "beta5-seed0": (5, 3)}  # beta, init seed


def tiny_lm(seed: int, **changes) -> TokenLM:
    torch.manual_seed(seed)
    return TokenLM(VOCAB_SIZE, SEQ_LEN, **{**TINY_LM, **changes})


def architecture(lm: TokenLM) -> dict:
    """What `MusicPolicy.architecture()` records for this TokenLM."""
    return {k: lm.config[k] for k in CONFIG_KEYS if k != "dropout"}


def record(lm: TokenLM, base_hash: str | None, beta: float | None = None, **extra) -> dict:
    """A student's export record: kind, policy (name + architecture), base_hash, beta."""
    out = {"kind": "student", "policy": {"name": "music", "architecture": architecture(lm)},
           "base_hash": base_hash, "seed": 0, **extra}  # fmt: skip
    if beta is not None:
        out["beta"] = beta
    return out


def export(
    lm: TokenLM, path: Path, base_hash: str | None, beta: float | None = None, **extra
) -> str:
    save_export(lm.state_dict(), path, record(lm, base_hash, beta, **extra))
    return str(path)


def save_tiny_models(d: Path) -> dict[str, str]:
    """The files of the module docstring in d; returns {name: path} (+ "base_hash")."""
    d.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    base = tiny_lm(0)
    paths["base"] = str(d / "base.pt")
    base.save(paths["base"])
    paths["base_hash"] = weights_hash(base.state_dict())
    for name, (beta, seed) in BETAS.items():
        paths[name] = export(tiny_lm(seed), d / f"{name}.safetensors", paths["base_hash"], beta)
    paths["wide"] = str(d / "wide.pt")
    tiny_lm(4, d_model=48).save(paths["wide"])
    torch.manual_seed(0)
    paths["emb"] = str(d / "emb.pt")
    AudioEmbedder(EmbedderConfig(EncoderConfig(vit=VIT), out_dim=8)).save(paths["emb"])
    paths["scorer"] = str(d / "scorer.pt")
    MuLanScorer(ScorerConfig(encoder=EncoderConfig(vit=VIT), text_hidden=16, joint_dim=8)).save(
        paths["scorer"]
    )
    paths["pref"] = str(d / "pref.pt")
    PreferenceModel(PreferenceConfig(encoder=EncoderConfig(vit=VIT), hidden=8)).save(paths["pref"])
    return paths


def policy_spec(paths: dict[str, str]) -> dict:
    return {"name": "music", "checkpoint": paths["base"]}


def make_evaluator(paths: dict[str, str], **kw):
    """A MergedEvaluator of LERP(beta0, beta15) at lambda 0.5, cheap by default."""
    from lightning_modules.merged_eval import MergedEvaluator

    args = dict(
        policy=policy_spec(paths), sources=[paths["beta0-seed0"], paths["beta15-seed0"]],
        method="lerp", lam=0.5, embedder=paths["emb"], fad_reference_size=0, win_rates=False,
    )  # fmt: skip
    args.update(kw)
    return MergedEvaluator(**args)


def lm_state(path: str) -> dict[str, torch.Tensor]:
    """The TokenLM weights of an export (safetensors) or a legacy `.pt` file."""
    if path.endswith(".pt"):
        return torch.load(path, weights_only=True)["state_dict"]
    from safetensors.torch import load_file

    return load_file(path)
