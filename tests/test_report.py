"""Tests of the Pareto report (paper figures 1, 3, 4, tables 1-3) on synthetic MLflow stores."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from suite.report import build_report, hypervolume_2d, main, pareto_mask

REPO = Path(__file__).resolve().parent.parent
STUDENT = "lightning_modules.student.DistillStudent"
EVALUATOR = "lightning_modules.merged_eval.MergedEvaluator"


# ------------------------------------------------------------------------ hypervolume
def _grid_hypervolume(points: np.ndarray, ref: np.ndarray, hi: np.ndarray, n: int) -> float:
    """Brute force: the share of grid-cell centres over [ref, hi] that some point dominates."""
    xs = ref[0] + (np.arange(n) + 0.5) * (hi[0] - ref[0]) / n
    ys = ref[1] + (np.arange(n) + 0.5) * (hi[1] - ref[1]) / n
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    covered = np.zeros_like(gx, dtype=bool)
    for x, y in points:
        covered |= (gx <= x) & (gy <= y)
    return covered.mean() * (hi[0] - ref[0]) * (hi[1] - ref[1])


def test_hypervolume_staircase_by_hand():
    # Rectangles [0,3]x[0,1], [0,2]x[0,2], [0,1]x[0,3]: union area 3 + 2 + 1.
    assert hypervolume_2d([[1, 3], [2, 2], [3, 1]], (0, 0)) == pytest.approx(6.0)
    # A dominated point and points not dominating the reference add nothing.
    assert hypervolume_2d(
        [[1, 3], [2, 2], [3, 1], [1, 1], [-1, 5], [5, 0]], (0, 0)
    ) == pytest.approx(6.0)
    assert hypervolume_2d([], (0, 0)) == 0.0
    with pytest.raises(ValueError, match="reference"):
        hypervolume_2d([[1, 1]], (0, float("nan")))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hypervolume_matches_a_brute_force_grid_count(seed):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-1, 2, size=(12, 2))
    ref = np.array([-0.5, 0.0])
    hi = pts.max(axis=0)
    got = hypervolume_2d(pts, ref)
    want = _grid_hypervolume(pts, ref, hi, 1500)
    assert got == pytest.approx(want, abs=4 * (hi - ref).sum() / 1500)
    # Only the non-dominated points matter.
    assert hypervolume_2d(pts[pareto_mask(pts)], ref) == pytest.approx(got)


def test_pareto_mask():
    pts = np.array([[1, 3], [2, 2], [1, 1], [3, 1], [2, 2]])
    assert pareto_mask(pts).tolist() == [True, True, False, True, True]


# ------------------------------------------------------------------------ synthetic store
LERP = {0.0: (0.30, 4.0), 0.5: (0.45, 3.8), 1.0: (0.60, 3.0)}  # lambda: (diversity, quality)
CFG = {1.0: (0.50, 2.0), 3.0: (0.32, 3.5), 5.0: (0.28, 3.2)}  # gamma: (diversity, quality)
# The students' exports on the test prompts: beta: [(diversity, quality) per training seed]
EXPORTS = {"0": [(0.30, 4.1), (0.34, 3.9), (0.32, 4.3)], "15": [(0.55, 3.0), (0.61, 2.6)]}


def _store(tmp_path: Path, *, statuses: str = "FINISHED") -> str:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("cfg-distill", artifact_location=str(tmp_path / "art"))

    def run(name, params, metrics, tags=None, history=None):
        r = client.create_run(exp, run_name=name, tags=tags or {})
        for k, v in params.items():
            client.log_param(r.info.run_id, k, v)
        for k, v in metrics.items():
            client.log_metric(r.info.run_id, k, v)
        for k, values in (history or {}).items():
            for step, v in values:
                client.log_metric(r.info.run_id, k, v, step=step)
        client.set_terminated(r.info.run_id, statuses)

    for beta, hist in ((0, [(100, 0.40, 2.5), (200, 0.33, 3.9)]),
                       (15, [(100, 0.45, 2.4), (200, 0.58, 2.9)])):  # fmt: skip
        run(f"beta{beta}-seed0", {"model._target_": STUDENT, "diversity.beta": beta}, {},
            {"stage": "fit"},
            {"eval/quality": [(s, q) for s, _, q in hist],
             "eval/diversity": [(s, d) for s, d, _ in hist]})  # fmt: skip
    for i, (lam, (d, q)) in enumerate(LERP.items()):
        run(f"lerp-lambda={lam}",
            {"model._target_": EVALUATOR, "front": "LERP(0,15)", "lambda": lam, "gamma": 1.0,
             "temperature": 0.99, "baseline": "cfg3"},
            {"eval/quality": q, "eval/diversity": d, "eval/vendi": 2.0 + lam,
             "eval/one_minus_mean": 0.3 + lam / 4, "eval/n_vendi_generations": 8,
             "eval/winrate_quality": 0.4 + 0.1 * i, "eval/winrate_quality_wins": 10 + i,
             "eval/winrate_quality_losses": 12 - i, "eval/winrate_quality_ties": 3,
             "eval/winrate_quality_p_ttest": 0.01 * (i + 1), "eval/winrate_quality_p_wilcoxon": 0.02,
             "eval/winrate_quality_p_sign": 0.03,
             "eval/winrate_diversity": 0.6, "eval/winrate_diversity_wins": 7,
             "eval/winrate_diversity_losses": 2, "eval/winrate_diversity_ties": 1},
            {"sweep": "lambda"})  # fmt: skip
    for gamma, (d, q) in CFG.items():
        run(f"cfg-gamma={gamma},prompting=negative",
            {"model._target_": EVALUATOR, "front": "CFG(base,negative)", "lambda": "None",
             "gamma": gamma, "temperature": 0.99},
            {"eval/quality": q, "eval/diversity": d}, {"sweep": "gamma"})  # fmt: skip
    for beta, points in EXPORTS.items():
        for seed, (d, q) in enumerate(points):
            run(f"student-student_beta={beta},student_seed={seed}",
                {"model._target_": EVALUATOR, "front": "students", "beta": beta,
                 "sources": f"beta{beta}-seed{seed}", "lambda": "None", "gamma": 1.0},
                {"eval/quality": q, "eval/diversity": d}, {"sweep": "exports"})  # fmt: skip
    run("uniform-seed=0", {"model._target_": EVALUATOR, "front": "Uniform(0,5,10,15)",
                           "lambda": "None", "gamma": 1.0},
        {"eval/quality": 3.9, "eval/diversity": 0.44, "eval/vendi": 2.2}, {"sweep": "uniform"})  # fmt: skip
    return uri


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One synthetic store for the module (creating an MLflow database takes seconds); the
    report runs that tests add to it are ignored by later reports."""
    return _store(tmp_path_factory.mktemp("report_store"))


