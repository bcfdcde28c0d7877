"""The world's fairness machinery (issue 18): the shortcut diagnostics, the fair embedder's
recording augmentation and the oracle's independent diversity metric."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from suite.metrics.eval_set import EvalMetrics
from suite.models.lm import TokenLM
from suite.music import attributes as A
from suite.music import tokens as T
from suite.music.corpus import build_corpus
from suite.policies.music import MusicOracle, MusicPolicy
from suite.sampling import sample
from suite.world_diagnostics import _verdict, sample_cfg_at


def _policy() -> MusicPolicy:
    torch.manual_seed(0)
    lm = TokenLM(T.VOCAB_SIZE, T.SEQ_LEN, d_model=32, n_layers=1, n_heads=2, d_ff=64, n_prefix=2)
    vectors = {"Rock song.": 1, "Jazz": 2, "Bad audio quality.": 3, "": 0}
    return MusicPolicy(lm, encode=lambda ps: torch.stack(
        [torch.randn(384, generator=torch.Generator().manual_seed(vectors[p])) * bool(p) for p in ps]))  # fmt: skip


def test_cfg_at_every_position_is_the_cfg_sampler_and_at_none_the_conditional_policy():
    p = _policy()
    cond, neg = p.encode_text(["Rock song.", "Jazz"]), p.encode_text(["Bad audio quality."])
    every = torch.ones(p.seq_len, dtype=torch.bool)
    ours = sample_cfg_at(p, cond, neg, 3.0, every, 0.99, seed=5)
    ref = sample(p, cond, neg_cond=neg, gamma=3.0, temperature=0.99, allowed=p.allowed_mask(),
                 generator=torch.Generator().manual_seed(5)).tokens  # fmt: skip
    assert torch.equal(ours, ref)
    none = sample_cfg_at(p, cond, neg, 3.0, ~every, 0.99, seed=5)
    ref1 = sample(p, cond, neg_cond=neg, gamma=1.0 + 1e-12, temperature=0.99,
                  allowed=p.allowed_mask(), generator=torch.Generator().manual_seed(5)).tokens  # fmt: skip
    assert (none == ref1).float().mean() > 0.99  # the same draws up to float rounding


def test_verdicts_read_their_limits():
    assert _verdict({"name": "a", "value": 0.2, "limit": "<= 0.25"})["verdict"] == "ok"
    assert _verdict({"name": "a", "value": 0.3, "limit": "<= 0.25"})["verdict"] == "FAIL"
    assert _verdict({"name": "a", "value": 0.3, "limit": "> 0.5 (x)"})["verdict"] == "FAIL"
    assert _verdict({"name": "a", "value": 0.3, "limit": ""})["verdict"] == "info"


def test_oracle_diversity_is_the_mean_musical_distance_of_a_prompts_generations():
    pieces = torch.as_tensor(build_corpus(seed=1, n=8, progress=False).tokens, dtype=torch.long)
    tokens = pieces.view(2, 4, 1, -1)  # [P, N, K, L]
    oracle = MusicOracle()
    judged = oracle.scores(tokens, ["Rock song.", "Jazz"])
    judged["pair_distance"] = oracle.pair_distances(tokens)
    metrics = EvalMetrics()
    metrics.update(["Rock song.", "Jazz"], oracle=judged)
    from suite.music import oracle as O

    manual = [sum(O.distance(g[i, 0].numpy(), g[j, 0].numpy()) for i in range(4) for j in range(i + 1, 4)) / 6
              for g in tokens]  # fmt: skip
    assert metrics.compute()["eval/oracle_diversity"] == pytest.approx(sum(manual) / 2)


def test_the_fair_embedder_sees_each_chunk_of_a_pair_under_its_own_recording(monkeypatch):
    from datamodules.audio import AudioDataModule

    pieces = torch.as_tensor(build_corpus(seed=1, n=64, progress=False).tokens, dtype=torch.long)
    seen = []
    dm = AudioDataModule(task="embedder", tokens=pieces, batch_size=16, recording_augment=True,
                         render=lambda t: (seen.append(T.step_flaws(t)[1].clone()),
                                           torch.zeros(t.shape[0], 96000))[1])  # fmt: skip
    dm.setup("fit")
    out = dm.on_after_batch_transfer({"tokens": pieces[:16], "index": torch.arange(16)}, 0)
    assert set(out) == {"audio_a", "audio_b", "label", "key", "mode"} and len(seen) == 2  # two renders
    assert (seen[0] != seen[1]).any()  # the pair's recordings were drawn independently
    for rec in seen:  # one quality per chunk, at every step, replacing the corpus's bursts
        assert (rec == rec[:, :1]).all() and ((rec >= 0) & (rec < len(A.RECORDINGS))).all()


def test_diagnose_refuses_a_config_whose_artifacts_are_not_built(tmp_path):
    from lightning_modules.diagnose import _built

    with pytest.raises(FileNotFoundError, match=r"base_lm artifact of this config is not built; run `python -m suite prepare"):
        _built("base_lm", {"seed": 123, "model": {}}, tmp_path)
    with pytest.raises(FileNotFoundError, match="embedder checkpoint not found"):
        _built("embedder", str(tmp_path / "nope.pt"), tmp_path)


def test_judge_rows_compute_appendix_b_and_spearman_against_scipy():
    from scipy.stats import spearmanr

    from suite.judge_diagnostics import SWEEP, judge_rows

    rng = np.random.default_rng(0)
    sweep = {}
    for i, (name, _, _) in enumerate(SWEEP):
        q = rng.random(12)
        sweep[name] = {"oracle_quality": 0.5 + 0.05 * i * (name.startswith("negative")),
                       "E_diversity": 0.5 - 0.01 * i, "oracle_diversity": 0.4 - 0.02 * i,
                       "gen_oracle_quality": q, "gen_preference": q + 0.1 * rng.random(12),
                       "gen_oracle_adherence": np.where(np.arange(12) == 0, np.nan, q),
                       "gen_mulan": -q}  # fmt: skip
    rows = {r["name"]: r for r in judge_rows(sweep)}
    assert rows["spearman_E_vs_oracle_diversity_cfg_sweep"]["value"] == pytest.approx(1.0)
    assert rows["spearman_E_vs_oracle_diversity_cfg_sweep"]["verdict"] == "ok"
    flat = lambda k: np.concatenate([v[k] for v in sweep.values()])  # noqa: E731
    ref = spearmanr(flat("gen_preference"), flat("gen_oracle_quality")).statistic
    assert rows["spearman_preference_vs_oracle_quality"]["value"] == pytest.approx(ref)
    assert rows["spearman_mulan_vs_oracle_adherence"]["value"] == pytest.approx(-1.0)  # NaNs left out
    assert rows["spearman_mulan_vs_oracle_adherence"]["verdict"] == "FAIL"
    assert rows["appendixB_negative_g3_quality_gain"]["value"] == pytest.approx(0.10)
    assert rows["appendixB_unconditional_g3_gain_share_of_negative"]["value"] == pytest.approx(0.0)
    assert rows["appendixB_negative_g3_E_diversity_drop"]["value"] == pytest.approx(0.02)


def test_the_cfg_sweep_measures_every_condition_on_tiny_models(tmp_path):
    from suite.judge_diagnostics import SWEEP, sweep_measurements
    from suite.models.preference import PreferenceModel
    from suite.models.scorer import MuLanScorer
    from suite.models.vit import AudioEmbedder
    from tests.tiny_models import save_tiny_models

    paths = save_tiny_models(tmp_path)
    policy = _policy()
    scorer = MuLanScorer.from_checkpoint(paths["scorer"])
    gen = torch.Generator().manual_seed(0)
    scorer._text_tower = SimpleNamespace(encode=lambda ps: torch.randn(len(ps), 384, generator=gen))
    out = sweep_measurements(policy, AudioEmbedder.from_checkpoint(paths["emb"]), scorer,
                             PreferenceModel.from_checkpoint(paths["pref"]), ["Rock song.", "Jazz"],
                             "Bad audio quality.", n=2, seed=0)  # fmt: skip
    assert list(out) == [name for name, _, _ in SWEEP]
    for v in out.values():
        assert all(np.isfinite(v[k]) for k in ("oracle_quality", "oracle_diversity", "E_diversity"))
        assert all(v[k].shape == (4,) for k in ("gen_mulan", "gen_preference", "gen_oracle_quality"))
        assert np.isfinite(v["gen_mulan"]).all() and np.isfinite(v["gen_preference"]).all()


def test_omega_row_equalises_the_spread_of_both_quality_terms():
    from suite.judge_diagnostics import SWEEP, judge_rows

    sweep = {}
    for i, (name, _, _) in enumerate(SWEEP):
        m = np.full(4, 0.1 * i)  # MuLan means 0, 0.1, ... ; preference means 0, 0.7, ...
        sweep[name] = {"oracle_quality": 0.5, "E_diversity": 0.5, "oracle_diversity": 0.4,
                       "gen_oracle_quality": m, "gen_preference": 7 * m + 3,
                       "gen_oracle_adherence": m, "gen_mulan": m}  # fmt: skip
    rows = {r["name"]: r for r in judge_rows(sweep)}
    omega = rows["omega_equal_spread_cfg_sweep"]["value"]
    assert omega == pytest.approx(7.0)
    mulan = np.array([omega * v["gen_mulan"].mean() for v in sweep.values()])
    pref = np.array([v["gen_preference"].mean() for v in sweep.values()])
    assert mulan.std() == pytest.approx(pref.std())


def test_seeds_aggregate_to_a_mean_and_a_t_interval_whose_verdict_needs_the_whole_interval():
    from scipy import stats

    from suite.world_diagnostics import aggregate_seeds

    def rows(share: float, gain: float, pos: int) -> list[dict]:
        return [{"name": "cfg_gain_share_single_position", "value": share, "limit": "<= 0.25",
                 "verdict": "ok", "detail": f"position {pos}"},
                {"name": "gain", "value": gain, "limit": "> 0.02", "verdict": "ok"},
                {"name": "two", "value": gain, "limit": "", "verdict": "info"}]  # fmt: skip

    out = {r["name"]: r for r in aggregate_seeds([rows(0.10, 0.2, 93), rows(0.12, 0.22, 13), rows(0.30, 0.21, 93)])}
    share = out["cfg_gain_share_single_position"]
    values = np.array([0.10, 0.12, 0.30])
    low, high = stats.t.interval(0.95, 2, loc=values.mean(), scale=stats.sem(values))
    assert share["value"] == pytest.approx(values.mean()) and share["n_seeds"] == 3
    assert (share["low"], share["high"]) == (pytest.approx(low), pytest.approx(high))
    assert share["verdict"] == "unsure"  # 0.25 lies inside [low, high]
    assert share["detail"] == "0.100 (position 93); 0.120 (position 13); 0.300 (position 93)"
    assert out["gain"]["verdict"] == "ok" and out["two"]["verdict"] == "info"
    fail = aggregate_seeds([rows(0.5, 0.0, 1), rows(0.51, 0.005, 1), rows(0.52, 0.01, 2)])
    assert [r["verdict"] for r in fail] == ["FAIL", "FAIL", "info"]
    one = aggregate_seeds([rows(0.3, 0.2, 1)])  # one seed: the value against the limit
    assert [r["verdict"] for r in one] == ["FAIL", "ok", "info"] and np.isnan(one[0]["low"])
    gap = {r["name"]: r for r in aggregate_seeds([rows(float("nan"), 0.2, 7), rows(0.1, 0.2, 93), rows(0.12, 0.2, 13)])}
    assert gap["cfg_gain_share_single_position"]["n_seeds"] == 2  # a NaN seed is left out, with its detail
    assert gap["cfg_gain_share_single_position"]["detail"] == "0.100 (position 93); 0.120 (position 13)"
    with pytest.raises(ValueError, match="row names repeat"):
        aggregate_seeds([rows(0.3, 0.2, 1) * 2])
