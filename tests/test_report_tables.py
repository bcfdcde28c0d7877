"""The report's tables and helpers on hand-made runs (no MLflow store): seeds and D.2
tables, intervals, markdown, seed groups, the music-world guard."""

from __future__ import annotations

import math

import numpy as np
import pytest


def _point(name, target, params, metrics):
    from suite.report_runs import RunPoint

    return RunPoint(run_id=name, name=name, params={"model._target_": target, **params},
                    metrics=metrics, tags={})  # fmt: skip


def test_seeds_table_gives_the_t_interval_over_seeds():
    from scipy import stats

    from suite.report_tables import mean_interval, seeds_table

    student = "lightning_modules.student.DistillStudent"
    q = [0.2, 0.5, 0.35]
    runs = [_point(f"beta15-s{i}", student, {"beta": "15", "seed": str(i)},
                   {"eval/quality": v, "eval/diversity": 0.4}) for i, v in enumerate(q)]  # fmt: skip
    runs.append(_point("beta0-s0", student, {"beta": "0", "seed": "0"}, {"eval/quality": 1.0}))
    runs.append(_point("beta15-N4", student, {"beta": "15", "seed": "0", "model.n_generations": "4"},
                       {"eval/quality": 9.0}))  # figure 10's N study: not a seed of beta 15
    n2 = _point("beta15-N2", student, {"beta": "15", "seed": "0", "model.n_generations": "2"},
                {"eval/quality": 7.0})  # fmt: skip
    n2.tags["sweep"] = "n_study"  # the N study's N = 2: the sweep's config, told by its tag
    runs.append(n2)
    table = seeds_table(runs)
    assert [row[0] for row in table.rows] == ["0", "15", "15 (N=2)", "15 (N=4)"]
    from suite.report_runs import student_label

    assert student_label(n2) == "beta=15, N=2 (seed 0)"
    assert student_label(runs[0]) == "beta=15 (beta15-s0)"
    row = dict(zip(table.header, table.rows[1]))
    ref = stats.t.interval(0.95, 2, loc=np.mean(q), scale=stats.sem(q))
    assert row["seeds"] == 3 and row["quality"] == pytest.approx(np.mean(q))
    assert (row["quality_low"], row["quality_high"]) == pytest.approx(ref)
    one = dict(zip(table.header, table.rows[0]))
    assert one["quality"] == 1.0 and math.isnan(one["quality_low"])  # one seed: no interval
    assert math.isnan(mean_interval([])[0])


def test_d2_table_correlates_diversity_measures_across_models():
    from scipy import stats

    from suite.report_tables import d2_table

    evaluator = "lightning_modules.merged_eval.MergedEvaluator"
    e = [0.1, 0.3, 0.2, 0.5, 0.4]
    o = [0.2, 0.25, 0.22, 0.6, 0.1]
    h = [3.0, 1.0, 2.0, 0.5, 0.7]
    v = [1.5, 3.5, 2.5, 5.5, 4.5]  # Vendi ranks the models like E's 1 - mean
    fronts = ["CFG(base,negative)", "CFG(base,negative)", "students", "students", "LERP(0,15)"]
    runs = [_point(f"m{i}", evaluator, {"front": f}, {"eval/diversity": a, "eval/oracle_diversity": b,
                                                      "eval/entropy": c, "eval/vendi": w})
            for i, (a, b, c, w, f) in enumerate(zip(e, o, h, v, fronts))]  # fmt: skip
    rows = {(r[0], r[1], r[2]): r for r in d2_table(runs).rows}
    row = rows[("all models", "E diversity", "oracle musical diversity")]
    assert row[3] == 5 and row[4] == pytest.approx(stats.spearmanr(e, o).statistic)
    assert math.isnan(row[5]) and math.isnan(row[6])  # 5 models: too few for an interval
    assert row[7] == pytest.approx(stats.pearsonr(e, o).statistic)
    assert rows[("all models", "E diversity", "entropy per token")][4] == pytest.approx(
        stats.spearmanr(e, h).statistic)
    assert rows[("all models", "E diversity", "Vendi (E)")][4] == pytest.approx(1.0)
    assert rows[("all models", "oracle musical diversity", "Vendi (E)")][4] == pytest.approx(
        stats.spearmanr(o, v).statistic)
    # The world issue's scope: the CFG sweep and the students, not the LERP front.
    row = rows[("CFG sweep + students", "E diversity", "oracle musical diversity")]
    assert row[3] == 4 and row[4] == pytest.approx(1.0)


