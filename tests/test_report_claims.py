"""The claims table: differences with intervals and verdicts read off the interval alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from suite.report_claims import (
    Estimate,
    Z,
    claims_table,
    front_at,
    run_estimate,
    seeds_estimate,
    verdict,
)
from suite.report_runs import RunPoint

EVALUATOR = "lightning_modules.merged_eval.MergedEvaluator"


def _run(name: str, params: dict, metrics: dict, half: float = 0.01) -> RunPoint:
    """An evaluator run whose every metric has a symmetric interval of half-width `half`."""
    full = dict(metrics)
    for key, value in metrics.items():
        full[f"{key}_ci_low"], full[f"{key}_ci_high"] = value - half, value + half
    return RunPoint(name, name, {"model._target_": EVALUATOR, **params}, full, {})


def test_verdicts_read_the_interval_alone():
    assert verdict(0.01, 0.2, ">", 0) == "holds"
    assert verdict(-0.2, -0.01, ">", 0) == "does not hold"
    assert verdict(-0.01, 0.2, ">", 0) == "unsure"
    assert verdict(-0.2, -0.01, "<", 0) == "holds" and verdict(0.1, 0.2, "<", 0) == "does not hold"
    assert verdict(-0.03, 0.01, ">", -0.05) == "holds"  # an equivalence margin
    assert verdict(-0.01, 0.02, "within", 0.05) == "holds"
    assert verdict(0.06, 0.09, "within", 0.05) == "does not hold"
    assert verdict(0.01, 0.09, "within", 0.05) == "unsure"
    assert verdict(math.nan, 0.2, ">", 0) == "no interval"


def test_estimates_keep_the_runs_own_intervals():
    run = _run("m", {}, {"eval/quality": 1.0}, half=0.2)
    est = run_estimate(run, "eval/quality")
    assert est.mean == 1.0 and est.se * Z == pytest.approx(0.2)
    assert run_estimate(run, "eval/diversity") is None
    seeds = [_run(f"s{i}", {}, {"eval/quality": v}) for i, v in enumerate([0.2, 0.5, 0.35])]
    est = seeds_estimate(seeds, "eval/quality")
    low, high = stats.t.interval(0.95, 2, loc=0.35, scale=stats.sem([0.2, 0.5, 0.35]))
    assert est.mean == pytest.approx(0.35) and est.se * Z == pytest.approx(high - 0.35)
    assert math.isnan(seeds_estimate(seeds[:1], "eval/quality").se)  # one seed: no interval
    diff = Estimate(1.0, 0.3).minus(Estimate(0.4, 0.4))
    assert diff.mean == pytest.approx(0.6) and diff.se == pytest.approx(0.5)


def _e(mean: float, se: float = 0.0) -> Estimate:
    return Estimate(mean, se)


def test_front_is_interpolated_along_its_order_with_the_delta_method():
    pts = [(_e(0.2), _e(5.0, 0.1)), (_e(0.4), _e(4.0, 0.1)), (_e(0.6), _e(3.0, 0.2))]  # lambda order
    at = front_at(pts, _e(0.5))
    assert at.mean == pytest.approx(3.5) and at.se == pytest.approx(0.15)
    assert front_at(pts, _e(0.7)) is None and front_at(pts, _e(0.1)) is None
    # The compared model's diversity is uncertain: slope -5 per unit diversity adds 5 * se_d.
    at = front_at(pts, _e(0.5, 0.02))
    assert at.se == pytest.approx(math.hypot(0.15, 5 * 0.02))
    # A front that folds back (diversity 0.2, 0.5, 0.3, 0.6 along lambda): the segments that
    # reach 0.4 are (0.2-0.5), (0.5-0.3) and (0.3-0.6); the best of them counts, not a chord
    # between points that are not neighbours along the front.
    fold = [(_e(0.2), _e(5.0)), (_e(0.5), _e(4.0)), (_e(0.3), _e(1.0)), (_e(0.6), _e(2.0))]
    segments = [5.0 + (0.4 - 0.2) / 0.3 * (4.0 - 5.0), 4.0 + (0.4 - 0.5) / -0.2 * (1.0 - 4.0),
                1.0 + (0.4 - 0.3) / 0.3 * (2.0 - 1.0)]  # fmt: skip
    assert front_at(fold, _e(0.4)).mean == pytest.approx(max(segments))


def _world(student_q15: list[float]) -> list[RunPoint]:
    """A base model, CFG at gamma 3 both ways, students 0 / 5 / 15 at 3 seeds, LERP(0,15)."""
    runs = [
        _run("base", {"front": "CFG(base,negative)", "gamma": "1.0"},
             {"eval/oracle_quality": 0.70, "eval/diversity": 0.75, "eval/oracle_diversity": 0.35}),
        _run("cfg3", {"front": "CFG(base,negative)", "gamma": "3.0"},
             {"eval/oracle_quality": 0.90, "eval/diversity": 0.60, "eval/oracle_diversity": 0.30}),
        _run("unc3", {"front": "CFG(base,unconditional)", "gamma": "3.0"},
             {"eval/oracle_quality": 0.80, "eval/diversity": 0.62, "eval/oracle_diversity": 0.31}),
    ]  # fmt: skip
    students = {"0": ([0.91, 0.90, 0.92], [0.61, 0.60, 0.62]), "5": ([0.80, 0.81, 0.79], [0.66, 0.67, 0.65]),
                "15": (student_q15, [0.75, 0.77, 0.76])}  # fmt: skip
    for beta, (qs, ds) in students.items():
        for seed, (q, d) in enumerate(zip(qs, ds)):
            runs.append(_run(f"s{beta}-{seed}", {"front": "students", "beta": beta,
                                                 "sources": f"beta{beta}-seed{seed}"},
                             {"eval/oracle_quality": q, "eval/diversity": d,
                              "eval/oracle_diversity": 0.3 + d / 10}))  # fmt: skip
    for lam, (q, d) in {0.0: (0.91, 0.61), 0.5: (0.89, 0.68), 1.0: (0.85, 0.76)}.items():
        runs.append(_run(f"lerp{lam}", {"front": "LERP(0,15)", "lambda": str(lam)},
                         {"eval/oracle_quality": q, "eval/diversity": d}))  # fmt: skip
    return runs


def test_claims_table_rows_and_verdicts():
    rows = claims_table(_world([0.85, 0.86, 0.84])).rows
    by = {(r[0], r[1], r[2]): r for r in rows}
    row = by[("1", "CFG gamma 3 (negative) - base", "oracle_quality")]
    se = 0.01 / Z
    assert row[3] == pytest.approx(0.2)
    assert (row[4], row[5]) == pytest.approx(
        (0.2 - Z * math.hypot(se, se), 0.2 + Z * math.hypot(se, se))
    )
    assert row[7] == "holds"
    assert by[("1", "CFG gamma 3 (negative) - base", "diversity")][7] == "holds"  # lower
    # Claim 2: beta 0 at 0.91 +- a seed interval against the teacher's 0.90, margin 0.02.
    reach = by[("2", "beta 0 - CFG gamma 3 (not below by 10 % of CFG's gain)", "oracle_quality")]
    assert reach[3] == pytest.approx(0.01) and reach[6] == "> -0.02" and reach[7] == "holds"
    # Claim 4: LERP at beta 5's diversity (0.66: 0.91 -> 0.89 over 0.61 -> 0.68) minus 0.80.
    lerp = by[("4", "LERP(0,15) at beta 5's diversity - beta 5", "oracle_quality")]
    assert lerp[3] == pytest.approx(0.91 + (0.66 - 0.61) / 0.07 * (0.89 - 0.91) - 0.80)
    assert lerp[7] == "holds"
    # LERP(0,15) is more diverse than CFG everywhere (0.61 > 0.60): its lambda-0 end against
    # CFG; at lambda 0.5 (0.68, 0.89) against the CFG front between gamma 1 and gamma 3.
    end = by[("4", "LERP(0,15)'s least diverse point (more diverse than CFG gamma 3) - CFG gamma 3",
              "oracle_quality")]  # fmt: skip
    assert end[3] == pytest.approx(0.01)
    mid = by[("4", "LERP(0,15) at lambda 0.5 - the CFG front at its diversity", "oracle_quality")]
    assert mid[3] == pytest.approx(0.89 - (0.70 + (0.68 - 0.75) / (0.60 - 0.75) * 0.20))
    assert mid[7] == "holds"
    # Claim 5: quality above the diagonal at lambda 0.5: 0.89 - (0.91 + 0.85) / 2 = 0.01.
    above = by[("5", "LERP(0,15) at lambda 0.5 - the diagonal", "oracle_quality")]
    assert above[3] == pytest.approx(0.01)
    # D.2 over the CFG sweep and the students (not the LERP runs, which have no oracle row).
    d2 = [r for r in rows if r[0] == "D.2"]
    models = [r for r in _world([0.85, 0.86, 0.84]) if "eval/oracle_diversity" in r.metrics]
    rho = stats.spearmanr([r.metrics["eval/diversity"] for r in models],
                          [r.metrics["eval/oracle_diversity"] for r in models]).statistic  # fmt: skip
    assert [r[6] for r in d2] == ["> 0", "> 0.7"] and d2[0][3] == pytest.approx(rho)
    assert d2[0][4] <= rho <= d2[0][5] and "over 12 models" in d2[0][1]


def test_a_noisy_student_is_unsure_not_holds():
    """Beta 15's seeds straddle the base model's quality: the verdict must not say holds."""
    rows = claims_table(_world([0.95, 0.50, 0.72])).rows
    (row,) = [r for r in rows if r[1] == "beta 15 - base" and r[2] == "oracle_quality"]
    assert row[4] < 0 < row[5] and row[7] == "unsure"
    assert np.isfinite(row[3])


def test_the_newest_repeat_counts_and_a_worse_model_does_not_hold():
    runs = _world([0.85, 0.86, 0.84])
    # CFG gamma 3 rerun later and now worse than the base model: the newest run decides.
    runs.append(_run("cfg3-again", {"front": "CFG(base,negative)", "gamma": "3.0"},
                     {"eval/oracle_quality": 0.60, "eval/diversity": 0.60,
                      "eval/oracle_diversity": 0.30}))  # fmt: skip
    rows = claims_table(runs).rows
    (row,) = [r for r in rows if r[0] == "1" and r[1] == "CFG gamma 3 (negative) - base"
              and r[2] == "oracle_quality"]  # fmt: skip
    assert row[3] == pytest.approx(-0.10) and row[7] == "does not hold"
    # A student export evaluated twice is one seed, not two.
    runs.append(_run("s15-0-again", {"front": "students", "beta": "15.0", "sources": "beta15-seed0"},
                     {"eval/oracle_quality": 0.85, "eval/diversity": 0.75}))  # fmt: skip
    rows = {(r[0], r[1], r[2]): r for r in claims_table(runs).rows}
    assert rows[("3", "beta 15 - base", "oracle_quality")][3] == pytest.approx(0.85 - 0.70)


def test_spearman_verdicts_need_enough_models():
    runs = [r for r in _world([0.85, 0.86, 0.84]) if r.params.get("front") != "students"]
    rows = [r for r in claims_table(runs).rows if r[0] == "D.2"]
    assert rows and all(r[7] == "no interval" for r in rows)  # 3 CFG models: never "holds"


def test_the_figure_draws_seed_groups_and_exports(tmp_path):
    import matplotlib.image as mpimg

    from suite.report_figures import plot_quality_diversity
    from suite.report_runs import Trajectory, student_exports

    runs = _world([0.85, 0.86, 0.84])
    trajs = [Trajectory(f"beta=15 (s{i})", [0, 100, 300], [0.1, 0.2 + i, 0.3], [0.5, 0.6, 0.7 + i / 10],
                        "beta=15") for i in range(3)]  # fmt: skip
    trajs.append(Trajectory("beta=0 (s0)", [0, 50], [0.1, 0.2], [0.5, 0.4], "beta=0"))
    trajs.append(Trajectory("beta=0 (s1)", [0, 60], [0.1, 0.3], [0.5, 0.45], "beta=0"))
    path = tmp_path / "qd.png"
    plot_quality_diversity(path, trajs, [], "eval/oracle_quality", "eval/diversity",
                           student_exports(runs))  # fmt: skip
    assert mpimg.imread(path).shape[0] > 100


def test_missing_runs_leave_their_rows_out():
    runs = [r for r in _world([0.85, 0.86, 0.84]) if not r.name.startswith("lerp")]
    rows = claims_table(runs).rows
    assert not [r for r in rows if r[0] == "5"] and [r for r in rows if r[0] == "1"]
    assert claims_table([]).rows == []


def test_the_n_study_exports_are_their_own_groups_not_seeds():
    """Figure 10's students (student_n set) stay out of beta 15's seeds, the claims and D.2,
    and get their own table with each run's interval over prompts."""
    from suite.report_runs import student_exports
    from suite.report_tables import d2_table, exports_table, n_study_table

    world = _world([0.85, 0.86, 0.84])
    n_runs = [_run(f"n{n}", {"front": "students", "beta": "15", "student_n": str(n),
                             "sources": f"beta15-N{n}-seed0"},
                   {"eval/oracle_quality": 0.2, "eval/diversity": 0.99 - n / 100,
                    "eval/oracle_diversity": 0.01, "eval/quality": -n})
              for n in (8, 2, 4)]  # fmt: skip
    runs = world + n_runs
    groups = student_exports(runs)
    assert list(groups) == ["0", "5", "15", "15 (N=2)", "15 (N=4)", "15 (N=8)"]
    assert len(groups["15"]) == 3 and [len(groups[f"15 (N={n})"]) for n in (2, 4, 8)] == [1, 1, 1]
    # The claims and D.2 read the same as without the N study (its outliers would move them).
    assert claims_table(runs).rows == claims_table(world).rows
    assert [r[0] for r in exports_table(runs).rows] == ["0", "5", "15"]
    assert d2_table(runs).rows == d2_table(world).rows  # N = 2 is beta 15 seed 0 renamed
    table = n_study_table(runs)
    assert [r[0] for r in table.rows] == ["2", "4", "8"]
    col = table.header.index("diversity")
    row2 = table.rows[0]
    assert row2[col: col + 3] == pytest.approx([0.97, 0.96, 0.98])
    assert n_study_table(world).rows == []


