"""suite/sampling.py: masking, CFG sampling with a shared state, scoring, truncation.

The sampler is written against `suite.policies.Policy` (tokens `[B, K, L]`, logits
`[B, K, L, V]`, masks `[K, L, V]`); here it samples a tiny random TokenLM wrapped as a
K = 1 `TokenLMPolicy` (and, for the reference loop, as the music world's `MusicPolicy`).
"""

import numpy as np
import pytest
import torch

from suite.models.lm import TokenLM
from suite.policies.base import TextCond, eval_mode
from suite.policies.music import MusicPolicy, TokenLMPolicy
from suite.sampling import MASK_VALUE, mask_logits, sample, score

V, L, C = 29, 10, 384


@pytest.fixture
def lm() -> TokenLM:
    torch.manual_seed(1)
    m = TokenLM(vocab_size=V, seq_len=L, d_model=32, n_layers=2, n_heads=4, d_ff=64, n_prefix=2)
    with torch.no_grad():  # sharper than the N(0, 0.02) init so that sampling choices matter
        m.head.weight.mul_(40.0)
    return m.eval()


@pytest.fixture
def model(lm) -> TokenLMPolicy:
    return TokenLMPolicy(lm).eval()


def conds(model: TokenLMPolicy, b: int, dim: int = C) -> TextCond:
    return model.cond_from_vectors(torch.randn(b, dim))


def null(model: TokenLMPolicy, b: int = 1) -> TextCond:
    return model.cond_from_vectors(torch.zeros(b, C))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_allowed(seed: int = 3) -> torch.Tensor:
    """A random validity mask `[1, L, V]` with >= 1 allowed token per position."""
    g = torch.Generator().manual_seed(seed)
    allowed = torch.rand(L, V, generator=g) < 0.4
    allowed[torch.arange(L), torch.randint(0, V, (L,), generator=g)] = True
    return allowed[None]


def test_mask_logits_matches_numpy():
    logits = torch.randn(2, 3, 1, L, V)
    allowed = random_allowed()  # [K, L, V]
    ref = np.where(allowed.numpy(), logits.numpy(), -1e9)
    np.testing.assert_array_equal(mask_logits(logits, allowed).numpy(), ref.astype(np.float32))
    # Any trailing shape works, e.g. a single codebook's [L, V].
    np.testing.assert_array_equal(mask_logits(logits, allowed[0]).numpy(), ref.astype(np.float32))
    assert MASK_VALUE == -1e9
    with pytest.raises(ValueError, match="do not end with the allowed mask's shape"):
        mask_logits(logits, allowed[:, :-1])
    with pytest.raises(TypeError, match="bool tensor"):
        mask_logits(logits, allowed.float())


def test_fixed_seed_is_reproducible(model):
    cond = conds(model, 4)
    a = sample(model, cond, temperature=0.9, generator=gen(5)).tokens
    b = sample(model, cond, temperature=0.9, generator=gen(5)).tokens
    c = sample(model, cond, temperature=0.9, generator=gen(6)).tokens
    assert torch.equal(a, b) and a.shape == (4, 1, L) and a.dtype == torch.long
    assert not torch.equal(a, c)


def test_cfg_gamma_one_reproduces_plain_sampling_exactly(model):
    cond, neg = conds(model, 6), conds(model, 6)
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
    sample(model, conds(model, 3), neg_cond=null(model), gamma=2.0, generator=gen())
    assert seen == [6]


