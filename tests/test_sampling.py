"""suite/sampling.py: masking, CFG sampling with a shared cache, scoring, truncation."""

import numpy as np
import pytest
import torch

from suite.models.lm import TokenLM
from suite.sampling import MASK_VALUE, mask_logits, sample, score

V, L, C = 29, 10, 384


@pytest.fixture
def model() -> TokenLM:
    torch.manual_seed(1)
    m = TokenLM(vocab_size=V, seq_len=L, d_model=32, n_layers=2, n_heads=4, d_ff=64, n_prefix=2)
    with torch.no_grad():  # sharper than the N(0, 0.02) init so that sampling choices matter
        m.head.weight.mul_(40.0)
    return m.eval()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_allowed(seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    allowed = torch.rand(L, V, generator=g) < 0.4
    allowed[torch.arange(L), torch.randint(0, V, (L,), generator=g)] = True  # >= 1 per row
    return allowed


def test_mask_logits_matches_numpy():
    logits = torch.randn(2, 3, L, V)
    allowed = random_allowed()
    ref = np.where(allowed.numpy(), logits.numpy(), -1e9)
    np.testing.assert_array_equal(mask_logits(logits, allowed).numpy(), ref.astype(np.float32))
    assert MASK_VALUE == -1e9
    with pytest.raises(ValueError, match="do not end with the allowed mask's shape"):
        mask_logits(logits, allowed[:-1])
    with pytest.raises(TypeError, match="bool tensor"):
        mask_logits(logits, allowed.float())


def test_fixed_seed_is_reproducible(model):
    cond = torch.randn(4, C)
    a = sample(model, cond, temperature=0.9, generator=gen(5)).tokens
    b = sample(model, cond, temperature=0.9, generator=gen(5)).tokens
    c = sample(model, cond, temperature=0.9, generator=gen(6)).tokens
    assert torch.equal(a, b) and a.shape == (4, L) and a.dtype == torch.long
    assert not torch.equal(a, c)


def test_cfg_gamma_one_reproduces_plain_sampling_exactly(model):
    cond, neg = torch.randn(6, C), torch.randn(6, C)
    plain = sample(model, cond, generator=gen(2), return_logits=True)
    cfg1 = sample(model, cond, neg_cond=neg, gamma=1.0, generator=gen(2), return_logits=True)
    assert torch.equal(plain.tokens, cfg1.tokens)
    assert torch.equal(plain.logits, cfg1.logits)
    cfg3 = sample(model, cond, neg_cond=neg, gamma=3.0, generator=gen(2))
    assert not torch.equal(plain.tokens, cfg3.tokens)  # guidance changes the draws


def test_cfg_uses_one_batched_forward_of_2b_rows(model, monkeypatch):
    seen = []
    original = TokenLM.start

    def spy(self, cond):
        seen.append(cond.shape[0])
        return original(self, cond)

    monkeypatch.setattr(TokenLM, "start", spy)
    sample(model, torch.randn(3, C), neg_cond=torch.zeros(C), gamma=2.0, generator=gen())
    assert seen == [6]


def test_score_cfg_equals_combination_of_two_separate_forwards(model):
    tokens = torch.randint(0, V, (4, L))
    cond, neg = torch.randn(4, C), torch.randn(4, C)
    gamma = 3.0
    out = score(model, tokens, cond, neg_cond=neg, gamma=gamma)
    with torch.no_grad():
        c, n = model(tokens, cond), model(tokens, neg)  # two separate passes
    torch.testing.assert_close(out.cond, c, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.neg, n, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.cfg, gamma * c + (1 - gamma) * n, atol=1e-4, rtol=0)
    # Masking comes after the combination: allowed entries keep the CFG value.
    allowed = random_allowed()
    masked = score(model, tokens, cond, neg_cond=neg, gamma=gamma, allowed=allowed)
    ref = torch.where(allowed, gamma * c + (1 - gamma) * n, torch.tensor(MASK_VALUE))
    torch.testing.assert_close(masked.cfg, ref, atol=1e-4, rtol=0)
    # Without a negative condition the CFG logits are the conditional ones.
    plain = score(model, tokens, cond)
    assert plain.neg is None and torch.equal(plain.cfg, plain.cond)


@pytest.mark.parametrize("gamma", [1.0, 3.0])
def test_sample_logits_equal_score_logits_on_sampled_tokens(model, gamma):
    cond = torch.randn(5, C)
    neg = torch.zeros(1, C)  # unconditional CFG, broadcast to every row
    allowed = random_allowed()
    out = sample(
        model, cond, neg_cond=neg, gamma=gamma, temperature=0.8, allowed=allowed,
        generator=gen(9), return_logits=True, return_log_probs=True,
    )  # fmt: skip
    with torch.no_grad():
        ref = score(model, out.tokens, cond, neg_cond=neg, gamma=gamma, allowed=allowed).cfg
    torch.testing.assert_close(out.logits, ref, atol=1e-4, rtol=0)
    # Log-probs of the chosen tokens under softmax(z / T), computed independently in numpy.
    z = out.logits.double().numpy() / 0.8
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    ref_lp = np.take_along_axis(logp, out.tokens.numpy()[..., None], -1)[..., 0]
    np.testing.assert_allclose(out.log_probs.numpy(), ref_lp, atol=1e-4)


def test_masked_tokens_are_never_sampled(model):
    allowed = random_allowed()
    cond = torch.randn(64, C)
    for gamma, neg in [(1.0, None), (4.0, torch.randn(64, C))]:
        tokens = sample(
            model, cond, neg_cond=neg, gamma=gamma, allowed=allowed, generator=gen()
        ).tokens
        assert allowed[torch.arange(L), tokens].all()


def test_top_k_restricts_support(model):
    cond = torch.randn(32, C)
    greedy = sample(model, cond, top_k=1, generator=gen(), return_logits=True)
    assert torch.equal(greedy.tokens, greedy.logits.argmax(-1))
    out = sample(model, cond, top_k=3, temperature=2.0, generator=gen(), return_logits=True)
    top3 = out.logits.topk(3, dim=-1).indices  # [B, L, 3]
    assert (top3 == out.tokens[..., None]).any(-1).all()
    # k = 3 at a high temperature does use more than the single best token.
    assert (out.tokens != out.logits.argmax(-1)).any()


def test_top_p_restricts_support_to_the_nucleus(model):
    cond = torch.randn(32, C)
    top_p = 0.5
    out = sample(
        model, cond, top_p=top_p, generator=gen(4), return_logits=True, return_log_probs=True
    )
    probs = torch.softmax(out.logits.double(), -1).numpy()  # [B, L, V]
    tokens = out.tokens.numpy()
    for b in range(probs.shape[0]):
        for n in range(L):
            p = probs[b, n]
            # Nucleus: tokens whose strictly-more-likely predecessors hold < top_p of the mass.
            mass_before = np.array([p[p > p[i]].sum() for i in range(V)])
            nucleus = mass_before < top_p
            assert nucleus[tokens[b, n]]
            ref_lp = np.log(p[tokens[b, n]] / p[nucleus].sum())
            assert abs(out.log_probs[b, n].item() - ref_lp) < 1e-4


def test_first_token_frequencies_follow_softmax_over_temperature(model):
    # Empirical frequencies of 20000 draws vs the closed-form softmax(z / T).
    cond = torch.randn(1, C).expand(20000, C).contiguous()
    T = 1.7
    out = sample(model, cond, temperature=T, length=1, generator=gen(11), return_logits=True)
    p = torch.softmax(out.logits[0, 0].double() / T, -1).numpy()
    freq = np.bincount(out.tokens[:, 0].numpy(), minlength=V) / 20000
    assert np.abs(freq - p).max() < 4 * np.sqrt(p.max() / 20000) + 1e-3


def test_sampling_restores_mode_and_needs_no_grad(model):
    model.train()
    out = sample(model, torch.randn(2, C), generator=gen(), return_logits=True)
    assert model.training and not out.logits.requires_grad
    model.eval()
    sample(model, torch.randn(2, C), generator=gen())
    assert not model.training


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gamma=-0.5, neg_cond=torch.zeros(2, C)), r"gamma must be in \[0.0, inf\], got -0.5"),
        (dict(gamma=2.0), "gamma=2.0 needs neg_cond"),
        (dict(temperature=0.0), r"temperature must be in \(0.0, inf\], got 0.0"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.0), r"top_p must be in \(0.0, 1.0\], got 0.0"),
        (dict(top_p=1.5), "top_p must be in"),
        (dict(top_k=0), "top_k must be an int >= 1"),
        (dict(length=L + 1), r"length must be an int in \[1, 10\]"),
        (dict(neg_cond=torch.zeros(3, C), gamma=2.0), "neg_cond must have shape"),
        (dict(allowed=torch.zeros(L, V, dtype=torch.bool)), "forbids every token"),
        (dict(allowed=torch.ones(L, V + 1, dtype=torch.bool)), "allowed must have shape"),
    ],
)
def test_bad_sampling_arguments_are_named(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(model, torch.randn(2, C), **kwargs)


def test_bad_conditions_are_named(model):
    with pytest.raises(ValueError, match=r"sample: cond must have shape \[B, 384\]"):
        sample(model, torch.randn(2, 100))
    with pytest.raises(TypeError, match="cond must be a float tensor"):
        sample(model, torch.zeros(2, C, dtype=torch.long))
    tokens = torch.randint(0, V, (2, L))
    with pytest.raises(ValueError, match="tokens batch 2 != cond batch 3"):
        score(model, tokens, torch.randn(3, C))
    with pytest.raises(ValueError, match=r"score: gamma must be in \[0.0, inf\]"):
        score(model, tokens, torch.randn(2, C), neg_cond=torch.zeros(C), gamma=-1)
