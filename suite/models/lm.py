"""Text-conditioned decoder-only token LM: the base model theta_init (paper section 3, app. B).

The paper fine-tunes a pretrained autoregressive music model m(s | y_<n, x) (MusicLM's
single-stage LM, Cideron et al. 2024). This module is the suite's stand-in: a small pre-norm
GPT-style transformer over the music tokens, conditioned on the text tower's sentence
embedding `cond [B, 384]`.

Conditioning by prefix tokens, not cross-attention. The condition is projected to
`n_prefix` vectors (each with its own learned position) placed before the music tokens;
the last prefix vector plays the role of BOS. We chose a prefix because:

- one KV cache holds everything: the prefix keys/values are written once by `start` and
  every decoding step attends to them like any earlier token, so there is no second
  (cross-attention) cache and no per-layer encoder projection to keep;
- classifier-free guidance (eq. 1) needs the same sequence under two conditions; with a
  prefix, the conditional and negative rows are just 2B rows of one batch sharing one
  cache layout and one forward, which is what `suite.sampling` does.

The null condition (the empty prompt, and pretraining's condition dropout) is an all-zero
`cond` row (shared contract); such rows are replaced by a learned null prefix, so the
unconditional model m(. | y_<n, "") is learned jointly, as CFG requires.

Layout of one sequence (P = n_prefix, L = seq_len):

    input:  [p_0 ... p_{P-1}, t_0, ..., t_{L-2}]      length P + L - 1
    output: logits at input positions P-1 ... P+L-2  -> predict t_0 ... t_{L-1}

so `forward(tokens, cond)[:, n]` is the distribution of `tokens[:, n]` given
`tokens[:, :n]` and the condition (teacher forcing).

Incremental decoding: `start(cond)` fills a preallocated cache (`suite.models.kv_cache`:
`kv [n_layers, 2, B, H, <= P + L - 1, Dh]`, kept compact on CPU) with the prefix and
returns the logits of token 0; each `step(token, cache)` writes one position in place and
returns the logits of the next token. The step path calls functional ops on the weights
directly to keep per-token Python overhead small (see benchmarks/bench_sampling.py).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from suite.models.kv_cache import KVCache

COND_DIM = 384

#: Architecture sizes (the lead mirrors these as Hydra config groups `conf/model/*.yaml`).
#: `tiny` trains on 2 CPU cores in minutes; `small` and `base` are meant for a GPU.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=128, n_layers=3, n_heads=4, d_ff=512, n_prefix=2, dropout=0.0),
    "small": dict(d_model=256, n_layers=6, n_heads=8, d_ff=1024, n_prefix=4, dropout=0.1),
    "base": dict(d_model=512, n_layers=8, n_heads=8, d_ff=2048, n_prefix=8, dropout=0.1),
}

#: Keys of `TokenLM.config`, i.e. the constructor arguments.
CONFIG_KEYS = (
    "vocab_size",
    "seq_len",
    "d_model",
    "n_layers",
    "n_heads",
    "d_ff",
    "cond_dim",
    "n_prefix",
    "dropout",
    "tie_embeddings",
)

_FORMAT = "suite.TokenLM/1"


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)  # fused q, k, v: one matmul per step
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None) -> torch.Tensor:
        """Causal self-attention over x [B, T, D] starting at position 0.

        If `kv` ([2, B, H, T_max, Dh], a view of a cache) is given, the keys and values of
        positions 0..T-1 are written into it (used by `TokenLM.start`).
        """
        B, T, D = x.shape
        H = self.n_heads
        p = self.dropout if self.training else 0.0
        h = self.ln1(x)
        qkv = self.qkv(h).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # [3, B, H, T, Dh]
        if kv is not None:
            kv[:, :, :, :T].copy_(qkv[1:])
        att = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], dropout_p=p, is_causal=True)
        att = att.transpose(1, 2).reshape(B, T, D)  # [B, T, D]
        x = x + F.dropout(self.proj(att), p, self.training)
        h = self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return x + F.dropout(h, p, self.training)


class TokenLM(nn.Module):
    """Decoder-only transformer m(s_n | y_<n, x) over music tokens with a text prefix.

    Args (plain values, so Hydra configs and checkpoints can rebuild it):
        vocab_size: V, number of music tokens.
        seq_len: L, tokens per piece (the generation length).
        d_model, n_layers, n_heads, d_ff: transformer width, depth, heads, MLP width.
        cond_dim: C, width of the text embedding (384 for all-MiniLM-L6-v2).
        n_prefix: P, number of prefix vectors the condition is projected to.
        dropout: residual and attention dropout during training.
        tie_embeddings: share the token embedding and output head weights.
    """

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        d_model: int = 128,
        n_layers: int = 3,
        n_heads: int = 4,
        d_ff: int = 512,
        cond_dim: int = COND_DIM,
        n_prefix: int = 2,
        dropout: float = 0.0,
        tie_embeddings: bool = True,
    ):
        super().__init__()
        for name, value in [
            ("vocab_size", vocab_size),
            ("seq_len", seq_len),
            ("d_model", d_model),
            ("n_layers", n_layers),
            ("n_heads", n_heads),
            ("d_ff", d_ff),
            ("cond_dim", cond_dim),
            ("n_prefix", n_prefix),
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TokenLM: {name} must be an int >= 1, got {value!r}")
        if d_model % n_heads:
            raise ValueError(
                f"TokenLM: d_model ({d_model}) must be divisible by n_heads ({n_heads})"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"TokenLM: dropout must be in [0, 1), got {dropout!r}")
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.d_ff = d_ff
        self.cond_dim = cond_dim
        self.n_prefix = n_prefix
        self.dropout = float(dropout)
        self.tie_embeddings = bool(tie_embeddings)
        self.max_positions = n_prefix + seq_len - 1  # the last token is never an input

        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Parameter(torch.zeros(self.max_positions, d_model))
        self.cond_proj = nn.Linear(cond_dim, n_prefix * d_model)
        self.null_prefix = nn.Parameter(torch.zeros(n_prefix, d_model))
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, d_ff, self.dropout) for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        if self.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 style: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * depth)
        # so the residual stream's variance does not grow with depth.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        for block in self.blocks:
            nn.init.normal_(block.proj.weight, std=0.02 / math.sqrt(2 * self.n_layers))
            nn.init.normal_(block.fc2.weight, std=0.02 / math.sqrt(2 * self.n_layers))
        nn.init.normal_(self.pos_emb, std=0.01)
        nn.init.normal_(self.null_prefix, std=0.02)

    # ------------------------------------------------------------------ config / checkpoints
    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments; `TokenLM.from_config(m.config)` rebuilds the architecture."""
        return {key: getattr(self, key) for key in CONFIG_KEYS}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TokenLM:
        unknown = sorted(set(config) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError(
                f"TokenLM.from_config: unknown keys {unknown}; expected a subset of {list(CONFIG_KEYS)}"
            )
        missing = [k for k in ("vocab_size", "seq_len") if k not in config]
        if missing:
            raise ValueError(f"TokenLM.from_config: missing required keys {missing}")
        return cls(**config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def load_state_dict_checked(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load weights, refusing (ValueError) any key or shape mismatch, named in the message."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        shapes = [
            f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
            for k in sorted(set(own) & set(state_dict))
            if tuple(state_dict[k].shape) != tuple(own[k].shape)
        ]
        if missing or unexpected or shapes:
            parts = []
            if shapes:
                parts.append("shape mismatches: " + "; ".join(shapes))
            if missing:
                parts.append(f"missing keys: {missing}")
            if unexpected:
                parts.append(f"unexpected keys: {unexpected}")
            raise ValueError(
                "TokenLM: checkpoint is of another architecture (model config "
                f"{self.config}); " + " | ".join(parts)
            )
        self.load_state_dict(state_dict)

    def save(self, path: str | os.PathLike) -> None:
        """Write `{format, config, state_dict}` atomically (temp file, then os.replace)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": _FORMAT, "config": self.config, "state_dict": self.state_dict()}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load weights from a `save` file or a Lightning checkpoint into this model."""
        from suite.models.lm_checkpoint import read_checkpoint

        config, state_dict = read_checkpoint(path)
        diff = {
            k: (config[k], self.config[k])
            for k in CONFIG_KEYS
            if k in config and config[k] != self.config[k]
        }
        if diff:
            detail = ", ".join(
                f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in diff.items()
            )
            raise ValueError(f"TokenLM.load_weights: {path} is of another architecture ({detail})")
        self.load_state_dict_checked(state_dict)

    # ------------------------------------------------------------------ teacher forcing
    def _check_cond(self, cond: torch.Tensor, batch: int | None, where: str) -> None:
        if not isinstance(cond, torch.Tensor) or not cond.is_floating_point():
            raise TypeError(f"TokenLM.{where}: cond must be a float tensor [B, {self.cond_dim}]")
        if cond.dim() != 2 or cond.shape[1] != self.cond_dim:
            raise ValueError(
                f"TokenLM.{where}: cond must have shape [B, {self.cond_dim}], got {tuple(cond.shape)}"
            )
        if batch is not None and cond.shape[0] != batch:
            raise ValueError(f"TokenLM.{where}: cond batch {cond.shape[0]} != tokens batch {batch}")

    def prefix(self, cond: torch.Tensor) -> torch.Tensor:
        """Prefix vectors [B, P, D] of the condition; all-zero rows get the learned null prefix."""
        B = cond.shape[0]
        pre = self.cond_proj(cond).view(B, self.n_prefix, self.d_model)  # [B, P, D]
        is_null = (cond == 0).all(dim=-1)  # [B]
        pre = torch.where(is_null[:, None, None], self.null_prefix.to(pre.dtype), pre)
        return pre + self.pos_emb[: self.n_prefix]

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """Output logits in float32 even under bf16/fp16 autocast.

        CFG extrapolates (gamma * cond + (1 - gamma) * neg with gamma = 3), which multiplies
        half-precision rounding; the sampler and the teacher-forced scorer must also agree
        on the logits, or sampling is off-policy for the KL and REINFORCE terms.
        """
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.linear(x.float(), self.head.weight.float())

    def forward(self, tokens: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, N, V] for tokens [B, N] (1 <= N <= seq_len).

        logits[:, n] is the distribution of tokens[:, n] given tokens[:, :n] and cond;
        tokens[:, N-1] is therefore never read.
        """
        return self._head(self.hidden_states(tokens, cond))  # [B, N, V] float32

    def hidden_states(self, tokens: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The final (normed) hidden states [B, N, D] that `forward` maps to logits."""
        if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.long, torch.int):
            raise TypeError("TokenLM.forward: tokens must be an integer tensor [B, N]")
        if tokens.dim() != 2 or not 1 <= tokens.shape[1] <= self.seq_len:
            raise ValueError(
                f"TokenLM.forward: tokens must have shape [B, N] with 1 <= N <= {self.seq_len}, "
                f"got {tuple(tokens.shape)}"
            )
        B, N = tokens.shape
        self._check_cond(cond, B, "forward")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(
                f"TokenLM.forward: token ids must be in [0, {self.vocab_size}), got range "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )
        P = self.n_prefix
        x_tok = self.tok_emb(tokens[:, : N - 1]) + self.pos_emb[P : P + N - 1]  # [B, N-1, D]
        x = torch.cat([self.prefix(cond), x_tok], dim=1)  # [B, P+N-1, D]
        x = F.dropout(x, self.dropout, self.training)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x[:, P - 1 :])  # [B, N, D]

    # ------------------------------------------------------------------ incremental decoding
    def start(
        self, cond: torch.Tensor, compact: bool | None = None
    ) -> tuple[KVCache, torch.Tensor]:
        """Encode the condition prefix into a fresh cache; return (cache, logits [B, V] of token 0).

        `compact`: the cache layout (`suite.models.kv_cache`; default compact on CPU).
        """
        self._check_cond(cond, None, "start")
        B = cond.shape[0]
        cache = KVCache(
            self.n_layers,
            B,
            self.n_heads,
            self.d_model // self.n_heads,
            self.max_positions,
            dtype=self.pos_emb.dtype,
            device=self.pos_emb.device,
            compact=compact,
        )
        kv = cache.reserve(self.n_prefix)  # [n_layers, 2, B, H, >= P, Dh]
        x = self.prefix(cond)  # [B, P, D]
        for layer, block in enumerate(self.blocks):
            x = block(x, kv=kv[layer])
        cache.length = self.n_prefix
        logits = self._head(self.ln_f(x[:, -1]))  # [B, V] float32
        return cache, logits

    def step(self, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Feed one token per row (token [B]) and return logits [B, V] of the next one.

        Writes this position's keys/values into `cache` in place. The hot loop of sampling:
        functional calls on the weights (no module __call__), one fused qkv matmul per
        layer and no per-step allocation of cache memory. An inference path: no dropout.
        """
        pos = cache.length
        if pos >= cache.capacity:
            raise ValueError(
                f"TokenLM.step: cache is full ({cache.capacity} positions = prefix + "
                f"seq_len - 1); at most {self.seq_len - 1} tokens can be fed"
            )
        if token.shape != (cache.batch_size,):
            raise ValueError(
                f"TokenLM.step: token must have shape [{cache.batch_size}], got {tuple(token.shape)}"
            )
        B, H, D = cache.batch_size, self.n_heads, self.d_model
        Dh = D // H
        scale = Dh**-0.5
        kv = cache.reserve(pos + 1)  # [n_layers, 2, B, H, >= pos + 1, Dh]
        x = F.embedding(token, self.tok_emb.weight) + self.pos_emb[pos]  # [B, D]
        for layer, blk in enumerate(self.blocks):
            h = F.layer_norm(x, (D,), blk.ln1.weight, blk.ln1.bias, blk.ln1.eps)
            qkv = F.linear(h, blk.qkv.weight, blk.qkv.bias).view(B, 3, H, Dh)  # [B, 3, H, Dh]
            kv[layer, :, :, :, pos].copy_(qkv[:, 1:].transpose(0, 1))  # [2, B, H, Dh]
            keys = kv[layer, 0, :, :, : pos + 1].reshape(B * H, pos + 1, Dh)  # a view
            values = kv[layer, 1, :, :, : pos + 1].reshape(B * H, pos + 1, Dh)
            # One query per row: batched matmuls beat SDPA's CPU kernel, which is tuned for
            # long queries (2-3x faster here at batch 64; benchmarks/bench_sampling.py); 3-D
            # bmm is what 4-D matmul calls, without its broadcasting work (same results).
            q = qkv[:, 0].reshape(B * H, 1, Dh).mul(scale)  # [B*H, 1, Dh]
            scores = torch.bmm(q, keys.transpose(1, 2))  # [B*H, 1, pos + 1]
            att = torch.bmm(torch.softmax(scores, dim=-1), values)  # [B*H, 1, Dh]
            x = x + F.linear(att.view(B, D), blk.proj.weight, blk.proj.bias)
            h = F.layer_norm(x, (D,), blk.ln2.weight, blk.ln2.bias, blk.ln2.eps)
            h = F.gelu(F.linear(h, blk.fc1.weight, blk.fc1.bias))
            x = x + F.linear(h, blk.fc2.weight, blk.fc2.bias)
        cache.length = pos + 1
        x = F.layer_norm(x, (D,), self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)
        return self._head(x)  # [B, V] float32