# ---------------------------------------------------------------- the reference loop
def reference_sample(lm, cond, neg, gamma, temperature, allowed, generator):
    """The sampling algorithm written out on TokenLM.start / step: tokens `[B, L]`.

    cond / neg are sentence vectors `[B, C]` (neg None: plain sampling); allowed `[L, V]`.
    """
    B = cond.shape[0]
    tokens = torch.empty(B, lm.seq_len, dtype=torch.long)
    with torch.no_grad():
        rows = cond if neg is None else torch.cat([cond, neg])
        cache, logits = lm.start(rows)
        for n in range(lm.seq_len):
            if n > 0:
                prev = tokens[:, n - 1]
                logits = lm.step(prev if neg is None else torch.cat([prev, prev]), cache)
            z = logits if neg is None else gamma * logits[:B] + (1.0 - gamma) * logits[B:]
            if allowed is not None:
                z = z.masked_fill(~allowed[n], MASK_VALUE)
            if temperature != 1.0:
                z = z / temperature
            # inverse CDF with one float64 uniform per row, written out in numpy
            probs = torch.softmax(z.double(), dim=-1).numpy()
            u = torch.rand(B, 1, generator=generator, dtype=torch.float64).numpy()[:, 0]
            for b in range(B):
                cdf = np.cumsum(probs[b])
                tokens[b, n] = int(np.searchsorted(cdf / cdf[-1], u[b], side="right"))
    return tokens


def test_draw_follows_the_categorical_and_never_draws_a_zero():
    from scipy.stats import chisquare

    from suite.sampling import draw

    p = torch.tensor([0.0, 0.1, 0.0, 0.25, 0.05, 0.6, 0.0], dtype=torch.float64)  # zeros at both ends and inside
    z = torch.log(p).float().expand(20000, -1)  # -inf where p = 0, as masking / truncation give
    got = draw(z, torch.Generator().manual_seed(3))[:, 0]
    counts = torch.bincount(got, minlength=len(p)).double()
    assert counts[p == 0].sum() == 0
    nz = p > 0
    assert chisquare(counts[nz].numpy(), 20000 * p[nz].numpy()).pvalue > 1e-3
    one = draw(torch.zeros(1, 3), torch.Generator().manual_seed(0))  # a single row
    assert one.shape == (1, 1) and 0 <= int(one) < 3
    masked = torch.full((500, 5), MASK_VALUE)  # the sampler's finite mask: one allowed token
    masked[:, 4] = 0.0
    assert (draw(masked, torch.Generator().manual_seed(0)) == 4).all()


@pytest.mark.parametrize("gamma", [1.0, 3.0])
def test_sample_equals_a_reference_loop_on_token_lm(lm, gamma):
    with torch.no_grad():  # softer than the fixture: a wrong T, gamma or mask changes draws
        lm.head.weight.mul_(0.2)
    policy = TokenLMPolicy(lm).eval()
    vectors = torch.randn(16, C)
    cond = policy.cond_from_vectors(vectors)
    neg = None if gamma == 1.0 else null(policy)
    allowed = random_allowed()
    got = sample(policy, cond, neg_cond=neg, gamma=gamma, temperature=0.8, allowed=allowed,
                 generator=gen(7)).tokens  # fmt: skip
    ref_neg = None if gamma == 1.0 else torch.zeros(16, C)
    ref = reference_sample(lm, vectors, ref_neg, gamma, 0.8, allowed[0], gen(7))
    assert got.shape == (16, 1, L)
    assert torch.equal(got[:, 0], ref)
    # The comparison has teeth: another temperature draws other tokens from this stream.
    assert not torch.equal(ref, reference_sample(lm, vectors, ref_neg, gamma, 1.0, allowed[0],
                                                 gen(7)))  # fmt: skip


@pytest.mark.parametrize("gamma", [1.0, 3.0])
def test_music_policy_sample_equals_a_reference_loop(gamma):
    from suite.music.tokens import SEQ_LEN, VOCAB_SIZE, allowed_mask

    torch.manual_seed(2)
    lm = TokenLM(VOCAB_SIZE, SEQ_LEN, d_model=32, n_layers=1, n_heads=2, d_ff=64, n_prefix=2)
    with torch.no_grad():
        lm.head.weight.mul_(20.0)
    table = {"a": torch.randn(C), "b": torch.randn(C), "": torch.zeros(C)}
    policy = MusicPolicy(lm, encode=lambda prompts: torch.stack([table[p] for p in prompts]))
    policy.eval()
    prompts = ["a", "b", "a"]
    cond, neg = policy.encode_text(prompts), policy.encode_text([""])  # "" is the null row
    got = sample(policy, cond, neg_cond=neg, gamma=gamma, temperature=0.99,
                 allowed=policy.allowed_mask(), generator=gen(4)).tokens  # fmt: skip
    vectors = torch.stack([table[p] for p in prompts])
    ref = reference_sample(lm, vectors, None if gamma == 1.0 else torch.zeros(3, C), gamma, 0.99,
                           allowed_mask(), gen(4))  # fmt: skip
    assert got.shape == (3, 1, SEQ_LEN)
    assert torch.equal(got[:, 0], ref)
    assert bool(allowed_mask()[torch.arange(SEQ_LEN), got[:, 0]].all())


