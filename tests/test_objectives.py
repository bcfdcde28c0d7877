"""Tests of the token KL of suite/objectives.py (eq. 2) against independent computations
(scipy's rel_entr, finite differences, closed forms). The diversity reward (eq. 7),
REINFORCE (eq. 4/15), beta ramp and joint loss (eq. 5) are in test_objectives_reinforce.py."""

import itertools

import numpy as np
import pytest
import torch
from scipy.special import rel_entr, softmax

from suite.objectives import token_kl
from suite.sampling import MASK_VALUE


def _np_divergence(student, teacher, kind, temperature, jsd_beta=0.5):
    """Per-position divergence [B, L] by scipy's rel_entr (x log(x / y), 0 log 0 = 0)."""
    p_s = softmax(student / temperature, axis=-1)
    p_t = softmax(teacher / temperature, axis=-1)
    if kind == "reverse":
        return rel_entr(p_s, p_t).sum(-1)
    if kind == "forward":
        return rel_entr(p_t, p_s).sum(-1)
    m = jsd_beta * p_t + (1 - jsd_beta) * p_s
    return jsd_beta * rel_entr(p_t, m).sum(-1) + (1 - jsd_beta) * rel_entr(p_s, m).sum(-1)


def _random_logits(shape, seed, scale=2.0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=scale, size=shape)


# ------------------------------------------------------------------------------ token_kl


@pytest.mark.parametrize("kind", ["reverse", "forward", "jsd"])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.9])
def test_token_kl_matches_scipy(kind, temperature):
    student = _random_logits((3, 5, 7), 1)
    teacher = _random_logits((3, 5, 7), 2)
    expected = _np_divergence(student, teacher, kind, temperature, jsd_beta=0.3).sum(-1)
    got = token_kl(
        torch.tensor(student),
        torch.tensor(teacher),
        None,
        temperature=temperature,
        kind=kind,
        jsd_beta=0.3,
    )
    assert got.shape == (3,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert (got > 0).all()


def test_token_kl_reverse_differs_from_forward():
    # A guard that the kinds are wired to different directions (KL is asymmetric).
    s, t = torch.tensor(_random_logits((2, 4, 6), 3)), torch.tensor(_random_logits((2, 4, 6), 4))
    assert not torch.allclose(token_kl(s, t, None), token_kl(s, t, None, kind="forward"))


def test_token_kl_jsd_small_beta_approaches_scaled_forward_kl():
    # GKD property of this convention (P = teacher): JSD_beta / beta -> KL(P_t || P_s) as beta -> 0.
    s, t = _random_logits((2, 3, 5), 5), _random_logits((2, 3, 5), 6)
    beta = 1e-5
    jsd = token_kl(torch.tensor(s), torch.tensor(t), None, kind="jsd", jsd_beta=beta)
    forward = _np_divergence(s, t, "forward", 1.0).sum(-1)
    np.testing.assert_allclose(jsd.numpy() / beta, forward, rtol=1e-3)


def test_token_kl_is_zero_for_identical_policies():
    logits = torch.tensor(_random_logits((2, 3, 9), 7))
    for kind in ("reverse", "forward", "jsd"):
        assert token_kl(logits, logits.clone(), None, kind=kind).abs().max() < 1e-12


def test_token_kl_mask_ignores_positions_and_mean_reduction():
    student = _random_logits((2, 6, 5), 8)
    teacher = _random_logits((2, 6, 5), 9)
    mask = np.array([[1, 1, 0, 1, 0, 0], [0, 1, 1, 1, 1, 1]], dtype=bool)
    per_pos = _np_divergence(student, teacher, "reverse", 0.99)
    expected_sum = (per_pos * mask).sum(-1)
    # Garbage (even nan) at masked positions must not leak into the result.
    s_t, t_t = torch.tensor(student), torch.tensor(teacher)
    s_t[0, 2] = float("nan")
    t_t[1, 0] = float("inf")
    m_t = torch.tensor(mask)
    got_sum = token_kl(s_t, t_t, m_t, temperature=0.99)
    got_mean = token_kl(s_t, t_t, m_t, temperature=0.99, reduce="mean")
    np.testing.assert_allclose(got_sum.numpy(), expected_sum, rtol=1e-10)
    np.testing.assert_allclose(got_mean.numpy(), expected_sum / mask.sum(-1), rtol=1e-10)
    # Mean over an all-False row is defined as 0, not nan.
    empty = token_kl(s_t, t_t, torch.zeros(2, 6, dtype=torch.bool), reduce="mean")
    assert torch.equal(empty, torch.zeros(2, dtype=empty.dtype))


@pytest.mark.parametrize("kind", ["reverse", "forward", "jsd"])
def test_token_kl_mask_value_keeps_it_finite_and_equal_to_support_kl(kind):
    student = _random_logits((2, 4, 8), 10)
    teacher = _random_logits((2, 4, 8), 11)
    allowed = np.ones((4, 8), dtype=bool)
    allowed[0, :5] = False  # position 0 allows only 3 tokens
    allowed[2, [1, 4, 6]] = False
    s_masked = np.where(allowed, student, MASK_VALUE)
    t_masked = np.where(allowed, teacher, MASK_VALUE)
    s_t = torch.tensor(s_masked, requires_grad=True)
    got = token_kl(s_t, torch.tensor(t_masked), None, temperature=0.99, kind=kind, jsd_beta=0.4)
    assert torch.isfinite(got).all()
    # Independent reference: the divergence over the allowed support only.
    expected = np.zeros(2)
    for b, n in itertools.product(range(2), range(4)):
        keep = allowed[n]
        expected[b] += _np_divergence(
            student[b, n, keep], teacher[b, n, keep], kind, 0.99, jsd_beta=0.4
        )
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-9)
    got.sum().backward()
    assert torch.isfinite(s_t.grad).all()
    # Masked tokens carry zero probability, hence zero gradient.
    assert s_t.grad[:, ~torch.tensor(allowed)].abs().max() == 0