def _read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_report_writes_figures_and_tables_with_the_right_numbers(store, tmp_path):
    import matplotlib.image as mpimg
    import mlflow

    uri = store
    out = tmp_path / "figures"
    written = build_report(uri, "cfg-distill", out, reference=(0.2, 1.0))
    assert {"quality_diversity.png", "lambda.png", "report.md", "table1_vendi.csv",
            "table2_winrate_quality.md", "table3_winrate_diversity.csv",
            "hypervolume.csv"} <= set(written)  # fmt: skip
    for png in ("quality_diversity.png", "lambda.png"):
        image = mpimg.imread(out / png)
        assert image.ndim == 3 and image.shape[0] > 100
    # Table 1: most diverse first, every evaluator with a Vendi score.
    vendi = _read_csv(out / "table1_vendi.csv")
    assert [r["model"] for r in vendi] == ["lerp-lambda=1.0", "lerp-lambda=0.5",
                                           "uniform-seed=0", "lerp-lambda=0.0"]  # fmt: skip
    assert float(vendi[0]["vendi"]) == pytest.approx(3.0)
    assert float(vendi[0]["one_minus_mean"]) == pytest.approx(0.55)
    # Table 2: the logged counts and p-values, per run against its baseline.
    wins = {r["model_a"]: r for r in _read_csv(out / "table2_winrate_quality.csv")}
    assert set(wins) == {f"lerp-lambda={lam}" for lam in LERP}
    row = wins["lerp-lambda=0.5"]
    assert (row["model_b"], row["wins_a"], row["wins_b"], row["ties"]) == ("cfg3", "11", "11", "3")
    assert float(row["win_rate_a"]) == pytest.approx(0.5)
    assert float(row["p_ttest"]) == pytest.approx(0.02)
    assert (
        "| lerp-lambda=0.5 | cfg3 | 11 | 11 | 3 |"
        in (out / "table2_winrate_quality.md").read_text()
    )
    # Hypervolumes against the common reference, recomputed independently by hand.
    hv = {r["front"]: r for r in _read_csv(out / "hypervolume.csv")}
    ref = np.array([0.2, 1.0])

    def staircase(points):  # union of rectangles, by a brute-force grid
        pts = np.array(points)
        return _grid_hypervolume(pts, ref, pts.max(axis=0), 1000)

    for name, pts in (
        ("LERP(0,15)", list(LERP.values())),
        ("CFG(base,negative)", list(CFG.values())),
    ):
        assert float(hv[name]["hypervolume"]) == pytest.approx(staircase(pts), abs=5e-3)
    assert float(hv["Uniform(0,5,10,15)"]["hypervolume"]) == pytest.approx((0.44 - 0.2) * 2.9)
    assert float(hv["fine-tunes (final, validation prompts)"]["hypervolume"]) == pytest.approx(
        staircase([(0.33, 3.9), (0.58, 2.9)]), abs=5e-3
    )
    # The students on the test prompts: each seed's export, mean and t-interval over seeds;
    # a point of the plane (their seed means), not a front.
    means = [tuple(np.mean(points, axis=0)) for points in EXPORTS.values()]
    assert float(hv["students (test prompts, seed means)"]["hypervolume"]) == pytest.approx(
        staircase(means), abs=5e-3
    )
    assert "students" not in hv
    tested = {r["beta"]: r for r in _read_csv(out / "students_test.csv")}
    assert list(tested) == ["0", "15"] and tested["15"]["sources"] == "beta15-seed0 beta15-seed1"
    q0 = [q for _, q in EXPORTS["0"]]
    ref_ci = stats.t.interval(0.95, 2, loc=np.mean(q0), scale=stats.sem(q0))
    assert float(tested["0"]["quality"]) == pytest.approx(np.mean(q0))
    assert (float(tested["0"]["quality_low"]), float(tested["0"]["quality_high"])) == pytest.approx(ref_ci)
    assert hv["LERP(0,15)"]["varies"] == "lambda" and hv["CFG(base,negative)"]["varies"] == "gamma"
    # ... and the report is a finished MLflow run with the files and the hypervolumes.
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("cfg-distill")
    (report,) = client.search_runs([exp.experiment_id], "tags.stage = 'report'")
    assert report.info.status == "FINISHED" and report.info.run_name == "report"
    assert report.data.metrics["hypervolume/LERP_0_15"] == pytest.approx(
        float(hv["LERP(0,15)"]["hypervolume"])
    )
    arts = {a.path for a in client.list_artifacts(report.info.run_id, "report")}
    assert "report/quality_diversity.png" in arts and "report/table1_vendi.md" in arts
    # A second report ignores the first one's run.
    build_report(uri, "cfg-distill", tmp_path / "again", reference=(0.2, 1.0), log_to_mlflow=False)
    assert _read_csv(tmp_path / "again" / "hypervolume.csv") == _read_csv(out / "hypervolume.csv")


