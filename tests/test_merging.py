"""Tests of suite/merging.py: LERP of eq. (6), uniform / weighted soups, SLERP, task
arithmetic, the key/shape/dtype checks and the safetensors export, against numpy."""

import math

import numpy as np
import pytest
import torch

from suite.merging import lerp, merge, slerp, task_arithmetic


def _state(seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(5, 4, generator=g) * scale,
        "block.0.linear.weight": torch.randn(4, 4, generator=g, dtype=torch.float64) * scale,
        "block.0.linear.bias": (torch.randn(4, generator=g) * scale).to(torch.bfloat16),
        "block.0.norm.weight": (torch.randn(4, generator=g) * scale).to(torch.float16),
        "bn.num_batches_tracked": torch.tensor(seed * 10, dtype=torch.long),
        "causal_mask": torch.rand(3, 3, generator=g) > 0.5,
    }


def _np(t):
    return t.to(torch.float64).numpy()


# ------------------------------------------------------------------------------ lerp


def test_lerp_endpoints_return_inputs_exactly():
    a, b = _state(1), _state(2)
    at0, at1 = lerp(a, b, 0.0), lerp(a, b, 1.0)
    for key in a:
        assert at0[key].dtype == a[key].dtype and at0[key].shape == a[key].shape
        if a[key].is_floating_point():
            assert torch.equal(at0[key], a[key]), key
            assert torch.equal(at1[key], b[key]), key
    # Non-float buffers come from the first model at every lambda.
    assert int(at1["bn.num_batches_tracked"]) == 10
    assert torch.equal(at1["causal_mask"], a["causal_mask"])


def test_lerp_half_is_mean_and_generic_lambda_matches_numpy():
    a, b = _state(3), _state(4)
    half = lerp(a, b, 0.5)
    for key in ("embed.weight", "block.0.linear.weight"):
        np.testing.assert_allclose(_np(half[key]), (_np(a[key]) + _np(b[key])) / 2, rtol=1e-6)
    lam = 0.35
    got = lerp(a, b, lam)
    for key in ("embed.weight", "block.0.linear.weight"):
        expected = (1 - lam) * _np(a[key]) + lam * _np(b[key])
        np.testing.assert_allclose(_np(got[key]), expected, rtol=1e-6, atol=1e-7)
    assert got["block.0.linear.weight"].dtype == torch.float64


def test_half_precision_merged_in_fp32_and_cast_back():
    # Values chosen so that half-precision arithmetic rounds differently from fp32 arithmetic.
    a = {"w": torch.tensor([1.0, 256.0, 3.0], dtype=torch.bfloat16)}
    b = {"w": torch.tensor([1.0078125, 257.0, 3.0234375], dtype=torch.bfloat16)}
    for dtype in (torch.bfloat16, torch.float16):
        aa, bb = {"w": a["w"].to(dtype)}, {"w": b["w"].to(dtype)}
        got = lerp(aa, bb, 0.3)["w"]
        assert got.dtype == dtype
        exact = 0.7 * _np(aa["w"]) + 0.3 * _np(bb["w"])  # float64 reference
        expected = torch.tensor(exact, dtype=torch.float32).to(dtype)  # one rounding at the end
        assert torch.equal(got, expected), (dtype, got, expected)