def test_d2_counts_a_model_evaluated_for_two_fronts_once():
    """LERP at lambda 0 is its quality endpoint; the base model at T 0.99 is CFG at gamma 1."""
    from suite.report_runs import distinct_models, model_identity

    evaluator = "lightning_modules.merged_eval.MergedEvaluator"
    lerp0 = _point("lerp0", evaluator, {"front": "LERP(0,15)", "lambda": "0.0", "gamma": "1.0",
                                        "temperature": "0.99", "method": "single",
                                        "sources": "beta0-seed0,beta15-seed0"}, {})  # fmt: skip
    student = _point("s0", evaluator, {"front": "students", "lambda": "None", "gamma": "1.0",
                                       "temperature": "0.99", "method": "single",
                                       "sources": "beta0-seed0"}, {})  # fmt: skip
    assert model_identity(lerp0)[0] == ("beta0-seed0",)
    base_cfg = _point("cfg1", evaluator, {"front": "CFG(base,negative)", "gamma": "1.0",
                                          "temperature": "0.99", "sources": "base",
                                          "negative_prompt": "Bad audio quality."}, {})  # fmt: skip
    base_unc = _point("unc1", evaluator, {"front": "CFG(base,unconditional)", "gamma": "1.0",
                                          "temperature": "0.99", "sources": "base",
                                          "negative_prompt": ""}, {})  # fmt: skip
    cfg3 = _point("cfg3", evaluator, {"front": "CFG(base,negative)", "gamma": "3.0",
                                      "temperature": "0.99", "sources": "base",
                                      "negative_prompt": "Bad audio quality."}, {})  # fmt: skip
    assert [r.name for r in distinct_models([lerp0, base_cfg, student, base_unc, cfg3])] == [
        "s0", "unc1", "cfg3"]  # the newest of each identity, in first-seen order of identity


def test_d2_scopes_keep_a_student_whose_lerp_twin_came_later():
    """The students' scope must not lose beta 0 because LERP(0,15) at lambda 0, the same
    model, was evaluated after it (the reproduction runs the exports before the LERPs)."""
    from suite.report_tables import d2_table

    evaluator = "lightning_modules.merged_eval.MergedEvaluator"
    common = {"gamma": "1.0", "temperature": "0.99", "method": "single"}
    runs = [_point(f"cfg{g}", evaluator, {"front": "CFG(base,negative)", "gamma": str(g),
                                          "temperature": "0.99", "sources": "base"},
                   {"eval/diversity": d, "eval/oracle_diversity": d / 2})
            for g, d in ((1.0, 0.74), (2.0, 0.66), (3.0, 0.61))]  # fmt: skip
    runs.append(_point("s0", evaluator, {"front": "students", "lambda": "None", **common,
                                         "sources": "beta0-seed0"},
                       {"eval/diversity": 0.64, "eval/oracle_diversity": 0.32}))  # fmt: skip
    runs.append(_point("lerp0", evaluator, {"front": "LERP(0,15)", "lambda": "0.0", **common,
                                            "sources": "beta0-seed0,beta15-seed0"},
                       {"eval/diversity": 0.64, "eval/oracle_diversity": 0.32}))  # fmt: skip
    rows = {(r[0], r[1], r[2]): r for r in d2_table(runs).rows}
    assert rows[("CFG sweep + students", "E diversity", "oracle musical diversity")][3] == 4
    assert rows[("all models", "E diversity", "oracle musical diversity")][3] == 4


def test_markdown_puts_each_interval_beside_its_value():
    from suite.report_tables import Table

    table = Table("t", ["model", "quality", "quality_low", "quality_high", "n", "difference", "low",
                        "high", "verdict"],
                  [["a", 0.9031, 0.8741, 0.9333, 3, -0.1, -0.2, 0.01, "unsure"],
                   ["b", 0.5, math.nan, math.nan, 1, 0.2, None, None, ""]])  # fmt: skip
    lines = table.markdown().splitlines()
    assert lines[2] == "| model | quality | n | difference | verdict |"
    assert lines[4] == "| a | 0.9031 [0.8741, 0.9333] | 3 | -0.1 [-0.2, 0.01] | unsure |"
    assert lines[5] == "| b | 0.5 | 1 | 0.2 |  |"  # no interval: the value alone
    assert table.csv().splitlines()[0].count(",") == 8  # the CSV keeps every column


