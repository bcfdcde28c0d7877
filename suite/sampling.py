"""Autoregressive sampling and teacher-forced scoring of a policy, with CFG (paper eq. 1).

Written against `suite.policies.Policy` only (tokens `[B, K, L]`, logits `[B, K, V]` per
step), so every backbone is sampled by the same loop:

- CFG logits, eq. (1): z_n = gamma * m(s_n | y_<n, x) + (1 - gamma) * m(s_n | y_<n, x-),
  computed by `suite.objectives.cfg_logits` (the maths lives there); the CFG policy is
  softmax(z_n / T). The conditional rows (prompt x) and the negative rows (x-, e.g. "Bad
  audio quality.", or the null condition "" for unconditional CFG) go through ONE batched
  forward of 2B rows that share one decoding state (DESIGN.md section 3).
- Validity masking: `mask_logits` sets disallowed tokens to `MASK_VALUE`, a large finite
  negative (not -inf, so CFG arithmetic and KLs stay finite), AFTER the CFG combination,
  so that teacher and student share the same support. The mask is the policy's
  `[K, L, V]` (the music world's grammar, a codebook delay pattern).
- `sample`: incremental decoding; temperature, top-k and top-p (all off by default; CFG
  distillation samples from the policy itself, with none of them). The K codebooks of a
  step are drawn independently given the past. gamma = 1 skips the negative rows
  entirely, so it reproduces plain sampling exactly.
- `score`: one teacher-forced parallel forward over given sequences returning the
  conditional, negative and CFG logits `[B, K, L, V]`, used by eq. (2)'s per-position KL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from suite.objectives import cfg_logits
from suite.policies.base import Policy, TextCond, eval_mode

MASK_VALUE = -1e9


def mask_logits(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Logits `[..., *allowed.shape]` with disallowed entries set to MASK_VALUE.

    `allowed` is the policy's bool mask `[K, L, V]` (or any trailing shape such as `[L, V]`).
    """
    if not isinstance(allowed, torch.Tensor) or allowed.dtype != torch.bool:
        raise TypeError("mask_logits: allowed must be a bool tensor [..., L, V]")
    d = allowed.dim()
    if logits.dim() < d or tuple(logits.shape[-d:]) != tuple(allowed.shape):
        raise ValueError(
            f"mask_logits: logits {tuple(logits.shape)} do not end with the allowed mask's "
            f"shape {tuple(allowed.shape)}"
        )
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # MASK_VALUE overflows half precision
    return logits.masked_fill(~allowed.to(logits.device), MASK_VALUE)


@dataclass
class SampleOutput:
    """Result of `sample`.

    tokens: `[B, K, L]` sampled token ids.
    logits: `[B, K, L, V]` (if return_logits) the logits of the sampling distribution at each
        step: CFG-combined and masked, before temperature / top-k / top-p.
    log_probs: `[B, K, L]` (if return_log_probs) log-probability of each chosen token under
        the distribution it was actually drawn from (after temperature, top-k and top-p).
    """

    tokens: torch.Tensor
    logits: torch.Tensor | None = None
    log_probs: torch.Tensor | None = None


