"""Tests of the diversity side of suite/objectives.py against independent computations
(numpy, closed forms, Monte Carlo): diversity reward (eq. 7), REINFORCE with its
leave-one-prompt-out baseline (eq. 4/15), beta ramp and joint loss (eq. 5). The token KL
(eq. 2) is in test_objectives.py."""

import itertools

import numpy as np
import pytest
import torch
from scipy.special import softmax

from suite.objectives import beta_schedule, diversity_rewards, joint_loss, reinforce_loss

# ------------------------------------------------------------------------------ diversity


def _np_rewards(emb):
    b, n, _ = emb.shape
    out = np.zeros((b, n))
    for i, j, k in itertools.product(range(b), range(n), range(n)):
        if j != k:
            cos = emb[i, j] @ emb[i, k] / (np.linalg.norm(emb[i, j]) * np.linalg.norm(emb[i, k]))
            out[i, j] += (1 - cos) / (n - 1)
    return out


@pytest.mark.parametrize("n_gen", [2, 3, 5])
def test_diversity_rewards_match_numpy(n_gen):
    emb = np.random.default_rng(20).normal(size=(4, n_gen, 6))
    got = diversity_rewards(torch.tensor(emb))
    np.testing.assert_allclose(got.numpy(), _np_rewards(emb), rtol=1e-10, atol=1e-12)
    # eq. (7): the mean over samples is the N-sample reward r_D(y_1..y_N) (mean over pairs).
    pairs = [(j, k) for j in range(n_gen) for k in range(n_gen) if j != k]
    unit = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    r_d = np.mean([1 - (unit[:, j] * unit[:, k]).sum(-1) for j, k in pairs], axis=0)
    np.testing.assert_allclose(got.numpy().mean(1), r_d, rtol=1e-10)


def test_diversity_rewards_identical_and_opposite():
    e = torch.tensor([[[1.0, 2.0], [2.0, 4.0]], [[1.0, 0.0], [-3.0, 0.0]]])
    np.testing.assert_allclose(diversity_rewards(e).numpy(), [[0, 0], [2, 2]], atol=1e-6)


def test_diversity_rewards_bad_input():
    with pytest.raises(ValueError, match="N >= 2"):
        diversity_rewards(torch.randn(3, 1, 4))
    bad = torch.randn(2, 2, 3)
    bad[1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        diversity_rewards(bad)
    zero = torch.randn(2, 2, 3)
    zero[0, 1] = 0
    with pytest.raises(ValueError, match="zeros"):
        diversity_rewards(zero)
    with pytest.raises(ValueError, match=r"\[B, N, D\]"):
        diversity_rewards(torch.randn(2, 3))


# ------------------------------------------------------------------------------ REINFORCE

# A toy categorical "policy": each prompt i draws an outcome in {0..K-1} from softmax(theta_i);
# each outcome has a fixed embedding, the reward of a pair is 1 - cos of their embeddings.
_K = 4
_OUTCOME_EMB = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 1.0, 0.2], [-0.5, 0.1, 1.0]])


def _pair_reward_matrix():
    unit = _OUTCOME_EMB / np.linalg.norm(_OUTCOME_EMB, axis=1, keepdims=True)
    return 1.0 - unit @ unit.T  # [K, K], R[a, b] = r(a, b)


def _exact_grad_expected_reward(theta):
    """Closed form of grad_theta_i E_{y1, y2 ~ p_i}[r(y1, y2)] by enumerating all K^2 pairs.

    E_i = sum_{a, b} p_a p_b R_ab; d p_a / d theta_c = p_a (delta_ac - p_c).
    """
    r = _pair_reward_matrix()
    grads = np.zeros_like(theta)
    for i in range(theta.shape[0]):
        p = softmax(theta[i])
        for c in range(_K):
            dp = p * ((np.arange(_K) == c) - p[c])  # d p / d theta_c
            grads[i, c] = sum(
                (dp[a] * p[b] + p[a] * dp[b]) * r[a, b] for a in range(_K) for b in range(_K)
            )
    return grads


