"""Regression tests named after bugs peers' users hit in distillation losses (TRL issues),
pinned for `suite.objectives.token_kl`, `reinforce_loss` and the rollout wrappers that feed
them (`suite.rollout.kl_to_teacher`, `sequence_log_probs`).

- TRL #3043: the generalised JSD's beta the wrong way round (which side the mixture weighs);
- TRL #4105: a reduction dividing by the wrong count (padded length, whole batch);
- TRL #5885: NaN from 0 / 0 on a row whose positions are all masked;
- TRL #5731: the temperature applied to one side only (student or teacher).

Every expected value comes from an independent float64 numpy computation written here
(not scipy, not the suite), and each test also checks that the buggy variant would give a
clearly different number, so the test can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from suite.objectives import reinforce_loss, token_kl
from suite.rollout import kl_to_teacher, sequence_log_probs

RNG = np.random.default_rng(20241)


def np_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def np_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) over the last axis with 0 log 0 = 0."""
    safe = np.where(p > 0, p, 1.0)
    return np.where(p > 0, p * (np.log(safe) - np.log(q)), 0.0).sum(axis=-1)


def np_jsd(teacher: np.ndarray, student: np.ndarray, beta: float) -> np.ndarray:
    """GKD (Agarwal et al. 2024): JSD_beta(P || Q) = beta KL(P || M) + (1 - beta) KL(Q || M),
    M = beta P + (1 - beta) Q, with P the teacher and Q the student."""
    m = beta * teacher + (1 - beta) * student
    return beta * np_kl(teacher, m) + (1 - beta) * np_kl(student, m)


def logits(*shape: int, scale: float = 2.0) -> np.ndarray:
    return RNG.normal(scale=scale, size=shape)


