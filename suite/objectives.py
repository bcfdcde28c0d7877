"""The training objectives of diversity-rewarded CFG distillation (paper section 2, appendix A).

All of the suite's maths lives here, as plain functions on tensors (no Lightning, no Hydra):

- `cfg_logits`: classifier-free guidance, eq. (1): z = gamma * m(x) + (1 - gamma) * m(x-).
- `token_kl`: the CFG distillation term of eq. (2): at every position n of an on-policy sample,
  the exact full-vocabulary KL(pi_theta(. | y_<n, x) || pi_cfg(. | y_<n, x)) at temperature T,
  summed over positions (or averaged, as an option). Forward KL and the generalised
  Jensen-Shannon divergence of Agarwal et al. (2024, GKD) are options.
- `diversity_rewards`: r_D(y1, y2) = 1 - cos(E(y1), E(y2)) (section 2.2); with N generations
  per prompt each sample is rewarded with the mean over its N - 1 siblings (eq. 7).
- `reinforce_loss`: the REINFORCE surrogate of eq. (4) / (15) with a baseline taken from
  OTHER prompts (with N = 2 the reward is symmetric, so the prompt's own mean would zero
  every advantage).
- `beta_schedule`: beta(t), a linear ramp from 0 to beta (section 3.2).
- `joint_loss`: the loss whose minimisation maximises QD = Q + beta * D of eq. (5).

Sign conventions, in one place (eq. 2-5):
    Q(theta) = -E[sum_n KL_n]          -> `token_kl` is a loss (minimise it to raise Q)
    D(theta) = E[r_D(y1, y2)]          -> `reinforce_loss` is a loss too: its expected
                                          gradient is -1/2 * grad D (see its docstring)
    maximise Q + beta * D  <=>  minimise KL_loss + beta(t) * reinforce_loss = `joint_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

_KL_KINDS = ("reverse", "forward", "jsd")
_REDUCTIONS = ("sum", "mean")
_BASELINES = ("batch", "ema", "none")


def cfg_logits(cond_logits: torch.Tensor, neg_logits: torch.Tensor, gamma: float) -> torch.Tensor:
    """CFG logits of eq. (1): `gamma * cond + (1 - gamma) * neg`, any matching shape.

    gamma = 1 returns the conditional logits exactly (not up to rounding), so that CFG at
    gamma 1 reproduces plain sampling bit for bit.
    """
    if gamma < 0:
        raise ValueError(f"cfg_logits: gamma must be >= 0, got {gamma}")
    if cond_logits.shape != neg_logits.shape:
        raise ValueError(
            f"cfg_logits: cond and negative logits differ in shape: "
            f"{tuple(cond_logits.shape)} vs {tuple(neg_logits.shape)}"
        )
    if gamma == 1:
        return cond_logits
    return gamma * cond_logits + (1.0 - gamma) * neg_logits


# --------------------------------------------------------------------------------------------
# CFG distillation, eq. (2)
# --------------------------------------------------------------------------------------------


def _kl_from_log_probs(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) over the last axis from log-probabilities, with 0 * log 0 = 0.

    Grammar-masked tokens have log-probabilities near -1e9 (or -inf): where p == 0 the term
    is defined as 0. The difference is zeroed BEFORE the product so that neither the value
    nor its gradient can become 0 * inf = nan when a logit is -inf.
    """
    p = log_p.exp()
    diff = torch.where(p > 0, log_p - log_q, torch.zeros_like(log_p))
    return (p * diff).sum(dim=-1)