def test_reinforce_is_unbiased_on_toy_categorical_policy():
    """MC mean of grad(surrogate) == -1/2 grad E[r(y1, y2)] (eq. 15 with N = 2, J of eq. 8)."""
    gen = torch.Generator().manual_seed(123)
    theta_np = np.array(
        [[0.5, -0.3, 1.2, 0.0], [-1.0, 0.4, 0.1, 0.9], [0.0, 0.0, 2.0, -1.5], [0.3, 0.3, -0.2, 0.6]]
    )
    n_prompts, n_gen, reps = theta_np.shape[0], 2, 3000
    theta = torch.tensor(theta_np, requires_grad=True)
    emb_table = torch.tensor(_OUTCOME_EMB)
    probs = torch.softmax(theta.detach(), dim=-1)  # [B, K]
    draws = torch.multinomial(probs, reps * n_gen, replacement=True, generator=gen)
    y = draws.reshape(n_prompts, reps, n_gen).transpose(0, 1)  # [reps, B, N], i.i.d. draws
    rewards = diversity_rewards(emb_table[y].reshape(reps * n_prompts, n_gen, -1))
    rewards = rewards.reshape(reps, n_prompts, n_gen)  # [reps, B, N]
    log_pi = torch.log_softmax(theta, dim=-1).expand(reps, -1, -1)  # [reps, B, K]
    logprobs = log_pi.gather(2, y)  # [reps, B, N]
    # One independent batch (one training step) per replicate.
    losses = torch.stack(
        [reinforce_loss(logprobs[m], rewards[m], baseline="batch")[0] for m in range(reps)]
    )  # [reps]
    # Contrast: a baseline that includes the prompt's own rewards (plain batch mean).
    own = rewards - rewards.mean(dim=(1, 2), keepdim=True)
    biased = -(own * logprobs).mean(dim=(1, 2))  # [reps]
    # loss_m depends on replicate m's log-probs only, so one backward of the sum gives every
    # replicate's coefficients c_m = d loss_m / d logprobs_m; the chain rule through the
    # categorical, d log p_i(y) / d theta_i = onehot(y) - p_i, then gives per-replicate grads.
    onehot_minus_p = np.eye(_K)[y.numpy()] - probs.numpy()[None, :, None, :]  # [reps, B, N, K]

    def per_replicate_grads(total):
        (coef,) = torch.autograd.grad(total, logprobs, retain_graph=True)  # [reps, B, N]
        return torch.tensor(np.einsum("mbn,mbnk->mbk", coef.numpy(), onehot_minus_p))

    per_rep = per_replicate_grads(losses.sum())  # [reps, B, K]
    own_mean = per_replicate_grads(biased.sum())  # [reps, B, K]
    # The per-replicate grads add up to autograd's gradient of the summed losses.
    (total_grad,) = torch.autograd.grad(losses.sum(), theta)
    torch.testing.assert_close(per_rep.sum(0), total_grad)

    def z_scores(samples, target):
        stderr = samples.std(0).numpy() / np.sqrt(reps)
        return np.abs(samples.mean(0).numpy() - target) / stderr, stderr

    expected = -0.5 * _exact_grad_expected_reward(theta_np) / n_prompts
    z, stderr = z_scores(per_rep, expected)
    # The exact gradient is far from 0 relative to the MC error, so a sign or scale error fails.
    assert np.abs(expected).max() > 10 * stderr.max()
    assert z.max() < 5.0, f"MC gradient off by {z.max():.1f} standard errors"
    # Power check: a baseline that includes the prompt's own rewards (the plain batch mean at
    # B = 4) is biased by O(1/B), and this test sees it (about 10 standard errors).
    assert z_scores(own_mean, expected)[0].max() > 5.0