def t(x: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


# ------------------------------------------------------------------ TRL #3043: JSD beta direction
@pytest.mark.parametrize("beta", [0.1, 0.3, 0.8])
def test_trl3043_generalised_jsd_beta_weighs_the_teacher_in_the_mixture(beta):
    s, te = logits(3, 6, 9), logits(3, 6, 9)
    got = token_kl(t(s), t(te), kind="jsd", jsd_beta=beta).numpy()
    want = np_jsd(np_softmax(te), np_softmax(s), beta).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    swapped = np_jsd(np_softmax(te), np_softmax(s), 1 - beta).sum(-1)  # the #3043 bug
    assert np.abs(swapped - want).max() > 1e-3 * np.abs(want).max()


def test_trl3043_jsd_limits_are_forward_kl_at_small_beta_and_reverse_kl_near_one():
    """JSD_beta / beta -> KL(teacher || student) as beta -> 0, and JSD_beta / (1 - beta) ->
    KL(student || teacher) as beta -> 1: the direction of beta decides which KL it becomes."""
    s, te = logits(2, 5, 7), logits(2, 5, 7)
    p_s, p_t = np_softmax(s), np_softmax(te)
    forward, reverse = np_kl(p_t, p_s).sum(-1), np_kl(p_s, p_t).sum(-1)
    assert np.abs(forward - reverse).min() > 0.05  # the two limits are told apart
    eps = 1e-5
    small = token_kl(t(s), t(te), kind="jsd", jsd_beta=eps).numpy() / eps
    large = token_kl(t(s), t(te), kind="jsd", jsd_beta=1 - eps).numpy() / eps
    np.testing.assert_allclose(small, forward, rtol=1e-3)
    np.testing.assert_allclose(large, reverse, rtol=1e-3)


# ------------------------------------------------------------------ TRL #4105: the divisor
def test_trl4105_mean_reduction_divides_each_row_by_its_own_valid_count():
    s, te = logits(3, 8, 5), logits(3, 8, 5)
    mask = np.zeros((3, 8), dtype=bool)
    mask[0, :8], mask[1, 2:5], mask[2, 6] = True, True, True  # 8, 3 and 1 valid positions
    per_pos = np_kl(np_softmax(s), np_softmax(te))  # [3, 8] reverse KL
    sums = np.where(mask, per_pos, 0.0).sum(-1)
    counts = mask.sum(-1)
    got_mean = token_kl(t(s), t(te), torch.tensor(mask), reduce="mean").numpy()
    got_sum = token_kl(t(s), t(te), torch.tensor(mask), reduce="sum").numpy()
    np.testing.assert_allclose(got_sum, sums, rtol=1e-12)
    np.testing.assert_allclose(got_mean, sums / counts, rtol=1e-12)
    for wrong in (sums / 8, sums / counts.sum(), np.full(3, sums.sum() / counts.sum())):
        assert np.abs(wrong - got_mean).max() > 1e-3  # padded length, batch total, batch mean
    # without a mask every position counts: the mean is over L
    np.testing.assert_allclose(token_kl(t(s), t(te), reduce="mean").numpy(),
                               per_pos.mean(-1), rtol=1e-12)  # fmt: skip


def _np_loo_baseline(rewards: np.ndarray) -> np.ndarray:
    """Each prompt's baseline: the mean reward over every OTHER prompt's samples (loops)."""
    b, _ = rewards.shape
    out = np.zeros((b, 1))
    for i in range(b):
        others = [rewards[j, k] for j in range(b) if j != i for k in range(rewards.shape[1])]
        out[i, 0] = np.mean(others) if others else 0.0
    return out


@pytest.mark.parametrize("shape", [(4, 2), (3, 5), (1, 3)])
def test_trl4105_reinforce_averages_over_every_sample_not_over_prompts(shape):
    """loss = -1/(B N) sum_{b,i} (r_bi - b_b) log p_bi: the divisor is B * N."""
    logp = t(-np.abs(logits(*shape)) - 1.0, grad=True)
    rewards = RNG.uniform(0, 2, size=shape)
    loss, info = reinforce_loss(logp, t(rewards), baseline="batch")
    adv = rewards - _np_loo_baseline(rewards)
    want = -(adv * logp.detach().numpy()).sum() / rewards.size
    assert float(loss.detach()) == pytest.approx(want, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(info["advantages"].numpy(), adv, rtol=1e-12, atol=1e-12)
    loss.backward()
    np.testing.assert_allclose(logp.grad.numpy(), -adv / rewards.size, rtol=1e-12, atol=1e-15)
    if shape[0] > 1 and np.abs(want) > 1e-6:
        assert abs(-(adv * logp.detach().numpy()).sum() / shape[0] - float(loss.detach())) > 1e-6


# ------------------------------------------------------------------ TRL #5885: 0 / 0 on a row
@pytest.mark.parametrize("kind", ["reverse", "forward", "jsd"])
@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_trl5885_an_all_masked_row_gives_zero_not_nan(kind, reduce):
    s, te = t(logits(3, 4, 6), grad=True), t(logits(3, 4, 6))
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False  # e.g. a sequence of padding only
    out = token_kl(s, te, mask, kind=kind, reduce=reduce)
    assert torch.isfinite(out).all() and out[1] == 0.0
    out.sum().backward()
    assert torch.isfinite(s.grad).all() and (s.grad[1] == 0).all()
    # the other rows are what they are alone
    alone = token_kl(s.detach()[[0, 2]], te[[0, 2]], kind=kind, reduce=reduce)
    torch.testing.assert_close(out.detach()[[0, 2]], alone)


def test_trl5885_masked_tokens_with_minus_inf_logits_stay_finite():
    """Tokens both sides forbid (-inf) and all-masked rows: no 0 * inf, no 0 / 0."""
    s, te = logits(2, 3, 6), logits(2, 3, 6)
    s[..., :2] = -np.inf
    te[..., :2] = -np.inf
    student = t(s, grad=True)
    mask = torch.tensor([[True, True, True], [False, False, False]])
    out = token_kl(student, t(te), mask, reduce="mean")
    want0 = np_kl(np_softmax(s[0, :, 2:]), np_softmax(te[0, :, 2:])).mean()
    assert float(out[0]) == pytest.approx(want0, rel=1e-10) and float(out[1]) == 0.0
    out.sum().backward()
    assert torch.isfinite(student.grad).all()


def test_trl5885_a_single_prompt_batch_has_a_zero_baseline_not_nan():
    """With one prompt there is no other prompt: 0 rewards / 0 samples must not be NaN."""
    logp = t(np.array([[-3.0, -2.0]]), grad=True)
    loss, info = reinforce_loss(logp, t(np.array([[0.4, 0.6]])), baseline="batch")
    assert torch.isfinite(loss) and float(info["baseline"]) == 0.0
    assert float(loss.detach()) == pytest.approx(-(0.4 * -3.0 + 0.6 * -2.0) / 2)
    # ... also when the "global" batch of a DDP all-reduce holds that single prompt
    loss, info = reinforce_loss(logp, t(np.array([[0.4, 0.6]])), all_reduce_sum=lambda x: x)
    assert torch.isfinite(loss) and float(info["baseline"]) == 0.0


# ------------------------------------------------------------------ TRL #5731: temperature
@pytest.mark.parametrize("temperature", [0.5, 0.99, 2.0])
@pytest.mark.parametrize("kind", ["reverse", "forward", "jsd"])
def test_trl5731_temperature_divides_student_and_teacher_alike(temperature, kind):
    s, te = logits(2, 5, 8), logits(2, 5, 8)
    got = token_kl(t(s), t(te), temperature=temperature, kind=kind).numpy()
    p_s, p_t = np_softmax(s / temperature), np_softmax(te / temperature)
    want = {"reverse": np_kl(p_s, p_t), "forward": np_kl(p_t, p_s),
            "jsd": np_jsd(p_t, p_s, 0.5)}[kind].sum(-1)  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    one_sided = np_kl(np_softmax(s / temperature), np_softmax(te)).sum(-1)  # the #5731 bug
    assert np.abs(one_sided - want).max() > 1e-3
    # identical policies are at distance 0 at every temperature (a one-sided T is not)
    same = token_kl(t(s), t(s), temperature=temperature, kind=kind)
    torch.testing.assert_close(same, torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("temperature", [0.7, 1.6])
def test_trl5731_rollout_feeds_the_same_temperature_to_both_sides(temperature):
    """The training step's wrappers: KL to the teacher over [B, K, L, V] and the REINFORCE
    log-probs of the sampled tokens, both at the sampling temperature."""
    s, te = logits(2, 2, 3, 6), logits(2, 2, 3, 6)  # [B, K, L, V]
    got = kl_to_teacher(t(s), t(te), temperature).numpy()
    want = np_kl(np_softmax(s / temperature), np_softmax(te / temperature)).sum(axis=(1, 2))
    np.testing.assert_allclose(got, want, rtol=1e-6)  # sequence_log_probs works in float32
    assert float(kl_to_teacher(t(s), t(s), temperature).abs().max()) < 1e-9
    tokens = torch.tensor(RNG.integers(0, 6, size=(2, 2, 3)))
    logp = sequence_log_probs(t(s), tokens, temperature).numpy()
    probs = np_softmax(s / temperature)
    want_lp = np.log(np.take_along_axis(probs, tokens.numpy()[..., None], -1)[..., 0]).sum((1, 2))
    np.testing.assert_allclose(logp, want_lp, rtol=1e-5)
    untempered = np.log(np.take_along_axis(np_softmax(s), tokens.numpy()[..., None], -1)[..., 0])
    assert np.abs(untempered.sum((1, 2)) - want_lp).max() > 1e-2
