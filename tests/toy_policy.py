"""A deliberately different policy: proof that the interface is not shaped by the music world.

`ToyCodecPolicy` looks like a tiny MusicGen, not like the world's TokenLM:

- K = 2 parallel codebooks with a DELAY pattern: codebook k at step n holds frame n - k;
  steps before a codebook's first frame and after its last hold the pad token, and the
  validity mask `[K, L, V]` allows only the pad there (only real codes elsewhere);
- text conditioning is a SEQUENCE of word states `[B, T, D]` with a mask (T varies with
  the prompt), read by cross-attention; "" is the null condition (one zero state);
- an encoder-decoder split: the word table is a frozen "text encoder", only the decoder
  trains, exports and merges;
- incremental decoding with a self-attention KV cache and cross-attention keys / values
  computed once per run;
- audio: frames un-delayed, codebook 0 picks a pitch and codebook 1 a loudness of a
  0.3 s tone at 16 kHz (3 s for 10 frames).

Weights are random (seeded), so two builds from the same spec are the same base model.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from suite.policies import Policy, TextCond


@dataclass
class _State:
    """Decoding state: self-attention cache `[layers, 2, B, H, L, Dh]`, cross K/V, position."""

    kv: torch.Tensor
    cross: list[tuple[torch.Tensor, torch.Tensor]]
    text_mask: torch.Tensor  # [B, T]
    pos: int


class _Layer(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.q_x = nn.Linear(d, d)
        self.kv_x = nn.Linear(d, 2 * d)
        self.proj_x = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, H, T, Dh]
        B, T, D = x.shape
        return x.view(B, T, self.heads, D // self.heads).transpose(1, 2)

    def cross_kv(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv_x(text).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)  # [B, H, T, Dh]

    def forward(self, x, kv_cache, pos, cross, text_mask):
        """x [B, n, D] at positions pos..pos+n-1; writes its keys / values into kv_cache."""
        B, n, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        kv_cache[0, :, :, pos : pos + n] = self._heads(k)
        kv_cache[1, :, :, pos : pos + n] = self._heads(v)
        keys, values = kv_cache[0, :, :, : pos + n], kv_cache[1, :, :, : pos + n]
        causal = torch.ones(n, pos + n, dtype=torch.bool, device=x.device).tril(pos)  # [n, pos+n]
        att = F.scaled_dot_product_attention(self._heads(q), keys, values, attn_mask=causal)
        x = x + self.proj(att.transpose(1, 2).reshape(B, n, D))
        ck, cv = cross
        mask = text_mask[:, None, None, :]  # [B, 1, 1, T]
        att = F.scaled_dot_product_attention(self._heads(self.q_x(self.ln2(x))), ck, cv, attn_mask=mask)
        x = x + self.proj_x(att.transpose(1, 2).reshape(B, n, D))
        return x + self.mlp(self.ln3(x))


class _Decoder(nn.Module):
    def __init__(self, K: int, V: int, L: int, d: int, layers: int, heads: int):
        super().__init__()
        self.K, self.V, self.L, self.d, self.heads = K, V, L, d, heads
        self.emb = nn.ModuleList(nn.Embedding(V, d) for _ in range(K))
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.pos = nn.Parameter(torch.randn(L, d) * 0.02)
        self.layers = nn.ModuleList(_Layer(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.heads_out = nn.Linear(d, K * V)

    def inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Step inputs `[B, n, D]`: the sum of the K codebooks' embeddings of tokens `[B, K, n]`."""
        return sum(self.emb[k](tokens[:, k]) for k in range(self.K))

    def run(self, x, state: _State) -> torch.Tensor:
        n = x.shape[1]
        x = x + self.pos[state.pos : state.pos + n]
        for i, layer in enumerate(self.layers):
            x = layer(x, state.kv[i], state.pos, state.cross[i], state.text_mask)
        state.pos += n
        B = x.shape[0]
        return self.heads_out(self.ln(x)).view(B, n, self.K, self.V).float()  # [B, n, K, V]