def test_claim_7_reads_model_b_of_the_side_by_side_runs():
    """The sbs runs log model A's (CFG's) win rate; claim 7 is about B (beta 0, LERP)."""
    sbs = [_run("sbs-pair=cfg_beta0", {"front": "side-by-side", "pair": "cfg_beta0"},
                {"eval/winrate_quality": 0.48}, half=0.03),
           _run("sbs-pair=cfg_lerp", {"front": "side-by-side", "pair": "cfg_lerp"},
                {"eval/winrate_quality": 0.58, "eval/winrate_diversity": 0.35}, half=0.05)]  # fmt: skip
    rows = [r for r in claims_table(_world([0.85, 0.86, 0.84]) + sbs).rows if r[0] == "7"]
    by = {(r[1].split(" ")[0], r[2]): r for r in rows}
    tie = by[("beta", "winrate_quality")]  # 1 - 0.48 - 0.5 = +0.02, +-0.03: inside +-0.1
    assert tie[3] == pytest.approx(0.02) and tie[4:6] == pytest.approx([-0.01, 0.05])
    assert tie[6] == "within +-0.1" and tie[7] == "holds"
    lerp_q = by[("LERP(0,15)", "winrate_quality")]  # -0.08 +- 0.05 straddles -0.1
    assert lerp_q[3] == pytest.approx(-0.08) and lerp_q[7] == "unsure"
    lerp_d = by[("LERP(0,15)", "winrate_diversity")]  # LERP wins 0.65 +- 0.05
    assert lerp_d[3] == pytest.approx(0.15) and lerp_d[7] == "holds"
    assert not [r for r in claims_table(_world([0.85, 0.86, 0.84])).rows if r[0] == "7"]