# ---------------------------------------------------------------- scoring
def test_score_cfg_equals_combination_of_two_separate_forwards(model, lm):
    tokens = torch.randint(0, V, (4, 1, L))
    cv, nv = torch.randn(4, C), torch.randn(4, C)
    cond, neg = model.cond_from_vectors(cv), model.cond_from_vectors(nv)
    gamma = 3.0
    out = score(model, tokens, cond, neg_cond=neg, gamma=gamma)
    with torch.no_grad():  # two separate passes of the bare LM
        c, n = lm(tokens[:, 0], cv)[:, None], lm(tokens[:, 0], nv)[:, None]  # [B, 1, L, V]
    assert out.cfg.shape == (4, 1, L, V)
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
    cond = conds(model, 5)
    neg = null(model)  # unconditional CFG, broadcast to every row
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


# ---------------------------------------------------------------- support and truncation
def test_masked_tokens_are_never_sampled(model):
    allowed = random_allowed()
    cond = conds(model, 64)
    for gamma, neg in [(1.0, None), (4.0, conds(model, 64))]:
        tokens = sample(
            model, cond, neg_cond=neg, gamma=gamma, allowed=allowed, generator=gen()
        ).tokens
        assert allowed[0, torch.arange(L), tokens[:, 0]].all()


def test_top_k_restricts_support(model):
    cond = conds(model, 32)
    greedy = sample(model, cond, top_k=1, generator=gen(), return_logits=True)
    assert torch.equal(greedy.tokens, greedy.logits.argmax(-1))
    out = sample(model, cond, top_k=3, temperature=2.0, generator=gen(), return_logits=True)
    top3 = out.logits.topk(3, dim=-1).indices  # [B, K, L, 3]
    assert (top3 == out.tokens[..., None]).any(-1).all()
    # k = 3 at a high temperature does use more than the single best token.
    assert (out.tokens != out.logits.argmax(-1)).any()


def test_top_p_restricts_support_to_the_nucleus(model):
    cond = conds(model, 32)
    top_p = 0.5
    out = sample(
        model, cond, top_p=top_p, generator=gen(4), return_logits=True, return_log_probs=True
    )
    probs = torch.softmax(out.logits[:, 0].double(), -1).numpy()  # [B, L, V]
    tokens = out.tokens[:, 0].numpy()
    for b in range(probs.shape[0]):
        for n in range(L):
            p = probs[b, n]
            # Nucleus: tokens whose strictly-more-likely predecessors hold < top_p of the mass.
            mass_before = np.array([p[p > p[i]].sum() for i in range(V)])
            nucleus = mass_before < top_p
            assert nucleus[tokens[b, n]]
            ref_lp = np.log(p[tokens[b, n]] / p[nucleus].sum())
            assert abs(out.log_probs[b, 0, n].item() - ref_lp) < 1e-4


def test_first_token_frequencies_follow_softmax_over_temperature(model):
    # Empirical frequencies of 20000 draws vs the closed-form softmax(z / T).
    cond = model.cond_from_vectors(torch.randn(1, C).expand(20000, C).contiguous())
    T = 1.7
    out = sample(model, cond, temperature=T, length=1, generator=gen(11), return_logits=True)
    assert out.tokens.shape == (20000, 1, 1)
    p = torch.softmax(out.logits[0, 0, 0].double() / T, -1).numpy()
    freq = np.bincount(out.tokens[:, 0, 0].numpy(), minlength=V) / 20000
    assert np.abs(freq - p).max() < 4 * np.sqrt(p.max() / 20000) + 1e-3