def test_report_of_one_sweep_and_the_default_reference(store, tmp_path):
    uri = store
    written = build_report(uri, "cfg-distill", tmp_path / "o", sweep="gamma", log_to_mlflow=False)
    assert "lambda.png" not in written  # no lambda front in the gamma sweep
    hv = _read_csv(tmp_path / "o" / "hypervolume.csv")
    assert [r["front"] for r in hv] == ["CFG(base,negative)"]
    # Default reference: 5 % of the range below the worst point on each axis.
    d, q = np.array(list(CFG.values())).T
    ref = (d.min() - 0.05 * np.ptp(d), q.min() - 0.05 * np.ptp(q))
    assert float(hv[0]["hypervolume"]) == pytest.approx(hypervolume_2d(np.c_[d, q], ref))


# ------------------------------------------------------------------------ bad input
def test_bad_inputs_write_nothing(store, tmp_path):
    uri = store
    out = tmp_path / "nothing"
    with pytest.raises(ValueError, match="no MLflow experiment named 'nope'"):
        build_report(uri, "nope", out)
    with pytest.raises(ValueError, match="sweep 'temperature' is empty"):
        build_report(uri, "cfg-distill", out, sweep="temperature")
    with pytest.raises(ValueError, match="lambda front 'LERP\\(0,5\\)' is empty"):
        build_report(uri, "cfg-distill", out, lambda_front="LERP(0,5)")
    with pytest.raises(ValueError, match="nothing to plot"):
        build_report(uri, "cfg-distill", out, quality="eval/absent")
    missing = tmp_path / "absent.db"
    with pytest.raises(FileNotFoundError, match="no MLflow database"):
        build_report(f"sqlite:///{missing}", "cfg-distill", out)
    assert not missing.exists() and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".nothing")]  # no temp left