@dataclass
class ScoreOutput:
    """Result of `score`, all `[B, K, L, V]`, masked if `allowed` was given.

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


def _check_conds(cond, neg_cond, gamma, where: str) -> tuple[TextCond | None, float]:
    """Validate cond (B rows) and neg_cond (B rows or 1); return neg as B rows, or None."""
    gamma = _check_number("gamma", where, gamma, 0.0, math.inf, low_open=False)
    if not isinstance(cond, TextCond) or cond.batch_size < 1:
        raise TypeError(f"{where}: cond must be a TextCond of >= 1 rows, got {type(cond).__name__}")
    if neg_cond is None:
        if gamma != 1.0:
            raise ValueError(
                f"{where}: gamma={gamma} needs neg_cond (the policy's encode_text([\"\"]) is the "
                f"unconditional / null prompt)"
            )
        return None, gamma
    if not isinstance(neg_cond, TextCond):
        raise TypeError(f"{where}: neg_cond must be a TextCond, got {type(neg_cond).__name__}")
    if neg_cond.batch_size not in (1, cond.batch_size):
        raise ValueError(
            f"{where}: neg_cond must have 1 or {cond.batch_size} rows, got {neg_cond.batch_size}"
        )
    return neg_cond.expand(cond.batch_size), gamma


def _check_allowed(policy: Policy, allowed, length: int, where: str) -> torch.Tensor | None:
    if allowed is None:
        return None
    K, V = policy.num_codebooks, policy.vocab_size
    if not isinstance(allowed, torch.Tensor) or allowed.dtype != torch.bool:
        raise TypeError(f"{where}: allowed must be a bool tensor [{K}, L, {V}]")
    if allowed.dim() != 3 or allowed.shape[0] != K or allowed.shape[2] != V or allowed.shape[1] < length:
        raise ValueError(
            f"{where}: allowed must have shape [{K}, L >= {length}, {V}], got {tuple(allowed.shape)}"
        )
    allowed = allowed[:, :length]
    empty = (~allowed.any(dim=-1)).nonzero().tolist()
    if empty:
        raise ValueError(
            f"{where}: allowed mask forbids every token at (codebook, position) {empty[:10]}"
        )
    return allowed


def _check_tokens(policy: Policy, tokens, batch: int, where: str) -> None:
    K = policy.num_codebooks
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3 or tokens.shape[1] != K:
        raise ValueError(
            f"{where}: tokens must be an integer tensor [B, {K}, L], got "
            f"{tuple(getattr(tokens, 'shape', ()))}"
        )
    if tokens.shape[0] != batch:
        raise ValueError(f"{where}: tokens batch {tokens.shape[0]} != cond batch {batch}")


# ---------------------------------------------------------------------- sampling
def _truncate(z: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Top-k then top-p (nucleus) truncation of z [R, V]; removed entries become -inf."""
    if top_k is not None and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]  # [R, 1]
        z = z.masked_fill(z < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_z, order = torch.sort(z, dim=-1, descending=True)  # [R, V]
        probs = torch.softmax(sorted_z, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        # Drop a token once the more likely ones already cover top_p; the first always stays.
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        z = z.masked_fill(drop, -math.inf)
    return z


def draw(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of logits z `[R, V]` from softmax(z), by the inverse CDF: `[R, 1]`.

    One uniform per row (torch.multinomial draws V exponentials per row: 10x slower at the
    sampler's sizes). The CDF is accumulated in float64 and normalised so its last entry is
    exactly 1; `right=True` picks the first entry ABOVE the uniform, so a token of
    probability 0 (masked, truncated) is never drawn.
    """
    cdf = torch.softmax(z, dim=-1, dtype=torch.float64).cumsum_(dim=-1)  # [R, V]
    cdf = cdf / cdf[:, -1:]  # not in place: the divisor is a view of cdf
    u = torch.rand(z.shape[0], 1, generator=generator, device=z.device, dtype=torch.float64)
    return torch.searchsorted(cdf, u, right=True)  # [R, 1] in [0, V)


@torch.no_grad()
def sample(
    policy: Policy,
    cond: TextCond,
    *,
    neg_cond: TextCond | None = None,
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
    """Sample `length` (default policy.seq_len) steps of K tokens per row of `cond`.

    CFG (gamma != 1 with neg_cond): rows [cond; neg_cond] are decoded as one batch of 2B
    rows with one decoding state; both halves are fed the same sampled tokens. The policy
    is put in eval mode and its previous mode restored. Deterministic for a fixed
    `generator` state (`draw` takes one uniform per row from it).
    """
    where = "sample"
    neg_cond, gamma = _check_conds(cond, neg_cond, gamma, where)
    temperature = _check_number("temperature", where, temperature, 0.0, math.inf, low_open=True)
    if top_p is not None:
        top_p = _check_number("top_p", where, top_p, 0.0, 1.0, low_open=True)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"{where}: top_k must be an int >= 1 or None, got {top_k!r}")
    L_max = policy.seq_len
    length = L_max if length is None else length
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= L_max:
        raise ValueError(f"{where}: length must be an int in [1, {L_max}], got {length!r}")
    allowed = _check_allowed(policy, allowed, length, where)

    device = cond.states.device
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"{where}: generator is on {generator.device} but cond is on {device}")
    B, K, V = cond.batch_size, policy.num_codebooks, policy.vocab_size
    # gamma = 1 is exactly the conditional policy: skip the negative rows, so plain and
    # "CFG at gamma 1" make identical draws from identical logits.
    use_neg = neg_cond is not None and gamma != 1.0
    blocked = None if allowed is None else ~allowed.to(device)  # [K, L, V]

    tokens = torch.empty(B, K, length, dtype=torch.long, device=device)  # [B, K, L]
    out_logits = torch.empty(B, K, length, V, device=device) if return_logits else None
    out_lp = torch.empty(B, K, length, device=device) if return_log_probs else None

    with eval_mode(policy):
        if use_neg:
            state, logits = policy.start(TextCond.cat([cond, neg_cond]))  # [2B, K, V]
            feed = torch.empty(2 * B, K, dtype=torch.long, device=device)  # reused every step
        else:
            state, logits = policy.start(cond)  # [B, K, V]
        for n in range(length):
            if n > 0:
                prev = tokens[:, :, n - 1]  # [B, K]
                if use_neg:
                    feed[:B] = prev
                    feed[B:] = prev
                    logits = policy.step(feed, state)  # [2B, K, V]
                else:
                    logits = policy.step(prev, state)  # [B, K, V]
            z = cfg_logits(logits[:B], logits[B:], gamma) if use_neg else logits  # [B, K, V]
            if blocked is not None:
                z = z.masked_fill(blocked[:, n], MASK_VALUE)
            if out_logits is not None:
                out_logits[:, :, n] = z
            if temperature != 1.0:
                z = z / temperature
            z = _truncate(z.reshape(B * K, V), top_k, top_p)  # [B*K, V]
            choice = draw(z, generator)  # [B*K, 1]
            tokens[:, :, n] = choice.view(B, K)
            if out_lp is not None:
                lp = torch.log_softmax(z, dim=-1).gather(1, choice)  # [B*K, 1]
                out_lp[:, :, n] = lp.view(B, K)
    return SampleOutput(tokens=tokens, logits=out_logits, log_probs=out_lp)


# ---------------------------------------------------------------------- scoring
def score(
    policy: Policy,
    tokens: torch.Tensor,
    cond: TextCond,
    neg_cond: TextCond | None = None,
    gamma: float = 1.0,
    allowed: torch.Tensor | None = None,
) -> ScoreOutput:
    """Teacher-forced cond / negative / CFG logits `[B, K, L, V]` of tokens `[B, K, L]`.

    One parallel forward (2B rows when neg_cond is given). Runs in the caller's grad and
    train/eval mode: a frozen teacher should be called under torch.no_grad in eval mode.
    """
    where = "score"
    neg_cond, gamma = _check_conds(cond, neg_cond, gamma, where)
    _check_tokens(policy, tokens, cond.batch_size, where)
    allowed = _check_allowed(policy, allowed, tokens.shape[2], where)
    B = tokens.shape[0]
    if neg_cond is None:
        cond_logits = policy(tokens, cond)  # [B, K, L, V]
        neg_logits = None
        cfg = cond_logits
    else:
        both = policy(torch.cat([tokens, tokens]), TextCond.cat([cond, neg_cond]))  # [2B, K, L, V]
        cond_logits, neg_logits = both[:B], both[B:]
        cfg = cfg_logits(cond_logits, neg_logits, gamma)
    if allowed is not None:
        cfg = mask_logits(cfg, allowed)
        cond_logits = mask_logits(cond_logits, allowed)
        neg_logits = None if neg_logits is None else mask_logits(neg_logits, allowed)
    return ScoreOutput(cond=cond_logits, neg=neg_logits, cfg=cfg)