# ---------------------------------------------------------------- modes
def test_sampling_restores_mode_and_needs_no_grad(model):
    model.train()
    out = sample(model, conds(model, 2), generator=gen(), return_logits=True)
    assert model.training and model.lm.training and not out.logits.requires_grad
    model.eval()
    sample(model, conds(model, 2), generator=gen())
    assert not model.training and not model.lm.training


def test_sampling_restores_each_sub_module_s_own_mode(model, monkeypatch):
    """A wrapper in eval mode around an LM in train mode (the student's case) keeps both."""
    model.eval()
    model.lm.train()
    seen = []
    original = TokenLM.step

    def spy(self, token, cache):
        seen.append(self.training or any(m.training for m in self.modules()))
        return original(self, token, cache)

    monkeypatch.setattr(TokenLM, "step", spy)
    sample(model, conds(model, 2), generator=gen())
    assert seen and not any(seen)  # every sub-module decoded in eval mode
    assert not model.training
    assert model.lm.training and all(m.training for m in model.lm.modules())
    # eval_mode itself: a mixed tree comes back exactly as it was.
    model.lm.blocks[0].eval()
    before = [m.training for m in model.modules()]
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before


# ---------------------------------------------------------------- argument checks
def _rows(b: int) -> TextCond:
    return TextCond(torch.zeros(b, 1, C), torch.ones(b, 1, dtype=torch.bool))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gamma=-0.5, neg_cond=_rows(2)), r"gamma must be in \[0.0, inf\], got -0.5"),
        (dict(gamma=2.0), "gamma=2.0 needs neg_cond"),
        (dict(temperature=0.0), r"temperature must be in \(0.0, inf\], got 0.0"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.0), r"top_p must be in \(0.0, 1.0\], got 0.0"),
        (dict(top_p=1.5), "top_p must be in"),
        (dict(top_k=0), "top_k must be an int >= 1"),
        (dict(length=L + 1), r"length must be an int in \[1, 10\]"),
        (dict(neg_cond=_rows(3), gamma=2.0), "neg_cond must have 1 or 2 rows, got 3"),
        (dict(allowed=torch.zeros(1, L, V, dtype=torch.bool)), "forbids every token"),
        (dict(allowed=torch.ones(1, L, V + 1, dtype=torch.bool)), "allowed must have shape"),
        (dict(allowed=torch.ones(L, V, dtype=torch.bool)), r"allowed must have shape \[1, L"),
    ],
)
def test_bad_sampling_arguments_are_named(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(model, conds(model, 2), **kwargs)


def test_bad_conditions_are_named(model):
    with pytest.raises(ValueError, match=r"TokenLM.start: cond must have shape \[B, 384\]"):
        sample(model, conds(model, 2, dim=100))
    with pytest.raises(TypeError, match="sample: cond must be a TextCond"):
        sample(model, torch.randn(2, C))
    with pytest.raises(TypeError, match="neg_cond must be a TextCond"):
        sample(model, conds(model, 2), neg_cond=torch.zeros(C), gamma=2.0)
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        TextCond(torch.zeros(2, 1, C), torch.ones(2, 1))
    tokens = torch.randint(0, V, (2, 1, L))
    with pytest.raises(ValueError, match="tokens batch 2 != cond batch 3"):
        score(model, tokens, conds(model, 3))
    with pytest.raises(ValueError, match=r"score: tokens must be an integer tensor \[B, 1, L\]"):
        score(model, tokens[:, 0], conds(model, 2))
    with pytest.raises(ValueError, match=r"score: gamma must be in \[0.0, inf\]"):
        score(model, tokens, conds(model, 2), neg_cond=null(model), gamma=-1)