def test_experiment_without_finished_runs(tmp_path):
    uri = _store(tmp_path, statuses="FAILED")
    with pytest.raises(ValueError, match="none FINISHED"):
        build_report(uri, "cfg-distill", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_input_in_one_line(store, tmp_path, capsys):
    uri = store
    assert main(["--experiment", "nope", "--tracking-uri", uri, "--out", str(tmp_path / "o")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "mlflow.store" not in line]
    assert len(err) == 1 and err[0].startswith("error: report: no MLflow experiment")
    assert main(["--experiment", "cfg-distill", "--tracking-uri", uri, "--out",
                 str(tmp_path / "o"), "--no-log"]) == 0  # fmt: skip
    assert (tmp_path / "o" / "quality_diversity.png").is_file()


@pytest.mark.slow
def test_module_runs_as_a_command(store, tmp_path):
    uri = store
    proc = subprocess.run(
        [sys.executable, "-m", "suite.report", "--experiment", "cfg-distill", "--tracking-uri",
         uri, "--out", str(tmp_path / "figs")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "quality_diversity.png" in proc.stdout


def test_side_by_side_runs_become_tables_2_and_3_and_no_front(tmp_path):
    """sweeps/sbs.yaml runs (front=side-by-side) fill tables 2-3 by model name and are
    neither a front nor rows of table 1."""
    import mlflow

    uri = _store(tmp_path)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("cfg-distill").experiment_id
    pairs = [("base", "cfg", "cfg3", 20, 60, 16), ("beta15", "lerp", "lerp(0,15)", 30, 30, 36)]
    for a, b, b_name, wins, losses, ties in pairs:
        r = client.create_run(exp, run_name=f"sbs-pair={a}_{b}", tags={"sweep": "sbs"})
        params = {"model._target_": EVALUATOR, "front": "side-by-side", "model_a": a,
                  "model_b": b, f"models.{a}.name": a, "baseline": b_name, "gamma": 1.0,
                  "lambda": "None"}  # fmt: skip
        for k, v in params.items():
            client.log_param(r.info.run_id, k, v)
        for k, v in {"eval/quality": 9.0, "eval/diversity": 0.9, "eval/vendi": 9.0,
                     "eval/winrate_quality": (wins + ties / 2) / (wins + losses + ties),
                     "eval/winrate_quality_wins": wins, "eval/winrate_quality_losses": losses,
                     "eval/winrate_quality_ties": ties}.items():  # fmt: skip
            client.log_metric(r.info.run_id, k, v)
        client.set_terminated(r.info.run_id, "FINISHED")
    out = tmp_path / "sbs"
    build_report(uri, "cfg-distill", out, reference=(0.2, 1.0), log_to_mlflow=False)
    rows = _read_csv(out / "table2_winrate_quality.csv")
    assert [(r["model_a"], r["model_b"]) for r in rows] == [("base", "cfg3"),
                                                            ("beta15", "lerp(0,15)")]  # fmt: skip
    assert float(rows[0]["win_rate_a"]) == pytest.approx((20 + 8) / 96)
    assert "side-by-side" not in {r["front"] for r in _read_csv(out / "hypervolume.csv")}
    raw = {r["run"]: r for r in _read_csv(out / "runs.csv")}  # every run, its final numbers
    assert (
        raw["sbs-pair=base_cfg"]["kind"] == "evaluator" and raw["beta15-seed0"]["kind"] == "student"
    )
    assert float(raw["lerp-lambda=0.5"]["eval/diversity"]) == pytest.approx(0.45)
    assert float(raw["beta0-seed0"]["eval/quality"]) == pytest.approx(3.9)  # its last eval
    assert all(not r["model"].startswith("sbs") for r in _read_csv(out / "table1_vendi.csv"))


def test_report_from_exported_csvs_equals_the_report_from_mlflow(store, tmp_path):
    """A reproduction assembled across machines: each step's runs exported to CSV
    (suite.report_store), the report rebuilt from the CSVs alone gives the same tables."""
    from suite.report_store import export_runs, load_runs_dir

    steps = tmp_path / "steps"
    for sweep in ("lambda", "gamma", "uniform"):
        export_runs(store, "cfg-distill", sweep, steps, sweep=sweep)
    export_runs(store, "cfg-distill", "all", steps)  # the students; every other run twice
    assert (steps / "lambda.runs.csv").is_file() and (steps / "all.history.csv").is_file()
    a = build_report(store, "cfg-distill", tmp_path / "a", log_to_mlflow=False, listen_prompts=0)
    b = build_report("", "exported", tmp_path / "b", runs_dir=steps)
    for name in ("table1_vendi.csv", "table2_winrate_quality.csv", "hypervolume.csv", "runs.csv"):
        assert a[name].read_text() == b[name].read_text(), name
    assert "listen.html" not in b
    runs = load_runs_dir(steps, sweep="lambda")
    assert [r.name for r in runs] == [f"lerp-lambda={lam}" for lam in LERP]


def test_report_store_refuses_bad_folders_and_files(tmp_path):
    from suite.report_store import load_runs_dir

    with pytest.raises(ValueError, match="no exported runs"):
        load_runs_dir(tmp_path / "none")
    (tmp_path / "x.runs.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="x.runs.csv is not a runs export"):
        load_runs_dir(tmp_path)
    assert main(["--runs-dir", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