class ToyCodecPolicy(Policy):
    """A two-codebook encoder-decoder with a delay pattern (module docstring)."""

    TRAINABLE = "decoder"

    def __init__(self, seed: int = 0, frames: int = 10, codes: int = 15, d_model: int = 32,
                 layers: int = 1, heads: int = 2, words: int = 97):  # fmt: skip
        super().__init__()
        K = 2
        self.num_codebooks, self.frames, self.codes = K, frames, codes
        self.seq_len, self.vocab_size, self.pad = frames + K - 1, codes + 1, codes
        self.sample_rate = 16000
        self.words = words
        self._arch = dict(frames=frames, codes=codes, d_model=d_model, layers=layers, heads=heads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.text = nn.Embedding(words, d_model)  # the frozen "text encoder"
            self.decoder = _Decoder(K, self.vocab_size, self.seq_len, d_model, layers, heads)
        self.text.requires_grad_(False)
        allowed = torch.zeros(K, self.seq_len, self.vocab_size, dtype=torch.bool)
        for k in range(K):
            for n in range(self.seq_len):
                real = 0 <= n - k < frames
                allowed[k, n, : codes] = real
                allowed[k, n, self.pad] = not real
        self.register_buffer("_allowed", allowed, persistent=False)

    @classmethod
    def from_spec(cls, **spec) -> ToyCodecPolicy:
        return cls(**spec)

    def architecture(self) -> dict:
        return dict(self._arch)

    # ------------------------------------------------------------------ conditioning
    def _word_ids(self, prompt: str) -> list[int]:
        return [int(hashlib.sha1(w.lower().encode()).hexdigest(), 16) % self.words
                for w in prompt.split()]  # fmt: skip

    def encode_text(self, prompts: Sequence[str]) -> TextCond:
        ids = [self._word_ids(p) for p in prompts]
        T = max([len(i) for i in ids] + [1])
        D = self.text.embedding_dim
        states = torch.zeros(len(prompts), T, D, device=self.text.weight.device)
        mask = torch.zeros(len(prompts), T, dtype=torch.bool, device=states.device)
        for b, row in enumerate(ids):
            if row:  # a real prompt: its word states
                states[b, : len(row)] = self.text(torch.tensor(row, device=states.device))
                mask[b, : len(row)] = True
            else:  # "": the null condition, one zero state
                mask[b, 0] = True
        return TextCond(states, mask)

    # ------------------------------------------------------------------ decoding
    def _fresh(self, cond: TextCond) -> _State:
        dec = self.decoder
        B, H = cond.batch_size, dec.heads
        kv = torch.zeros(len(dec.layers), 2, B, H, self.seq_len, dec.d // H,
                         device=cond.states.device)  # fmt: skip
        cross = [layer.cross_kv(cond.states) for layer in dec.layers]
        return _State(kv, cross, cond.mask, 0)

    def start(self, cond: TextCond) -> tuple[_State, torch.Tensor]:
        state = self._fresh(cond)
        x = self.decoder.bos.expand(cond.batch_size, 1, -1)
        return state, self.decoder.run(x, state)[:, 0]  # [B, K, V]

    def step(self, tokens: torch.Tensor, state: _State) -> torch.Tensor:
        x = self.decoder.inputs(tokens[:, :, None])  # [B, 1, D]
        return self.decoder.run(x, state)[:, 0]  # [B, K, V]

    def forward(self, tokens: torch.Tensor, cond: TextCond) -> torch.Tensor:
        B, K, L = tokens.shape
        state = self._fresh(cond)
        bos = self.decoder.bos.expand(B, 1, -1)
        x = torch.cat([bos, self.decoder.inputs(tokens[:, :, : L - 1])], dim=1)  # [B, L, D]
        return self.decoder.run(x, state).permute(0, 2, 1, 3)  # [B, K, L, V]

    def allowed_mask(self) -> torch.Tensor:
        return self._allowed

    # ------------------------------------------------------------------ audio
    def to_audio(self, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
        B = tokens.shape[0]
        frames = torch.stack([tokens[:, k, k : k + self.frames] for k in range(2)], 1)  # [B, 2, F]
        frames = frames.clamp(max=self.codes - 1).float()
        n = int(0.3 * self.sample_rate)
        t = torch.arange(n, device=tokens.device) / self.sample_rate  # [n]
        hz = 220.0 * 2 ** (frames[:, 0] / 12.0)  # [B, F]
        loud = 0.1 + 0.4 * frames[:, 1] / (self.codes - 1)  # [B, F]
        tone = torch.sin(2 * math.pi * hz[..., None] * t) * loud[..., None]  # [B, F, n]
        return tone.reshape(B, -1), self.sample_rate
