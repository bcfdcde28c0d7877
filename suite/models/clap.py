"""A MuLan-style text-adherence score from CLAP (transformers `ClapModel`), for real audio.

The paper scores text adherence with MuLan (section 3.1): the cosine between a text tower
and an audio tower trained contrastively. MuLan is not public; CLAP (LAION) is the same
kind of model, so `ClapScorer` gives the suite's scorer interface (`score(audio, prompts)
-> [B]` cosines, `embed_audio(audio) -> [B, D]` unit vectors, `sample_rate`) on top of a
`ClapModel` from a local directory (`from_pretrained(path, local_files_only=True)`; nothing
is downloaded at run time). It reads 48 kHz audio; the policy jobs resample for it. Clips
of at most 10 s are read whole (longer ones are cropped by CLAP's own feature extractor).

`tiny=True` builds a small random CLAP with a word-hashing tokenizer, for tests only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from suite.models.hash_tokenizer import HashTokenizer


class ClapScorer(nn.Module):
    """CLAP as the MuLan-style scorer (module docstring)."""

    def __init__(self, model: nn.Module, feature_extractor, tokenizer):
        super().__init__()
        self.model = model.eval()
        self._features = feature_extractor
        self._tokenizer = tokenizer
        self.sample_rate = int(feature_extractor.sampling_rate)

    @classmethod
    def from_spec(cls, checkpoint: str | None = None, tiny: bool = False, seed: int = 0) -> ClapScorer:
        if (checkpoint is None) == (not tiny):
            raise ValueError("ClapScorer: give either checkpoint=<local directory> or tiny=true")
        return cls(*(tiny_clap(seed) if tiny else load_local(checkpoint)))

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """Unit audio embeddings `[B, D]` of 48 kHz clips `[B, S]`."""
        clips = [a.detach().float().cpu().numpy() for a in audio]
        feats = self._features(clips, sampling_rate=self.sample_rate, return_tensors="pt")
        out = self.model.get_audio_features(input_features=feats["input_features"].to(self._device()))
        return out.pooler_output.float()

    @torch.no_grad()
    def embed_text(self, prompts: list[str]) -> torch.Tensor:
        ids, mask = self._tokenizer(list(prompts))
        out = self.model.get_text_features(input_ids=ids.to(self._device()),
                                           attention_mask=mask.to(self._device()))  # fmt: skip
        return out.pooler_output.float()

    def score(self, audio: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Cosine text adherence of each clip to its prompt -> `[B]`."""
        if isinstance(prompts, str) or len(prompts) != audio.shape[0]:
            raise ValueError(f"ClapScorer.score: one prompt per clip ({audio.shape[0]}), got {prompts!r:.80}")
        return (self.embed_audio(audio) * self.embed_text(prompts)).sum(-1)


class _HFTokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        return out["input_ids"], out["attention_mask"]


def tiny_clap(seed: int = 0):
    """A small random CLAP (HTSAT audio tower, 1-layer text tower) and a hashing tokenizer."""
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
    )

    text = ClapTextConfig(vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=40, projection_dim=8)  # fmt: skip
    audio = ClapAudioConfig(depths=[1, 1], num_attention_heads=[1, 2], patch_embeds_hidden_size=8,
                            hidden_size=16, projection_dim=8, window_size=8, spec_size=256,
                            num_mel_bins=64, enable_fusion=False)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(),
                                     projection_dim=8))  # fmt: skip
    return model, ClapFeatureExtractor(truncation="rand_trunc"), HashTokenizer(
        99, first=3, bos=0, eos=2, pad=1, max_length=38)


def load_local(checkpoint: str):
    """CLAP, its feature extractor and tokenizer from a local directory; no download."""
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    path = Path(checkpoint).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"ClapScorer: {path} is not a CLAP checkpoint directory (no config.json). Nothing is "
            f"downloaded at run time: copy one there first (e.g. laion/clap-htsat-unfused)"
        )
    try:
        model = ClapModel.from_pretrained(str(path), local_files_only=True)
        features = ClapFeatureExtractor.from_pretrained(str(path), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except OSError as err:
        raise ValueError(
            f"ClapScorer: cannot load {path} without downloading ({str(err).splitlines()[0]}); "
            f"point checkpoint at a complete local copy"
        ) from err
    return model, features, _HFTokenizer(tokenizer)
