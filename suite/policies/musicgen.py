"""MusicGen (transformers) behind the policy interface: the method on a real text-to-music model.

The paper fine-tunes MusicLM, which is closed; `MusicgenForConditionalGeneration` is the
open model researchers use for this: a frozen T5 text encoder, a decoder over K = 4
EnCodec codebooks with a DELAY pattern, and an EnCodec decoder at 32 kHz. Here:

- text conditioning: T5's states `[B, T, D]` with the tokenizer's mask; the null condition
  (empty prompt) is one zero state with a False mask, as MusicGen's own CFG uses; a
  negative prompt ("Bad audio quality.") is just another prompt. The decoder side
  projects and masks the states (`enc_to_dec_proj`, trained with the decoder);
- tokens `[B, K, L]` with L = frames + K - 1: codebook k at step n holds frame n - k, the
  pad token elsewhere. The pad id V is not in the decoder's output vocabulary, so the
  logits get one extra column (0.0) and the validity mask `[K, L, V + 1]` allows only the
  pad where the pattern says so and never elsewhere: sampling then keeps the pattern valid
  at every step, and both policies' KL is exactly 0 at forced positions;
- decoding: the transformers decoder with its own KV cache (self and cross attention) over
  whatever rows it is given: the suite's sampler runs prompt + negative prompt as 2B rows
  in ONE forward per step, which MusicGen's own `generate` cannot (it knows the null
  condition only);
- audio: the tokens un-delayed to `[B, K, frames]` codes, decoded by EnCodec;
- trainable: the decoder and the text projection (`lm`); T5 and EnCodec stay frozen.

Weights come from a local directory (`from_pretrained(path, local_files_only=True)`);
nothing is downloaded at run time. `tiny=True` builds a small random model from a config
(seeded) with a word-hashing tokenizer, so every path runs on a CPU in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from suite.models.hash_tokenizer import HashTokenizer
from suite.policies.base import Policy, TextCond

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")  # fmt: skip
#: A small random MusicGen: T5 with 1 layer, a 2-layer decoder, EnCodec at 32 kHz, 4 codebooks.
TINY = {"text_vocab": 99, "text_dim": 16, "codes": 64, "hidden": 32, "layers": 2, "heads": 2,
        "ffn": 64, "codebooks": 4}  # fmt: skip


def delay_mask(codebooks: int, frames: int, codes: int) -> torch.Tensor:
    """Validity `[K, L, V + 1]` of the delay pattern: a code at (k, n) iff 0 <= n - k < frames."""
    L = frames + codebooks - 1
    allowed = torch.zeros(codebooks, L, codes + 1, dtype=torch.bool)
    for k in range(codebooks):
        real = torch.zeros(L, dtype=torch.bool)
        real[k : k + frames] = True
        allowed[k, :, :codes] = real[:, None]
        allowed[k, :, codes] = ~real
    return allowed


def delay(codes: torch.Tensor, pad: int) -> torch.Tensor:
    """Codes `[B, K, F]` -> delayed tokens `[B, K, F + K - 1]` (pad elsewhere)."""
    B, K, F = codes.shape
    tokens = torch.full((B, K, F + K - 1), pad, dtype=codes.dtype, device=codes.device)
    for k in range(K):
        tokens[:, k, k : k + F] = codes[:, k]
    return tokens


def undelay(tokens: torch.Tensor, frames: int) -> torch.Tensor:
    """Delayed tokens `[B, K, L]` -> codes `[B, K, frames]` (the inverse of `delay`)."""
    return torch.stack([tokens[:, k, k : k + frames] for k in range(tokens.shape[1])], dim=1)


class _HFTokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, prompts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tokenizer(prompts, padding=True, truncation=True, max_length=max_length,
                             return_tensors="pt")  # fmt: skip
        return out["input_ids"], out["attention_mask"]


class DecoderSide(nn.Module):
    """The trainable part: MusicGen's decoder (with its K heads) and the text projection."""

    def __init__(self, decoder: nn.Module, proj: nn.Module | None):
        super().__init__()
        self.decoder = decoder
        self.proj = proj if proj is not None else nn.Identity()

    def encoder_states(self, cond: TextCond) -> tuple[torch.Tensor, torch.Tensor]:
        mask = cond.mask.long()
        states = self.proj(cond.states.to(next(self.parameters()).dtype)) * mask[..., None]
        return states, mask  # [B, T, D], [B, T]

    def hidden(self, inputs: torch.Tensor, states, mask) -> torch.Tensor:
        """Inputs `[B, K, n]` -> the decoder's final hidden states `[B, n, D]` (no cache)."""
        B, K, n = inputs.shape
        out = self.decoder.model(input_ids=inputs.reshape(B * K, n), encoder_hidden_states=states,
                                 encoder_attention_mask=mask)  # fmt: skip
        return out.last_hidden_state

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden `[B, n, D]` -> logits `[B, K, n, V + 1]` float32 (the K heads + the pad column)."""
        logits = torch.stack([h(hidden) for h in self.decoder.lm_heads], dim=1).float()
        pad = torch.zeros(*logits.shape[:-1], 1, dtype=logits.dtype, device=logits.device)
        return torch.cat([logits, pad], dim=-1)

    def logits(self, inputs: torch.Tensor, states, mask, cache=None, use_cache=False):
        """Inputs `[B, K, n]` -> (logits `[B, K, n, V + 1]` float32, cache)."""
        B, K, n = inputs.shape
        out = self.decoder(input_ids=inputs.reshape(B * K, n), encoder_hidden_states=states,
                           encoder_attention_mask=mask, cache=cache, use_cache=use_cache)  # fmt: skip
        logits = out.logits.float().view(B, K, n, -1)  # [B, K, n, V]
        pad = torch.zeros(B, K, n, 1, dtype=logits.dtype, device=logits.device)
        return torch.cat([logits, pad], dim=-1), out.cache


@dataclass
class _State:
    cache: Any
    states: torch.Tensor
    mask: torch.Tensor


class MusicGenPolicy(Policy):
    """MusicGen behind `suite.policies.Policy` (module docstring).

    Args:
        model: a `MusicgenForConditionalGeneration` (mono).
        tokenizer: prompts -> (ids, mask); `HashTokenizer` for random tiny models.
        frames: EnCodec frames per generation (50 per second: 500 = 10 s).
        max_text_tokens: prompts are truncated to this many tokens.
    """

    TRAINABLE = "lm"

    def __init__(self, model: nn.Module, tokenizer, frames: int = 500, max_text_tokens: int = 64):
        super().__init__()
        if getattr(model.config.decoder, "audio_channels", 1) != 1:
            raise ValueError("MusicGenPolicy: stereo MusicGen checkpoints are not supported (audio_channels != 1)")
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ValueError(f"MusicGenPolicy: frames must be an int >= 1, got {frames!r}")
        dec = model.config.decoder
        self.num_codebooks, self.codes, self.frames = dec.num_codebooks, dec.vocab_size, frames
        self.seq_len, self.vocab_size, self.pad = frames + dec.num_codebooks - 1, dec.vocab_size + 1, dec.vocab_size
        if self.seq_len + 1 > dec.max_position_embeddings:
            raise ValueError(
                f"MusicGenPolicy: frames={frames} needs {self.seq_len + 1} decoder positions, the "
                f"checkpoint has {dec.max_position_embeddings}"
            )
        self.start_id = dec.decoder_start_token_id
        self.sample_rate = int(model.config.audio_encoder.sampling_rate)
        self.max_text_tokens = int(max_text_tokens)
        self.text_encoder = model.text_encoder.eval().requires_grad_(False)
        self.codec = model.audio_encoder.eval().requires_grad_(False)
        self.lm = DecoderSide(model.decoder, getattr(model, "enc_to_dec_proj", None))
        self._tokenizer = tokenizer
        self._arch = {"hidden_size": dec.hidden_size, "num_hidden_layers": dec.num_hidden_layers,
                      "num_attention_heads": dec.num_attention_heads, "ffn_dim": dec.ffn_dim,
                      "num_codebooks": dec.num_codebooks, "vocab_size": dec.vocab_size}  # fmt: skip
        self.register_buffer("_allowed", delay_mask(self.num_codebooks, frames, self.codes),
                             persistent=False)  # fmt: skip

    # ------------------------------------------------------------------ building
    @classmethod
    def from_spec(cls, checkpoint: str | None = None, tiny: bool = False, seed: int = 0,
                  frames: int = 500, max_text_tokens: int = 64) -> MusicGenPolicy:  # fmt: skip
        """From a local checkpoint directory, or (`tiny=True`) a small random model."""
        if (checkpoint is None) == (not tiny):
            raise ValueError(
                "MusicGenPolicy: give either checkpoint=<local directory> or tiny=true, not "
                f"{'both' if tiny else 'neither'}"
            )
        if tiny:
            model, tokenizer = tiny_musicgen(seed)
        else:
            model, tokenizer = load_local(checkpoint)
        return cls(model, tokenizer, frames=frames, max_text_tokens=max_text_tokens)

    def architecture(self) -> dict[str, Any]:
        return dict(self._arch)

    # ------------------------------------------------------------------ conditioning
    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> TextCond:
        prompts = list(prompts)
        device = next(self.text_encoder.parameters()).device
        D = self.text_encoder.config.d_model
        real = [i for i, p in enumerate(prompts) if p.strip()]
        if not real:
            return TextCond(torch.zeros(len(prompts), 1, D, device=device),
                            torch.zeros(len(prompts), 1, dtype=torch.bool, device=device))  # fmt: skip
        ids, mask = self._tokenizer([prompts[i] for i in real], self.max_text_tokens)
        ids, mask = ids.to(device), mask.to(device)
        hidden = self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        states = torch.zeros(len(prompts), ids.shape[1], D, device=device)
        full = torch.zeros(len(prompts), ids.shape[1], dtype=torch.bool, device=device)
        states[real], full[real] = hidden, mask.bool()
        return TextCond(states, full)  # "" rows: zero states, mask False (the null condition)

    # ------------------------------------------------------------------ decoding
    def _bos(self, rows: int, n: int = 1) -> torch.Tensor:
        device = self._allowed.device
        return torch.full((rows, self.num_codebooks, n), self.start_id, dtype=torch.long, device=device)

    def start(self, cond: TextCond) -> tuple[_State, torch.Tensor]:
        states, mask = self.lm.encoder_states(cond)
        logits, cache = self.lm.logits(self._bos(cond.batch_size), states, mask, use_cache=True)
        return _State(cache, states, mask), logits[:, :, 0]  # [B, K, V + 1]

    def step(self, tokens: torch.Tensor, state: _State) -> torch.Tensor:
        logits, state.cache = self.lm.logits(tokens[:, :, None], state.states, state.mask,
                                             cache=state.cache, use_cache=True)  # fmt: skip
        return logits[:, :, 0]  # [B, K, V + 1]

    def forward(self, tokens: torch.Tensor, cond: TextCond) -> torch.Tensor:
        B, K, L = tokens.shape
        if K != self.num_codebooks:
            raise ValueError(f"MusicGenPolicy: tokens must be [B, {self.num_codebooks}, L], got {tuple(tokens.shape)}")
        states, mask = self.lm.encoder_states(cond)
        inputs = torch.cat([self._bos(B), tokens[:, :, : L - 1]], dim=2)  # [B, K, L]
        return self.lm.logits(inputs, states, mask)[0]  # [B, K, L, V + 1]

    def hidden(self, tokens: torch.Tensor, cond: TextCond) -> torch.Tensor:
        B, K, L = tokens.shape
        states, mask = self.lm.encoder_states(cond)
        return self.lm.hidden(torch.cat([self._bos(B), tokens[:, :, : L - 1]], dim=2), states, mask)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm.head(hidden)

    def allowed_mask(self) -> torch.Tensor:
        return self._allowed

    # ------------------------------------------------------------------ audio
    @torch.no_grad()
    def to_audio(self, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
        codes = undelay(tokens, self.frames).clamp(max=self.codes - 1)  # [B, K, F]
        audio = self.codec.decode(codes[None], [None]).audio_values  # [B, 1, S]
        return audio[:, 0].float(), self.sample_rate


# ---------------------------------------------------------------------- loading
def tiny_musicgen(seed: int = 0):
    """A small random MusicGen (`TINY`) and a hashing tokenizer, built offline in a second."""
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )  # fmt: skip
    from transformers.utils import logging as hf_logging

    t = TINY
    text = T5Config(vocab_size=t["text_vocab"], d_model=t["text_dim"], d_kv=8, d_ff=32,
                    num_layers=1, num_heads=2)  # fmt: skip
    audio = EncodecConfig(target_bandwidths=[2.2], sampling_rate=32000, audio_channels=1,
                          num_filters=4, num_residual_layers=1, upsampling_ratios=[8, 5, 4, 4],
                          codebook_size=t["codes"], hidden_size=16, codebook_dim=16,
                          num_lstm_layers=1)  # fmt: skip
    special = t["codes"]  # MusicGen's pad / start id is the codebook size
    decoder = MusicgenDecoderConfig(vocab_size=t["codes"], hidden_size=t["hidden"],
                                    num_hidden_layers=t["layers"], num_attention_heads=t["heads"],
                                    ffn_dim=t["ffn"], num_codebooks=t["codebooks"],
                                    max_position_embeddings=1024, pad_token_id=special,
                                    decoder_start_token_id=special, bos_token_id=special)  # fmt: skip
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the pad id = codebook size is MusicGen's own convention
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MusicgenForConditionalGeneration(MusicgenConfig(
                text_encoder=text, audio_encoder=audio, decoder=decoder))  # fmt: skip
            # EnCodec's codebooks start at zero (k-means fills them in training): random
            # ones, so that different codes decode to different audio.
            for layer in model.audio_encoder.quantizer.layers:
                layer.codebook.embed.normal_(0.0, 30.0)
            for name, param in model.audio_encoder.decoder.named_parameters():
                if name.endswith("bias"):
                    param.data.zero_()  # no DC offset drowning what the codes say
            # Weights large enough that prompt, negative prompt and null condition give
            # visibly different logits (CFG then has something to distil).
            for param in model.decoder.parameters():
                if param.dim() == 2:
                    param.data.normal_(0.0, 0.3)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval(), HashTokenizer(t["text_vocab"], first=2, eos=1, pad=0)


def load_local(checkpoint: str):
    """MusicGen and its tokenizer from a local directory; clear errors, no download."""
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"MusicGenPolicy: checkpoint directory {path} does not exist. Nothing is downloaded at "
            f"run time: copy a MusicGen checkpoint there first (e.g. `huggingface-cli download "
            f"facebook/musicgen-small --local-dir {path}` on a machine with internet access)"
        )
    missing = [f for f in ("config.json",) if not (path / f).is_file()]
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        missing.append(" or ".join(_WEIGHT_FILES[::2]))
    if missing:
        raise ValueError(f"MusicGenPolicy: {path} is not a MusicGen checkpoint: missing {', '.join(missing)}")
    try:
        model = MusicgenForConditionalGeneration.from_pretrained(str(path), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except OSError as err:
        raise ValueError(
            f"MusicGenPolicy: cannot load {path} without downloading ({str(err).splitlines()[0]}); "
            f"nothing is downloaded at run time: point checkpoint at a complete local copy "
            f"(config.json, weights, tokenizer files)"
        ) from err
    return model.eval(), _HFTokenizer(tokenizer)