def token_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    kind: str = "reverse",
    jsd_beta: float = 0.5,
    reduce: str = "sum",
) -> torch.Tensor:
    """Per-sequence token-level divergence between student and CFG teacher, eq. (2).

    Args:
        student_logits: `[B, L, V]` logits of pi_theta (gradient flows through these only).
        teacher_logits: `[B, L, V]` logits of the CFG teacher (eq. 1, grammar mask applied);
            detached inside, so the teacher never receives a gradient.
        mask: `[B, L]` bool, True at positions that count (None: all positions).
        temperature: T > 0; both policies are softmax(logits / T), as in section 2.
        kind: which divergence, with P_s = student and P_t = teacher policies at position n:
            "reverse" (default, eq. 2): KL(P_s || P_t) = sum_v P_s (log P_s - log P_t);
            "forward": KL(P_t || P_s);
            "jsd": the generalised Jensen-Shannon divergence of Agarwal et al. (2024, GKD)
                with P = teacher and Q = student:
                JSD_beta(P || Q) = beta KL(P || M) + (1 - beta) KL(Q || M),
                M = beta P + (1 - beta) Q, with beta = `jsd_beta` in the open interval (0, 1)
                (at beta 0 or 1 the divergence is identically 0; use "forward"/"reverse").
        jsd_beta: the JSD weight beta (only read for kind="jsd").
        reduce: "sum" (default, eq. 2): sum over the valid positions of each sequence;
            "mean": that sum divided by the number of valid positions (per-token mean); a
            sequence with no valid position gives 0.

    Returns:
        `[B]` divergence per sequence, in float32 or wider (float64 inputs stay float64).

    Logits may hold large finite negatives (`MASK_VALUE = -1e9`) for grammar-masked tokens:
    log_softmax keeps everything finite, and tokens with zero probability contribute 0. A
    token the student allows but the teacher masks makes the reverse KL huge (~1e9 / T), as
    it should: that is a real support mismatch, and the grammar mask must be applied to both.
    """
    if student_logits.dim() != 3:
        raise ValueError(
            f"token_kl: student_logits must be [B, L, V], got shape {tuple(student_logits.shape)}"
        )
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"token_kl: teacher_logits shape {tuple(teacher_logits.shape)} differs from "
            f"student_logits shape {tuple(student_logits.shape)}"
        )
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)):
        raise ValueError(f"token_kl: temperature must be a finite number, got {temperature!r}")
    if temperature <= 0:
        raise ValueError(f"token_kl: temperature must be > 0, got {temperature}")
    if kind not in _KL_KINDS:
        raise ValueError(f"token_kl: kind must be one of {_KL_KINDS}, got {kind!r}")
    if kind == "jsd" and not 0.0 < jsd_beta < 1.0:
        raise ValueError(f"token_kl: jsd_beta must be in the open interval (0, 1), got {jsd_beta}")
    if reduce not in _REDUCTIONS:
        raise ValueError(f"token_kl: reduce must be one of {_REDUCTIONS}, got {reduce!r}")
    batch, length, _ = student_logits.shape
    if mask is not None:
        if mask.shape != (batch, length):
            raise ValueError(
                f"token_kl: mask must be [B, L] = {(batch, length)}, got {tuple(mask.shape)}"
            )
        if mask.dtype != torch.bool:
            raise TypeError(f"token_kl: mask must be a bool tensor, got dtype {mask.dtype}")

    # Half-precision log_softmax over a large vocabulary loses the small probabilities that
    # the KL weighs, so work in float32 at least.
    work = torch.promote_types(student_logits.dtype, torch.float32)
    log_s = torch.log_softmax(student_logits.to(work) / temperature, dim=-1)  # [B, L, V]
    log_t = torch.log_softmax(teacher_logits.detach().to(work) / temperature, dim=-1)  # [B, L, V]

    if kind == "reverse":
        per_pos = _kl_from_log_probs(log_s, log_t)  # [B, L]
    elif kind == "forward":
        per_pos = _kl_from_log_probs(log_t, log_s)  # [B, L]
    else:
        # log M = log(beta P_t + (1 - beta) P_s), computed without leaving log space.
        log_m = torch.logsumexp(
            torch.stack([log_t + math.log(jsd_beta), log_s + math.log1p(-jsd_beta)]), dim=0
        )  # [B, L, V]
        per_pos = jsd_beta * _kl_from_log_probs(log_t, log_m) + (
            1.0 - jsd_beta
        ) * _kl_from_log_probs(log_s, log_m)  # [B, L]

    if mask is None:
        total = per_pos.sum(dim=-1)  # [B]
        count = torch.full_like(total, float(length))
    else:
        # where(), not multiplication: a masked position may hold garbage (even inf).
        total = torch.where(mask, per_pos, torch.zeros_like(per_pos)).sum(dim=-1)  # [B]
        count = mask.sum(dim=-1).to(total.dtype)  # [B]
    if reduce == "sum":
        return total
    return total / count.clamp_min(1.0)


