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


def test_front_is_interpolated_between_its_neighbours():
    pts = [(0.6, Estimate(3.0, 0.2)), (0.2, Estimate(5.0, 0.1)), (0.4, Estimate(4.0, 0.1))]
    at = front_at(pts, 0.5)
    assert at.mean == pytest.approx(3.5) and at.se == pytest.approx(0.15)
    assert front_at(pts, 0.7) is None and front_at(pts, 0.1) is None


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
    reach = by[("2", "beta 0 - CFG gamma 3 (reaches: within 10 % of CFG's gain)", "oracle_quality")]
    assert reach[3] == pytest.approx(0.01) and reach[6] == "> -0.02" and reach[7] == "holds"
    # Claim 4: LERP at beta 5's diversity (0.66: 0.91 -> 0.89 over 0.61 -> 0.68) minus 0.80.
    lerp = by[("4", "LERP(0,15) at beta 5's diversity - beta 5", "oracle_quality")]
    assert lerp[3] == pytest.approx(0.91 + (0.66 - 0.61) / 0.07 * (0.89 - 0.91) - 0.80)
    assert lerp[7] == "holds"
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


def test_missing_runs_leave_their_rows_out():
    runs = [r for r in _world([0.85, 0.86, 0.84]) if not r.name.startswith("lerp")]
    rows = claims_table(runs).rows
    assert not [r for r in rows if r[0] == "5"] and [r for r in rows if r[0] == "1"]
    assert claims_table([]).rows == []