def test_token_kl_minus_inf_logits_stay_finite():
    student = torch.tensor(_random_logits((1, 2, 4), 12), requires_grad=True)
    teacher = torch.tensor(_random_logits((1, 2, 4), 13))
    with torch.no_grad():
        student[0, 0, 1] = float("-inf")
    teacher[0, 0, 1] = float("-inf")
    got = token_kl(student, teacher, None)
    got.sum().backward()
    assert torch.isfinite(got).all() and torch.isfinite(student.grad).all()


@pytest.mark.parametrize("kind", ["reverse", "forward", "jsd"])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_token_kl_gradient_matches_finite_differences(kind, reduce):
    student = torch.tensor(_random_logits((2, 3, 5), 14), requires_grad=True)
    teacher = torch.tensor(_random_logits((2, 3, 5), 15), requires_grad=True)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    seq_weights = torch.tensor([0.7, -1.3], dtype=torch.float64)

    def objective(s):
        return float((seq_weights * token_kl(s, teacher, mask, 0.8, kind, 0.35, reduce)).sum())

    loss = (seq_weights * token_kl(student, teacher, mask, 0.8, kind, 0.35, reduce)).sum()
    loss.backward()
    assert teacher.grad is None  # the teacher is detached inside
    h = 1e-6
    base = student.detach().clone()
    fd = torch.zeros_like(base)
    for idx in itertools.product(*(range(d) for d in base.shape)):
        plus, minus = base.clone(), base.clone()
        plus[idx] += h
        minus[idx] -= h
        fd[idx] = (objective(plus) - objective(minus)) / (2 * h)
    np.testing.assert_allclose(student.grad.numpy(), fd.numpy(), rtol=1e-6, atol=1e-8)
    assert student.grad[0, 1].abs().max() == 0  # masked position: no gradient


def test_token_kl_half_precision_is_computed_in_float32():
    student = torch.tensor(_random_logits((2, 3, 50), 16)).to(torch.bfloat16)
    teacher = torch.tensor(_random_logits((2, 3, 50), 17)).to(torch.bfloat16)
    got = token_kl(student, teacher, None)
    assert got.dtype == torch.float32
    expected = _np_divergence(
        student.double().numpy(), teacher.double().numpy(), "reverse", 1.0
    ).sum(-1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"kind": "symmetric"}, "kind"),
        ({"kind": "jsd", "jsd_beta": 1.0}, "jsd_beta"),
        ({"reduce": "max"}, "reduce"),
    ],
)
def test_token_kl_bad_arguments(kwargs, match):
    x = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match=match):
        token_kl(x, x, None, **kwargs)


def test_token_kl_bad_shapes():
    with pytest.raises(ValueError, match="teacher_logits shape"):
        token_kl(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), None)
    with pytest.raises(ValueError, match=r"\[B, L, V\]"):
        token_kl(torch.zeros(2, 3), torch.zeros(2, 3), None)
    with pytest.raises(ValueError, match="mask"):
        token_kl(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.ones(2, 1, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        token_kl(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.ones(1, 2))