def test_spearman_interval_matches_scipys_paired_bootstrap():
    """The D.2 interval against scipy.stats.bootstrap (paired, percentile) on 40 models."""
    from scipy import stats

    from suite.metrics.winrate import _RNG_KWARG
    from suite.report_tables import spearman_interval

    rng = np.random.default_rng(3)
    x = rng.normal(size=40)
    y = 0.6 * x + 0.8 * rng.normal(size=40)
    low, high = spearman_interval(x, y, resamples=4000)
    ref = stats.bootstrap((x, y), lambda a, b: stats.spearmanr(a, b).statistic, paired=True,
                          vectorized=False, method="percentile", n_resamples=4000,
                          **{_RNG_KWARG: np.random.default_rng(0)}).confidence_interval  # fmt: skip
    assert low < stats.spearmanr(x, y).statistic < high
    assert (low, high) == pytest.approx((ref.low, ref.high), abs=0.04)
    assert all(math.isnan(v) for v in spearman_interval([1, 1, 1], [1, 2, 3]))  # rho undefined


def test_seed_groups_draw_the_mean_trajectory_and_the_prompt_intervals():
    from suite.report_figures import _errors, mean_trajectory, seed_groups
    from suite.report_runs import Trajectory

    a = Trajectory("beta=15 (s0)", [0, 100, 300], [1.0, 2.0, 3.0], [0.1, 0.2, 0.3], "beta=15")
    b = Trajectory("beta=15 (s1)", [0, 300], [3.0, 5.0], [0.3, 0.5], "beta=15")
    c = Trajectory("beta=0 (s0)", [0, 300], [1.0, 1.0], [0.1, 0.1], "beta=0")
    groups = seed_groups([a, c, b])
    assert list(groups) == ["beta=15", "beta=0"] and groups["beta=15"] == [a, b]
    mean = mean_trajectory(groups["beta=15"])
    assert mean.steps == [0, 300]  # only the steps both seeds evaluated
    assert mean.quality == pytest.approx([2.0, 4.0]) and mean.diversity == pytest.approx([0.2, 0.4])
    evaluator = "lightning_modules.merged_eval.MergedEvaluator"
    runs = [_point("m0", evaluator, {}, {"eval/quality": 1.0, "eval/quality_ci_low": 0.8,
                                         "eval/quality_ci_high": 1.5}),
            _point("m1", evaluator, {}, {"eval/quality": 2.0})]  # fmt: skip
    assert _errors(runs, "eval/quality") == pytest.approx(np.array([[0.2, 0.0], [0.5, 0.0]]))
    assert _errors(runs[1:], "eval/quality") is None  # no interval logged: no bars


def test_a_report_never_mixes_music_worlds():
    from suite.report_runs import WORLD_TAG, RunPoint, one_world

    def run(name, version):
        tags = {} if version is None else {WORLD_TAG: version}
        return RunPoint(run_id=name, name=name, params={}, metrics={}, tags=tags)

    mixed = [run("old", None), run("w2", "2"), run("w3a", "3"), run("w3b", "3"), run("w10", "10")]
    kept, note = one_world(mixed)
    assert [r.name for r in kept] == ["w10"] and "4 run(s)" in note and "version 10" in note
    kept, note = one_world(mixed[:4])
    assert [r.name for r in kept] == ["w3a", "w3b"] and "2 run(s)" in note
    untagged = [run("a", None), run("b", None)]  # e.g. MusicGen runs: all kept, no note
    assert one_world(untagged) == (untagged, "")


def test_music_world_runs_are_tagged_with_the_world_version():
    from omegaconf import OmegaConf

    from suite.music.corpus import WORLD_VERSION
    from suite.run import run_tags

    music = OmegaConf.create({"stage": "fit", "name": "beta15", "artifacts": {"corpus": {"seed": 0}}})
    other = OmegaConf.create({"stage": "fit", "name": "musicgen"})
    assert run_tags(music)["music_world_version"] == WORLD_VERSION
    assert "music_world_version" not in run_tags(other)