# --------------------------------------------------------------------------------------------
# Diversity reward, section 2.2 and eq. (7)
# --------------------------------------------------------------------------------------------


def diversity_rewards(embeddings: torch.Tensor) -> torch.Tensor:
    """Per-sample diversity reward: mean over siblings of r_D = 1 - cos (section 2.2, eq. 7).

    Args:
        embeddings: `[B, N, D]` embeddings E(y) of the N generations for each of B prompts.

    Returns:
        `[B, N]` rewards, `reward[b, i] = mean_{j != i} (1 - cos(E(y_bi), E(y_bj)))`, in
        [0, 2]. The mean over i of these is the N-sample reward r_D(y_1..y_N) of eq. (7);
        with N = 2 both siblings get the same reward r_D(y1, y2).

    Raises ValueError for N < 2 (a reward between generations needs two of them), for
    non-finite embeddings and for all-zero embeddings (cosine undefined).
    """
    if embeddings.dim() != 3:
        raise ValueError(
            f"diversity_rewards: embeddings must be [B, N, D], got shape {tuple(embeddings.shape)}"
        )
    batch, n_gen, _ = embeddings.shape
    if n_gen < 2:
        raise ValueError(
            f"diversity_rewards: need N >= 2 generations per prompt to compare, got N = {n_gen}"
        )
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError("diversity_rewards: embeddings contain non-finite values (nan or inf)")
    work = torch.promote_types(embeddings.dtype, torch.float32)
    emb = embeddings.detach().to(work)
    norms = emb.norm(dim=-1, keepdim=True)  # [B, N, 1]
    if not bool((norms > 0).all()):
        raise ValueError(
            "diversity_rewards: an embedding is all zeros, its cosine similarity is undefined"
        )
    unit = emb / norms  # [B, N, D]
    cos = unit @ unit.transpose(1, 2)  # [B, N, N]
    off_diag = ~torch.eye(n_gen, dtype=torch.bool, device=emb.device)  # [N, N]
    pair_reward = torch.where(off_diag, 1.0 - cos, torch.zeros_like(cos))  # [B, N, N]
    return pair_reward.sum(dim=-1) / (n_gen - 1)  # [B, N]


# --------------------------------------------------------------------------------------------
# REINFORCE for diversity, eq. (4) and appendix A eq. (15)
# --------------------------------------------------------------------------------------------


