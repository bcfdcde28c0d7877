"""Autoregressive sampling and teacher-forced scoring with classifier-free guidance.

Implements the sampling side of the paper's section 2:

- CFG logits, eq. (1): z_n = gamma * m(s_n | y_<n, x) + (1 - gamma) * m(s_n | y_<n, x-),
  computed by `suite.objectives.cfg_logits` (the maths lives there); the CFG policy is
  softmax(z_n / T). The conditional rows (prompt x) and the negative rows (x-, e.g. "Bad
  audio quality.", or the all-zero null condition for unconditional CFG) go through ONE
  batched forward of 2B rows that share one KV cache (DESIGN.md section 3).
- Grammar masking: `mask_logits` sets disallowed tokens to `MASK_VALUE`, a large finite
  negative (not -inf, so CFG arithmetic and KLs stay finite), AFTER the CFG combination,
  so that teacher and student share the same support.
- `sample`: incremental decoding with the model's KV cache; temperature, top-k and top-p
  (all off by default; CFG distillation samples from the policy itself, with none of them).
  gamma = 1 skips the negative rows entirely, so it reproduces plain sampling exactly.
- `score`: one teacher-forced parallel forward over given sequences returning the
  conditional, negative and CFG logits, used by distillation's per-position KL (eq. 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from suite.objectives import cfg_logits

MASK_VALUE = -1e9


def mask_logits(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Logits [..., L, V] with disallowed entries (allowed [L, V] False) set to MASK_VALUE."""
    if not isinstance(allowed, torch.Tensor) or allowed.dtype != torch.bool:
        raise TypeError("mask_logits: allowed must be a bool tensor [L, V]")
    if logits.dim() < 2 or tuple(logits.shape[-2:]) != tuple(allowed.shape):
        raise ValueError(
            f"mask_logits: logits [..., L, V] {tuple(logits.shape)} do not end with the "
            f"allowed mask's shape {tuple(allowed.shape)}"
        )
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # MASK_VALUE overflows half precision
    return logits.masked_fill(~allowed.to(logits.device), MASK_VALUE)


@dataclass
class SampleOutput:
    """Result of `sample`.

    tokens: [B, L] sampled token ids.
    logits: [B, L, V] (if return_logits) the final logits of the sampling distribution at
        each step: CFG-combined and masked, before temperature / top-k / top-p.
    log_probs: [B, L] (if return_log_probs) log-probability of each chosen token under the
        distribution it was actually drawn from (after temperature, top-k and top-p).
    """

    tokens: torch.Tensor
    logits: torch.Tensor | None = None
    log_probs: torch.Tensor | None = None


@dataclass
class ScoreOutput:
    """Result of `score`, all [B, N, V], masked if `allowed` was given.

    cond: m(. | y_<n, x); neg: m(. | y_<n, x-) or None without a negative condition;
    cfg: eq. (1) combination of the UNMASKED cond and neg logits, then masked.
    """

    cond: torch.Tensor
    neg: torch.Tensor | None
    cfg: torch.Tensor