def test_lambda_outside_unit_interval_refused_unless_asked():
    a, b = _state(5), _state(6)
    for lam in (1.3, -0.1, float("nan")):
        with pytest.raises(ValueError, match="lam"):
            lerp(a, b, lam)
    extra = lerp(a, b, 1.3, allow_extrapolation=True)
    expected = -0.3 * _np(a["embed.weight"]) + 1.3 * _np(b["embed.weight"])
    np.testing.assert_allclose(_np(extra["embed.weight"]), expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ merge


def test_uniform_merge_is_arithmetic_mean():
    states = [_state(s) for s in (7, 8, 9, 10)]
    soup = merge(states)
    for key in ("embed.weight", "block.0.linear.weight"):
        expected = np.mean([_np(s[key]) for s in states], axis=0)
        np.testing.assert_allclose(_np(soup[key]), expected, rtol=1e-6, atol=1e-7)
    assert int(soup["bn.num_batches_tracked"]) == 70
    assert soup["bn.num_batches_tracked"].dtype == torch.long
    assert torch.equal(soup["causal_mask"], states[0]["causal_mask"])


def test_weighted_merge_and_weight_checks():
    states = [_state(s) for s in (11, 12, 13)]
    w = [0.2, 0.5, 0.3]
    got = merge(states, w)
    expected = sum(wi * _np(s["embed.weight"]) for wi, s in zip(w, states))
    np.testing.assert_allclose(_np(got["embed.weight"]), expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="sum to 1"):
        merge(states, [0.5, 0.5, 0.5])
    scaled = merge(states, [0.5, 0.5, 0.5], allow_unnormalized=True)
    expected = 0.5 * sum(_np(s["embed.weight"]) for s in states)
    np.testing.assert_allclose(_np(scaled["embed.weight"]), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="negative"):
        merge(states, [1.5, -0.5, 0.0])
    with pytest.raises(ValueError, match="3 state dicts"):
        merge(states, [0.5, 0.5])
    with pytest.raises(ValueError, match="no state dicts"):
        merge([])


def test_mismatches_raise_and_name_the_keys():
    a = _state(14)
    b = _state(15)
    del b["embed.weight"]
    b["head.weight"] = torch.zeros(2)
    b["block.0.linear.bias"] = torch.zeros(5, dtype=torch.bfloat16)
    b["block.0.norm.weight"] = b["block.0.norm.weight"].to(torch.float32)
    with pytest.raises(ValueError) as err:
        lerp(a, b, 0.5)
    message = str(err.value)
    assert "missing" in message and "embed.weight" in message
    assert "extra" in message and "head.weight" in message
    assert "shape" in message and "block.0.linear.bias (4,) vs (5,)" in message
    assert "dtype" in message and "block.0.norm.weight torch.float16 vs torch.float32" in message
    with pytest.raises(ValueError, match=r"states\[2\]"):
        merge([a, _state(16), b])
    with pytest.raises(TypeError, match="non-tensor"):
        merge([{"w": torch.zeros(1), "step": 3}])


# ------------------------------------------------------------------------------ slerp, TA


def test_slerp_matches_numpy_and_keeps_norm_between():
    a = {"w": torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)}
    b = {"w": torch.tensor([[0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)}
    got = slerp(a, b, 0.5)["w"].numpy().ravel()
    # Angle pi/2: sin(pi/4) / sin(pi/2) = 1/sqrt(2) on each endpoint.
    np.testing.assert_allclose(got, [1 / math.sqrt(2), 2 / math.sqrt(2), 0, 0], rtol=1e-12)
    rng = np.random.default_rng(0)
    va, vb, t = rng.normal(size=6), rng.normal(size=6), 0.3
    omega = math.acos(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))
    expected = (math.sin((1 - t) * omega) * va + math.sin(t * omega) * vb) / math.sin(omega)
    got = slerp({"w": torch.tensor(va)}, {"w": torch.tensor(vb)}, t)["w"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    state_a, state_b = _state(17), _state(18)
    assert torch.equal(slerp(state_a, state_b, 0.0)["embed.weight"], state_a["embed.weight"])
    with pytest.raises(ValueError, match="t must be"):
        slerp(state_a, state_b, 1.3)


def test_slerp_falls_back_to_lerp_for_parallel_and_zero_tensors():
    a = {"w": torch.tensor([1.0, 2.0, 3.0]), "z": torch.zeros(3)}
    b = {"w": torch.tensor([2.0, 4.0, 6.0]), "z": torch.tensor([1.0, 1.0, 1.0])}
    got = slerp(a, b, 0.25)
    np.testing.assert_allclose(got["w"].numpy(), [1.25, 2.5, 3.75], rtol=1e-6)
    np.testing.assert_allclose(got["z"].numpy(), [0.25, 0.25, 0.25], rtol=1e-6)
    assert all(torch.isfinite(v).all() for v in got.values())


def test_task_arithmetic_matches_numpy():
    base, s1, s2 = _state(19), _state(20), _state(21)
    got = task_arithmetic(base, [s1, s2], [0.7, 0.6])
    for key in ("embed.weight", "block.0.linear.weight"):
        expected = _np(base[key]) + 0.7 * (_np(s1[key]) - _np(base[key]))
        expected = expected + 0.6 * (_np(s2[key]) - _np(base[key]))
        np.testing.assert_allclose(_np(got[key]), expected, rtol=1e-5, atol=1e-6)
    assert int(got["bn.num_batches_tracked"]) == 190  # from the base
    with pytest.raises(ValueError, match="no fine-tuned"):
        task_arithmetic(base, [], [])


# ------------------------------------------------------------------------------ export