def _batch_baseline(
    rewards: torch.Tensor, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Leave-one-prompt-out baseline `[B, 1]` and the global batch mean reward (0-dim).

    For prompt i the baseline is the mean reward over every OTHER prompt's samples, across
    all ranks when `all_reduce_sum` is given. It is independent of prompt i's own samples,
    which keeps the estimator exactly unbiased (the plain batch mean would include them and
    bias the gradient by O(1 / B)). With a single prompt in the whole (global) batch there is
    no other prompt: the baseline falls back to 0 (vanilla REINFORCE).
    """
    n_gen = rewards.shape[1]
    prompt_sums = rewards.sum(dim=1, keepdim=True)  # [B, 1]
    local = torch.stack(
        [
            rewards.sum(),
            torch.tensor(float(rewards.numel()), dtype=rewards.dtype, device=rewards.device),
        ]
    )  # [2]: (sum of rewards, number of rewards)
    if all_reduce_sum is not None:
        reduced = all_reduce_sum(local.clone())
        if not isinstance(reduced, torch.Tensor) or reduced.shape != local.shape:
            raise ValueError(
                "reinforce_loss: all_reduce_sum must return a tensor shaped like its input "
                f"({tuple(local.shape)}), got {type(reduced).__name__} "
                f"{tuple(reduced.shape) if isinstance(reduced, torch.Tensor) else ''}"
            )
        local = reduced.to(device=rewards.device, dtype=rewards.dtype)
    total, count = local[0], local[1]
    others = count - n_gen  # number of rewards from the other prompts
    loo = (total - prompt_sums) / others.clamp_min(1.0)  # [B, 1]
    baseline = torch.where(others > 0, loo, torch.zeros_like(loo))  # [B, 1]
    return baseline, total / count


def reinforce_loss(
    logprobs: torch.Tensor,
    rewards: torch.Tensor,
    baseline: str | float = "batch",
    ema_state: torch.Tensor | float | None = None,
    ema_decay: float = 0.99,
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    """REINFORCE surrogate for the diversity objective D of eq. (3), to MINIMISE.

    `loss = -mean_{b, i} (r_bi - b_b).detach() * logprobs_bi`, the batched estimator of
    appendix A, `1/(BN) sum_b sum_i r_bi grad log p(y_bi | x_b)`, with a baseline for
    variance reduction (section 3.1 "REINFORCE with a baseline").

    Args:
        logprobs: `[B, N]` sequence log-probabilities `sum_n log pi_theta(s_n | y_<n, x)` of
            the sampled generations under the student at the sampling temperature, with
            gradient.
        rewards: `[B, N]` per-sample rewards (e.g. `diversity_rewards`); detached inside.
        baseline: where b comes from; never from the prompt's own samples, because with
            N = 2 the reward is symmetric (both siblings get r(y1, y2)) and the prompt's own
            mean would make every advantage exactly 0.
            "batch" (default): leave-one-prompt-out batch mean: for prompt i, the mean reward
                over all other prompts of the batch (of all ranks, see `all_reduce_sum`);
                falls back to 0 when the global batch holds a single prompt.
            "ema": `ema_state`, an exponential moving average of past global batch-mean
                rewards (previous steps only, so independent of this batch); when
                `ema_state` is None (first step) the "batch" baseline is used instead.
            "none": b = 0 (vanilla REINFORCE).
            a float: that constant.
        ema_state: the EMA held by the caller (None before the first step).
        ema_decay: EMA decay in [0, 1): `new = decay * old + (1 - decay) * batch_mean`.
        all_reduce_sum: for DDP, a callable that takes a small local tensor and returns its
            elementwise SUM over all ranks (same shape), e.g.
            `lambda t: (torch.distributed.all_reduce(t), t)[1]`. It is called once, on
            `[sum of local rewards, number of local rewards]`, so that the batch baseline and
            the EMA update use the global batch; every rank must call `reinforce_loss` (it is
            a collective). None: single process.

    Returns:
        `(loss, info)`: loss is a 0-dim tensor; info holds detached tensors:
        "advantages" `[B, N]`, "baseline" `[B, 1]`, "reward_mean" (global batch mean),
        "reward_std" and "advantage_std" (local), and "ema_state" (the updated EMA for
        baseline="ema", else None).

    Expected gradient: for per-sample rewards from `diversity_rewards`,
    `E[grad loss] = -1/2 * grad D(theta)` for any N >= 2 (each pair is counted from both of its
    samples; this is J of eq. 8 for N = 2), so gradient descent on the loss ascends D; the
    constant 1/2 is absorbed in beta.
    """
    if logprobs.dim() != 2:
        raise ValueError(
            f"reinforce_loss: logprobs must be [B, N], got shape {tuple(logprobs.shape)}"
        )
    if rewards.shape != logprobs.shape:
        raise ValueError(
            f"reinforce_loss: rewards shape {tuple(rewards.shape)} differs from logprobs "
            f"shape {tuple(logprobs.shape)}"
        )
    if logprobs.numel() == 0:
        raise ValueError("reinforce_loss: empty batch (B * N == 0)")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"reinforce_loss: ema_decay must be in [0, 1), got {ema_decay}")
    is_number = isinstance(baseline, (int, float)) and not isinstance(baseline, bool)
    if not is_number and baseline not in _BASELINES:
        raise ValueError(
            f"reinforce_loss: baseline must be one of {_BASELINES} or a float, got {baseline!r}"
        )
    if is_number and not math.isfinite(baseline):
        raise ValueError(f"reinforce_loss: constant baseline must be finite, got {baseline}")
    work = torch.promote_types(logprobs.dtype, torch.float32)
    r = rewards.detach().to(device=logprobs.device, dtype=work)  # [B, N]
    if not bool(torch.isfinite(r).all()):
        raise ValueError("reinforce_loss: rewards contain non-finite values (nan or inf)")

    # The batch statistics are needed for "batch", for the EMA update and for logging.
    batch_b, reward_mean = _batch_baseline(r, all_reduce_sum)  # [B, 1], []
    new_ema: torch.Tensor | None = None
    if is_number:
        b = torch.full_like(batch_b, float(baseline))
    elif baseline == "none":
        b = torch.zeros_like(batch_b)
    elif baseline == "batch":
        b = batch_b
    else:
        if ema_state is None:
            b = batch_b
            new_ema = reward_mean.detach().clone()
        else:
            old = torch.as_tensor(ema_state, dtype=work, device=r.device).detach()
            if old.numel() != 1 or not bool(torch.isfinite(old)):
                raise ValueError(
                    f"reinforce_loss: ema_state must be a finite scalar, got {ema_state!r}"
                )
            old = old.reshape(())
            b = old.expand_as(batch_b)
            new_ema = ema_decay * old + (1.0 - ema_decay) * reward_mean.detach()

    advantages = (r - b).detach()  # [B, N]
    loss = -(advantages * logprobs.to(work)).mean()
    info: dict[str, torch.Tensor | None] = {
        "advantages": advantages,
        "baseline": b.detach(),
        "reward_mean": reward_mean.detach(),
        "reward_std": r.std(unbiased=False),
        "advantage_std": advantages.std(unbiased=False),
        "ema_state": new_ema,
    }
    return loss, info


# --------------------------------------------------------------------------------------------
# Joint objective, eq. (5), and the beta ramp of section 3.2
# --------------------------------------------------------------------------------------------


def beta_schedule(step: int, beta: float, warmup_steps: int) -> float:
    """beta(t): linear ramp from 0 at step 0 to `beta` at `warmup_steps`, then constant.

    Paper section 3.2 ramps beta over the first 1000 steps; `warmup_steps = 0` gives `beta`
    from the first step.
    """
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta_schedule: beta must be a finite number >= 0, got {beta}")
    if warmup_steps < 0:
        raise ValueError(f"beta_schedule: warmup_steps must be >= 0, got {warmup_steps}")
    if step < 0:
        raise ValueError(f"beta_schedule: step must be >= 0, got {step}")
    if warmup_steps == 0 or step >= warmup_steps:
        return float(beta)
    return float(beta) * step / warmup_steps


def joint_loss(kl_loss: torch.Tensor, surrogate: torch.Tensor, beta_t: float) -> torch.Tensor:
    """Loss to minimise for QD(theta) = Q(theta) + beta * D(theta) of eq. (5).

    `kl_loss` is the (already reduced, scalar) KL of eq. (2), i.e. -Q; `surrogate` is the
    scalar returned by `reinforce_loss`, which is ALREADY a loss (its negative gradient
    estimates grad D). Hence maximising Q + beta D is minimising
    `kl_loss + beta_t * surrogate`: the plus sign is right, do not subtract it again.
    """
    if not math.isfinite(beta_t) or beta_t < 0:
        raise ValueError(f"joint_loss: beta_t must be a finite number >= 0, got {beta_t}")
    for name, value in (("kl_loss", kl_loss), ("surrogate", surrogate)):
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"joint_loss: {name} must be a 0-dim tensor, got {shape}")
    return kl_loss + beta_t * surrogate
