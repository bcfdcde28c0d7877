"""TokenLM (suite/models/lm.py): teacher forcing, KV cache, null condition, checkpoints."""

import pytest
import torch

from suite.models.lm import SIZES, TokenLM
from suite.models.lm_checkpoint import load_lm

V, L = 37, 12


def make(**kw) -> TokenLM:
    cfg = dict(vocab_size=V, seq_len=L, d_model=32, n_layers=2, n_heads=4, d_ff=64, n_prefix=3)
    cfg.update(kw)
    return TokenLM(**cfg).eval()


def conds(b: int) -> torch.Tensor:
    c = torch.randn(b, 384)
    c[1] = 0.0  # a null-condition row
    return c


@pytest.mark.parametrize("tie", [True, False])
def test_cache_matches_full_forward_at_every_position(tie):
    m = make(tie_embeddings=tie)
    tokens = torch.randint(0, V, (5, L))
    cond = conds(5)
    with torch.no_grad():
        full = m(tokens, cond)  # [B, L, V]
        cache, logits = m.start(cond)
        steps = [logits]
        for n in range(L - 1):
            steps.append(m.step(tokens[:, n], cache))
    inc = torch.stack(steps, dim=1)
    assert full.dtype == torch.float32 and full.shape == (5, L, V)
    torch.testing.assert_close(inc, full, atol=1e-5, rtol=0)
    assert cache.length == cache.capacity == 3 + L - 1
    with pytest.raises(ValueError, match="cache is full"):
        m.step(tokens[:, 0], cache)


def test_forward_is_causal_and_prefix_is_bos():
    m = make()
    tokens = torch.randint(0, V, (3, L))
    cond = conds(3)
    base = m(tokens, cond)
    k = 6
    changed = tokens.clone()
    changed[:, k] = (changed[:, k] + 1) % V
    other = m(changed, cond)
    # logits[:, n] sees tokens[:, :n] only: positions <= k unchanged, k+1 changed.
    torch.testing.assert_close(other[:, : k + 1], base[:, : k + 1], atol=0, rtol=0)
    assert (other[:, k + 1] - base[:, k + 1]).abs().max() > 1e-6
    # A shorter input gives the same leading logits (the last token is never read).
    torch.testing.assert_close(m(tokens[:, :5], cond), base[:, :5], atol=1e-6, rtol=0)


def test_zero_condition_rows_use_learned_null_prefix():
    m = make()
    tokens = torch.randint(0, V, (3, L))
    cond = conds(3)
    before = m(tokens, cond)
    with torch.no_grad():
        m.cond_proj.weight.add_(torch.randn_like(m.cond_proj.weight))
        m.cond_proj.bias.add_(1.0)
    after = m(tokens, cond)
    torch.testing.assert_close(after[1], before[1], atol=0, rtol=0)  # null row untouched
    assert (after[0] - before[0]).abs().max() > 1e-4
    with torch.no_grad():
        m.null_prefix.add_(torch.randn_like(m.null_prefix))  # not a constant: LN removes those
    assert (m(tokens, cond)[1] - before[1]).abs().max() > 1e-4


def test_bad_inputs_are_named():
    m = make()
    tok = torch.randint(0, V, (2, L))
    with pytest.raises(ValueError, match=r"cond must have shape \[B, 384\]"):
        m(tok, torch.randn(2, 10))
    with pytest.raises(ValueError, match="cond batch 3 != tokens batch 2"):
        m(tok, torch.randn(3, 384))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 37\)"):
        m(tok + V, torch.randn(2, 384))
    with pytest.raises(ValueError, match="1 <= N <= 12"):
        m(torch.zeros(2, L + 1, dtype=torch.long), torch.randn(2, 384))
    with pytest.raises(TypeError, match="integer tensor"):
        m(tok.float(), torch.randn(2, 384))
    with pytest.raises(ValueError, match="divisible by n_heads"):
        make(d_model=30)
    with pytest.raises(ValueError, match="dropout must be in"):
        make(dropout=1.0)
    with pytest.raises(ValueError, match="unknown keys"):
        TokenLM.from_config({"vocab_size": 3, "seq_len": 4, "width": 9})


def test_config_roundtrip_and_save_load(tmp_path):
    m = make(tie_embeddings=False)
    m2 = TokenLM.from_config(m.config)
    assert m2.config == m.config
    path = tmp_path / "lm.pt"
    m.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["lm.pt"]  # no temp file left behind
    loaded = load_lm(path)
    tokens, cond = torch.randint(0, V, (2, L)), conds(2)
    torch.testing.assert_close(loaded(tokens, cond), m(tokens, cond), atol=0, rtol=0)
    m2.load_weights(path)
    torch.testing.assert_close(m2(tokens, cond), m(tokens, cond), atol=0, rtol=0)


def test_wrong_architecture_checkpoint_is_refused(tmp_path):
    path = tmp_path / "lm.pt"
    make(d_model=32).save(path)
    other = make(d_model=48)
    with pytest.raises(
        ValueError, match=r"another architecture.*d_model: checkpoint 32 vs model 48"
    ):
        other.load_weights(path)
    # The state-dict check names keys and shapes.
    sd = make(d_model=32).state_dict()
    with pytest.raises(
        ValueError, match=r"shape mismatches: .*pos_emb: checkpoint \(14, 32\) vs model \(14, 48\)"
    ):
        other.load_state_dict_checked(sd)
    with pytest.raises(ValueError, match=r"missing keys: \['blocks\.2\."):
        make(n_layers=3).load_state_dict_checked(sd)
    with pytest.raises(ValueError, match="n_layers: checkpoint 2 vs expected 4"):
        load_lm(path, expected_config={"n_layers": 4})
    with pytest.raises(FileNotFoundError, match="not found"):
        load_lm(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="neither a TokenLM.save file"):
        load_lm(bad)


def test_tiny_size_is_under_a_million_parameters():
    n = TokenLM(vocab_size=400, seq_len=200, **SIZES["tiny"]).num_parameters()
    assert 500_000 <= n <= 1_000_000