def test_reinforce_leave_one_prompt_out_baseline_values():
    rewards = torch.tensor([[0.2, 0.2], [0.6, 0.6], [1.0, 1.0]], dtype=torch.float64)
    logprobs = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    loss, info = reinforce_loss(logprobs, rewards, baseline="batch")
    # Hand computation: b_i = mean reward of the other prompts.
    np.testing.assert_allclose(info["baseline"].numpy().ravel(), [0.8, 0.6, 0.4])
    np.testing.assert_allclose(
        info["advantages"].numpy(), [[-0.6, -0.6], [0, 0], [0.6, 0.6]], atol=1e-12
    )
    np.testing.assert_allclose(float(info["reward_mean"]), 0.6)
    loss.backward()
    # d loss / d logprob_bi = -A_bi / (B N)
    np.testing.assert_allclose(logprobs.grad.numpy(), -info["advantages"].numpy() / 6)


def test_reinforce_advantages_not_all_zero_at_n2_but_per_prompt_baseline_would_be():
    emb = torch.randn(6, 2, 8)
    rewards = diversity_rewards(emb)  # [B, 2], symmetric: both siblings share r(y1, y2)
    logprobs = torch.randn(6, 2, requires_grad=True)
    _, info = reinforce_loss(logprobs, rewards, baseline="batch")
    assert info["advantages"].abs().max() > 1e-3
    # Contrast: the prompt's own mean as baseline (never offered by reinforce_loss) gives
    # identically zero advantages at N = 2, hence no learning signal at all.
    per_prompt = rewards - rewards.mean(dim=1, keepdim=True)
    assert per_prompt.abs().max() < 1e-6


def test_reinforce_baseline_none_constant_and_single_prompt():
    rewards = torch.tensor([[0.3, 0.5]])
    logprobs = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    _, none_info = reinforce_loss(logprobs, rewards, baseline="none")
    _, batch_info = reinforce_loss(logprobs, rewards, baseline="batch")  # B == 1: falls back to 0
    _, const_info = reinforce_loss(logprobs, rewards, baseline=0.25)
    torch.testing.assert_close(none_info["advantages"], rewards)
    torch.testing.assert_close(batch_info["advantages"], rewards)
    torch.testing.assert_close(const_info["advantages"], rewards - 0.25)
    loss, _ = reinforce_loss(logprobs, rewards, baseline="none")
    torch.testing.assert_close(loss, -(rewards * logprobs).mean())


