"""The compact KV cache (suite/models/kv_cache.py): same logits and tokens as the one-buffer
layout, growth within its gap budget, and clear errors."""

import pytest
import torch

from suite.models.kv_cache import PREFETCH_GAP_BYTES, KVCache
from suite.models.lm import TokenLM
from suite.policies.music import TokenLMPolicy
from suite.sampling import sample

V, L = 41, 30


def make(d_model: int = 32, n_heads: int = 2) -> TokenLM:
    torch.manual_seed(0)
    return TokenLM(V, L, d_model=d_model, n_layers=2, n_heads=n_heads, d_ff=64, n_prefix=3).eval()


def run_steps(m: TokenLM, tokens: torch.Tensor, cond: torch.Tensor, compact: bool):
    """Teacher-forced decoding through the cache: logits [B, L, V] and the cache."""
    with torch.no_grad():
        cache, logits = m.start(cond, compact=compact)
        steps = [logits]
        for n in range(L - 1):
            steps.append(m.step(tokens[:, n], cache))
    return torch.stack(steps, 1), cache


@pytest.mark.parametrize("d_model,n_heads", [(32, 2), (64, 1)])  # Dh 16 and 64: grow 8 and 2
def test_compact_cache_gives_bitwise_the_one_buffer_logits(d_model, n_heads):
    m = make(d_model, n_heads)
    tokens = torch.randint(0, V, (6, L))
    cond = torch.randn(6, 384)
    compact, cache = run_steps(m, tokens, cond, compact=True)
    one, ref_cache = run_steps(m, tokens, cond, compact=False)
    assert cache.compact and not ref_cache.compact
    # The same keys and values at the same positions feed the same matmuls: equal bits.
    assert torch.equal(compact, one)
    torch.testing.assert_close(compact, m(tokens, cond), atol=1e-5, rtol=0)
    n = cache.length
    assert n == ref_cache.length == 3 + L - 1 == cache.capacity
    assert torch.equal(cache.kv[..., :n, :], ref_cache.kv[..., :n, :])


def test_compact_cache_keeps_the_gap_under_the_prefetch_budget():
    m = make()  # Dh = 16: 64-byte rows, so 8 positions per growth
    cache, _ = m.start(torch.randn(2, 384), compact=True)
    assert cache.grow == PREFETCH_GAP_BYTES // (16 * 4) == 8
    copies = 0
    for _ in range(L - 1):
        before = cache.kv.data_ptr()
        m.step(torch.zeros(2, dtype=torch.long), cache)
        copies += cache.kv.data_ptr() != before
        room = cache.kv.shape[4]
        assert cache.length <= room <= cache.length + cache.grow - 1
    # 3 + 29 = 32 positions: the prefix's reserve makes room for 10, then 3 growths.
    assert copies == 3


def test_sampling_is_identical_with_either_layout(monkeypatch):
    m = make()
    policy = TokenLMPolicy(m)
    cond = policy.cond_from_vectors(torch.randn(5, 384))
    neg = policy.cond_from_vectors(torch.zeros(1, 384))
    outs = {}
    start = TokenLM.start
    for compact in (True, False):

        def start_with(self, c, compact=compact, **kw):
            return start(self, c, compact=compact)

        monkeypatch.setattr(TokenLM, "start", start_with)
        for gamma in (1.0, 3.0):
            g = torch.Generator().manual_seed(7)
            out = sample(policy, cond, neg_cond=neg, gamma=gamma, generator=g, return_logits=True)
            outs[compact, gamma] = out
        monkeypatch.undo()
    for gamma in (1.0, 3.0):
        assert torch.equal(outs[True, gamma].tokens, outs[False, gamma].tokens)
        assert torch.equal(outs[True, gamma].logits, outs[False, gamma].logits)


def test_reserve_refuses_more_than_capacity_and_keeps_the_cache():
    cache = KVCache(1, 2, 1, 4, max_positions=5)
    cache.reserve(3)
    cache.kv[..., :3, :] = 1.0
    cache.length = 3
    with pytest.raises(ValueError, match="6 positions asked, the cache holds 5"):
        cache.reserve(6)
    assert cache.kv.shape[4] >= 3 and bool((cache.kv[..., :3, :] == 1.0).all())
    cache.reserve(5)  # grows into the other buffer and carries the filled part over
    assert bool((cache.kv[..., :3, :] == 1.0).all())


def test_cpu_defaults_to_compact():
    assert KVCache(1, 1, 1, 8, 4).compact
    assert not KVCache(1, 1, 1, 8, 4, compact=False).compact