# ---------------------------------------------------------------------- validation
def _check_number(name: str, where: str, value, low: float, high: float, low_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: {name} must be a finite number, got {value!r}")
    if (value <= low if low_open else value < low) or value > high:
        lo = "(" if low_open else "["
        raise ValueError(f"{where}: {name} must be in {lo}{low}, {high}], got {value!r}")
    return float(value)


def _check_conds(model, cond, neg_cond, gamma, where: str):
    """Validate cond [B, C] and neg_cond ([B, C], [1, C] or [C]); return neg expanded or None."""
    gamma = _check_number("gamma", where, gamma, 0.0, math.inf, low_open=False)
    C = model.cond_dim
    if not isinstance(cond, torch.Tensor) or not cond.is_floating_point():
        raise TypeError(f"{where}: cond must be a float tensor [B, {C}]")
    if cond.dim() != 2 or cond.shape[1] != C or cond.shape[0] < 1:
        raise ValueError(f"{where}: cond must have shape [B, {C}], got {tuple(cond.shape)}")
    if neg_cond is None:
        if gamma != 1.0:
            raise ValueError(
                f"{where}: gamma={gamma} needs neg_cond (pass zeros [B, {C}] for the "
                f"unconditional / null prompt)"
            )
        return None, gamma
    if not isinstance(neg_cond, torch.Tensor) or not neg_cond.is_floating_point():
        raise TypeError(f"{where}: neg_cond must be a float tensor [B, {C}], [1, {C}] or [{C}]")
    if neg_cond.dim() == 1:
        neg_cond = neg_cond[None]
    B = cond.shape[0]
    if neg_cond.dim() != 2 or neg_cond.shape[1] != C or neg_cond.shape[0] not in (1, B):
        raise ValueError(
            f"{where}: neg_cond must have shape [{B}, {C}], [1, {C}] or [{C}], "
            f"got {tuple(neg_cond.shape)}"
        )
    return neg_cond.to(cond.dtype).expand(B, C), gamma


def _check_allowed(model, allowed, length: int, where: str) -> torch.Tensor | None:
    if allowed is None:
        return None
    V = model.vocab_size
    if not isinstance(allowed, torch.Tensor) or allowed.dtype != torch.bool:
        raise TypeError(f"{where}: allowed must be a bool tensor [L, {V}]")
    if allowed.dim() != 2 or allowed.shape[1] != V or allowed.shape[0] < length:
        raise ValueError(
            f"{where}: allowed must have shape [L >= {length}, {V}], got {tuple(allowed.shape)}"
        )
    allowed = allowed[:length]
    empty = (~allowed.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"{where}: allowed mask forbids every token at positions {empty[:10]}")
    return allowed


# ---------------------------------------------------------------------- sampling
def _truncate(z: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Top-k then top-p (nucleus) truncation of z [B, V]; removed entries become -inf."""
    if top_k is not None and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]  # [B, 1]
        z = z.masked_fill(z < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_z, order = torch.sort(z, dim=-1, descending=True)  # [B, V]
        probs = torch.softmax(sorted_z, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        # Drop a token once the more likely ones already cover top_p; the first always stays.
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        z = z.masked_fill(drop, -math.inf)
    return z


@torch.no_grad()
def sample(
    model,
    cond: torch.Tensor,
    *,
    neg_cond: torch.Tensor | None = None,
    gamma: float = 1.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    allowed: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    return_logits: bool = False,
    return_log_probs: bool = False,
    length: int | None = None,
) -> SampleOutput:
    """Sample `length` (default model.seq_len) tokens per row of cond [B, C].

    CFG (gamma != 1 with neg_cond): rows [cond; neg_cond] are decoded as one batch of 2B
    rows with one KV cache; both halves are fed the same sampled token. The model is put
    in eval mode and its previous mode restored. Deterministic for a fixed `generator`
    state (torch.multinomial draws from it).
    """
    where = "sample"
    neg_cond, gamma = _check_conds(model, cond, neg_cond, gamma, where)
    temperature = _check_number("temperature", where, temperature, 0.0, math.inf, low_open=True)
    if top_p is not None:
        top_p = _check_number("top_p", where, top_p, 0.0, 1.0, low_open=True)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"{where}: top_k must be an int >= 1 or None, got {top_k!r}")
    length = model.seq_len if length is None else length
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= model.seq_len:
        raise ValueError(f"{where}: length must be an int in [1, {model.seq_len}], got {length!r}")
    allowed = _check_allowed(model, allowed, length, where)

    device = model.pos_emb.device
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"{where}: generator is on {generator.device} but the model is on {device}"
        )
    cond = cond.to(device=device, dtype=model.pos_emb.dtype)
    B, V = cond.shape[0], model.vocab_size
    # gamma = 1 is exactly the conditional policy: skip the negative rows, so plain and
    # "CFG at gamma 1" make identical draws from identical logits.
    use_neg = neg_cond is not None and gamma != 1.0
    blocked = None if allowed is None else ~allowed.to(device)  # [L, V]

    tokens = torch.empty(B, length, dtype=torch.long, device=device)  # [B, L]
    out_logits = torch.empty(B, length, V, device=device) if return_logits else None
    out_lp = torch.empty(B, length, device=device) if return_log_probs else None

    was_training = model.training
    model.eval()
    try:
        if use_neg:
            rows = torch.cat([cond, neg_cond.to(device=device, dtype=cond.dtype)])  # [2B, C]
            cache, logits = model.start(rows)
            feed = torch.empty(2 * B, dtype=torch.long, device=device)  # reused every step
        else:
            cache, logits = model.start(cond)
        for n in range(length):
            if n > 0:
                prev = tokens[:, n - 1]
                if use_neg:
                    feed[:B] = prev
                    feed[B:] = prev
                    logits = model.step(feed, cache)  # [2B, V]
                else:
                    logits = model.step(prev, cache)  # [B, V]
            z = cfg_logits(logits[:B], logits[B:], gamma) if use_neg else logits  # [B, V]
            if blocked is not None:
                z = z.masked_fill(blocked[n], MASK_VALUE)
            if out_logits is not None:
                out_logits[:, n] = z
            if temperature != 1.0:
                z = z / temperature
            z = _truncate(z, top_k, top_p)
            probs = torch.softmax(z, dim=-1)
            choice = torch.multinomial(probs, 1, generator=generator)  # [B, 1]
            tokens[:, n] = choice[:, 0]
            if out_lp is not None:
                out_lp[:, n] = torch.log_softmax(z, dim=-1).gather(1, choice)[:, 0]
    finally:
        model.train(was_training)
    return SampleOutput(tokens=tokens, logits=out_logits, log_probs=out_lp)


# ---------------------------------------------------------------------- scoring
def score(
    model,
    tokens: torch.Tensor,
    cond: torch.Tensor,
    neg_cond: torch.Tensor | None = None,
    gamma: float = 1.0,
    allowed: torch.Tensor | None = None,
) -> ScoreOutput:
    """Teacher-forced cond / negative / CFG logits [B, N, V] of tokens [B, N].

    One parallel forward (2B rows when neg_cond is given). Runs in the caller's grad and
    train/eval mode: a frozen teacher should be called under torch.no_grad in eval mode.
    """
    where = "score"
    neg_cond, gamma = _check_conds(model, cond, neg_cond, gamma, where)
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        raise ValueError(f"{where}: tokens must be an integer tensor [B, N]")
    if tokens.shape[0] != cond.shape[0]:
        raise ValueError(f"{where}: tokens batch {tokens.shape[0]} != cond batch {cond.shape[0]}")
    allowed = _check_allowed(model, allowed, tokens.shape[1], where)
    B = tokens.shape[0]
    if neg_cond is None:
        cond_logits = model(tokens, cond)  # [B, N, V]
        neg_logits = None
        cfg = cond_logits
    else:
        both = model(torch.cat([tokens, tokens]), torch.cat([cond, neg_cond]))  # [2B, N, V]
        cond_logits, neg_logits = both[:B], both[B:]
        cfg = cfg_logits(cond_logits, neg_logits, gamma)
    if allowed is not None:
        cfg = mask_logits(cfg, allowed)
        cond_logits = mask_logits(cond_logits, allowed)
        neg_logits = None if neg_logits is None else mask_logits(neg_logits, allowed)
    return ScoreOutput(cond=cond_logits, neg=neg_logits, cfg=cfg)