def test_reinforce_ema_baseline_uses_past_batches_only():
    r1 = torch.tensor([[0.2, 0.4], [0.6, 0.8]])
    r2 = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    lp = torch.zeros(2, 2)
    _, info1 = reinforce_loss(lp, r1, baseline="ema", ema_state=None, ema_decay=0.9)
    # First step: no history, leave-one-prompt-out baseline, EMA starts at the batch mean.
    np.testing.assert_allclose(info1["baseline"].numpy().ravel(), [0.7, 0.3], rtol=1e-6)
    np.testing.assert_allclose(float(info1["ema_state"]), 0.5, rtol=1e-6)
    _, info2 = reinforce_loss(lp, r2, baseline="ema", ema_state=info1["ema_state"], ema_decay=0.9)
    np.testing.assert_allclose(info2["baseline"].numpy().ravel(), [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(float(info2["ema_state"]), 0.9 * 0.5 + 0.1 * 0.5, rtol=1e-6)
    _, info3 = reinforce_loss(lp, r2 * 0 + 1.0, baseline="ema", ema_state=0.2, ema_decay=0.5)
    np.testing.assert_allclose(float(info3["ema_state"]), 0.6, rtol=1e-6)
    np.testing.assert_allclose(info3["advantages"].numpy(), np.full((2, 2), 0.8), rtol=1e-6)


def test_reinforce_distributed_baseline_equals_single_process():
    """Two simulated ranks with all_reduce_sum give the advantages of the full batch."""
    rewards = torch.rand(6, 2, dtype=torch.float64)
    logprobs = torch.randn(6, 2, dtype=torch.float64)
    _, full = reinforce_loss(logprobs, rewards, baseline="batch")
    halves = [(logprobs[:2], rewards[:2]), (logprobs[2:], rewards[2:])]  # uneven on purpose
    # Record what each rank contributes, then sum as a real all_reduce would.
    contributions = []
    for lp, r in halves:
        reinforce_loss(lp, r, all_reduce_sum=lambda t: contributions.append(t.clone()) or t)
    total = contributions[0] + contributions[1]
    advantages = [
        reinforce_loss(lp, r, all_reduce_sum=lambda t: total.clone())[1]["advantages"]
        for lp, r in halves
    ]
    torch.testing.assert_close(torch.cat(advantages), full["advantages"])
    _, ema = reinforce_loss(
        logprobs[:2], rewards[:2], "ema", 0.0, 0.5, all_reduce_sum=lambda t: total.clone()
    )
    torch.testing.assert_close(ema["ema_state"], 0.5 * rewards.mean())


def test_reinforce_bad_input():
    lp, r = torch.zeros(2, 2), torch.zeros(2, 2)
    with pytest.raises(ValueError, match="baseline"):
        reinforce_loss(lp, r, baseline="prompt")
    with pytest.raises(ValueError, match="rewards shape"):
        reinforce_loss(lp, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        reinforce_loss(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="non-finite"):
        reinforce_loss(lp, torch.tensor([[0.0, float("nan")], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="ema_decay"):
        reinforce_loss(lp, r, baseline="ema", ema_decay=1.0)
    with pytest.raises(ValueError, match="ema_state"):
        reinforce_loss(lp, r, baseline="ema", ema_state=float("inf"))


# ------------------------------------------------------------------------------ beta, joint


def test_beta_schedule_ramps():
    assert beta_schedule(0, 15.0, 1000) == 0.0
    assert beta_schedule(500, 15.0, 1000) == pytest.approx(7.5)
    assert beta_schedule(250, 8.0, 1000) == pytest.approx(2.0)
    assert beta_schedule(1000, 15.0, 1000) == 15.0
    assert beta_schedule(5000, 15.0, 1000) == 15.0
    assert beta_schedule(0, 5.0, 0) == 5.0
    assert beta_schedule(10, 0.0, 100) == 0.0


@pytest.mark.parametrize(
    "args, match",
    [((0, -1.0, 10), "beta"), ((0, 1.0, -5), "warmup_steps"), ((-1, 1.0, 10), "step")],
)
def test_beta_schedule_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        beta_schedule(*args)


def test_joint_loss_sign_ascends_diversity_on_toy_policy():
    """Descending joint_loss (KL term 0) raises E[r]: the surrogate is added, not subtracted."""
    gen = torch.Generator().manual_seed(7)
    # One policy shared by 256 prompts, peaked on outcome 0, hence low diversity.
    theta = torch.tensor([3.0, 0.0, -1.0, -2.0], dtype=torch.float64, requires_grad=True)
    logits = theta.unsqueeze(0).expand(256, -1)  # [B, K]
    emb_table = torch.tensor(_OUTCOME_EMB)
    y = torch.multinomial(torch.softmax(logits.detach(), -1), 2, replacement=True, generator=gen)
    logprobs = torch.log_softmax(logits, -1).gather(1, y)  # [B, 2]
    surrogate, _ = reinforce_loss(logprobs, diversity_rewards(emb_table[y]))
    kl = (theta * 0).sum()  # a zero KL term that still carries the graph
    loss = joint_loss(kl, surrogate, beta_t=1.0)
    torch.testing.assert_close(loss, kl + surrogate)
    (grad,) = torch.autograd.grad(loss, theta)
    r = _pair_reward_matrix()

    def expected_reward(t):
        p = softmax(t)
        return p @ r @ p

    before = expected_reward(theta.detach().numpy())
    after = expected_reward((theta.detach() - 2.0 * grad).numpy())
    assert after > before + 1e-3


def test_joint_loss_bad_input():
    with pytest.raises(ValueError, match="beta_t"):
        joint_loss(torch.tensor(0.0), torch.tensor(0.0), -1.0)
    with pytest.raises(ValueError, match="surrogate"):
        joint_loss(torch.tensor(0.0), torch.zeros(3), 1.0)
