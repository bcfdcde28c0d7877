"""The Pareto report: figures 1, 3, 4 and tables 1-3 of the paper from finished MLflow runs.

    python -m suite.report --experiment cfg-distill [--tracking-uri sqlite:///mlflow.db]
                           [--out docs/repro] [--sweep lambda] [--no-log]

reads the finished runs of an experiment and writes into `--out`:

- `quality_diversity.png`: the quality-diversity plane of figures 1 and 3 (section 3.4):
  the training trajectory of every student run (its `eval/quality`, `eval/diversity`
  history, one line per beta, the last evaluation marked), and every evaluated front
  (LERP fronts, CFG fronts over gamma, temperature fronts, the uniform merge as a cross),
  each front ordered by the param that varies along it (lambda, gamma or temperature);
- `lambda.png`: figure 4, quality and diversity against lambda along a LERP front with the
  dashed diagonal between its endpoints (what a linear trade-off would give), and, when a
  CFG front exists, the same against gamma (figure 4, right);
- tables as Markdown and CSV: `table1_vendi` (Vendi and 1 - mean per model, appendix D.4),
  `table2_winrate_quality` and `table3_winrate_diversity` (wins, losses, ties, win rate and
  the p-values of appendix E, against each run's baseline, or the paper's ten pairs when
  sweeps/sbs.yaml ran), `hypervolume` (below), and `report.md` holding all of them;
- `runs.csv`: every student and evaluator run with its placing params and final metrics;
- the hypervolume of each front (and of the students' final points) against one common
  reference point: the area of the quality-diversity plane that the front dominates
  (both maximised), computed exactly for 2-D by a sweep over the points sorted by quality.

Everything is written to a temporary folder first and moved into `--out` only when it is
complete, so a bad input (an unknown experiment, no finished run, an empty sweep, no run
with the metrics) leaves no file. The report is also logged to MLflow as a run named
`report` (tag `stage=report`) with the files as artifacts and the hypervolumes as metrics.

Run classification uses what the run task logs as params: `model._target_` (the student's
`DistillStudent`, the evaluator's `MergedEvaluator`) and, for evaluator runs, the `front`
param of the `conf/eval_*.yaml` experiments (falling back to the `sweep` tag).
No Lightning or Hydra here: only MLflow, numpy and matplotlib.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

QUALITY = "eval/quality"
DIVERSITY = "eval/diversity"
FRONT_PARAMS = ("lambda", "gamma", "temperature")  # what may vary along a front
SIDE_BY_SIDE = "side-by-side"  # the `front` of conf/eval_sbs.yaml runs: tables 2-3, not a curve
_FINISHED = "FINISHED"


# --------------------------------------------------------------------------------------------
# Hypervolume (2-D, both objectives maximised)
# --------------------------------------------------------------------------------------------


def hypervolume_2d(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Area dominated by `points [k, 2]` and dominating `reference (x, y)`, both maximised.

    The union of the rectangles [ref_x, x_i] x [ref_y, y_i]: sweep the points by x
    descending and add each one's strip above the highest y seen so far. Points that do not
    strictly dominate the reference in both coordinates add nothing. O(k log k).
    """
    ref = np.asarray(reference, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if ref.shape != (2,) or not np.all(np.isfinite(ref)):
        raise ValueError(f"hypervolume_2d: reference must be 2 finite numbers, got {reference!r}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("hypervolume_2d: points must be finite")
    pts = pts[(pts[:, 0] > ref[0]) & (pts[:, 1] > ref[1])]
    order = np.argsort(-pts[:, 0], kind="stable")
    area, top = 0.0, ref[1]
    for x, y in pts[order]:
        if y > top:
            area += (x - ref[0]) * (y - top)
            top = y
    return float(area)


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """True for the points no other point dominates (>= in both, > in one), `[k, 2] -> [k]`."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    keep = np.ones(len(pts), dtype=bool)
    for i, p in enumerate(pts):
        others = np.delete(pts, i, axis=0)
        dominated = np.all(others >= p, axis=1) & np.any(others > p, axis=1)
        keep[i] = not dominated.any()
    return keep


# --------------------------------------------------------------------------------------------
# Reading MLflow
# --------------------------------------------------------------------------------------------


@dataclass
class RunPoint:
    """One finished run: its final metrics and the params that place it on a front."""

    run_id: str
    name: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]

    @property
    def target(self) -> str:
        return self.params.get("model._target_", "")

    def value(self, key: str) -> float | None:
        raw = self.params.get(key)
        try:
            out = float(raw) if raw is not None else None
        except ValueError:
            return None
        return out if out is not None and math.isfinite(out) else None


@dataclass
class Front:
    """Evaluated runs of one curve of figure 3, ordered by the param that varies."""

    name: str
    runs: list[RunPoint]
    varies: str | None = None  # lambda / gamma / temperature, None for a single point

    def xy(self, quality: str, diversity: str) -> np.ndarray:
        """`[k, 2]` (diversity, quality) of the runs that logged both, in front order."""
        return np.array(
            [
                [r.metrics[diversity], r.metrics[quality]]
                for r in self.runs
                if quality in r.metrics and diversity in r.metrics
            ]  # fmt: skip
        ).reshape(-1, 2)


@dataclass
class Trajectory:
    """A student run's evaluations along training: steps, quality, diversity."""

    name: str
    steps: list[int] = field(default_factory=list)
    quality: list[float] = field(default_factory=list)
    diversity: list[float] = field(default_factory=list)


def _client(tracking_uri: str):
    import mlflow

    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.is_file():  # MlflowClient would create an empty database: refuse instead
            raise FileNotFoundError(f"report: no MLflow database at {db} ({tracking_uri})")
    return mlflow.MlflowClient(tracking_uri=tracking_uri)


def load_runs(client, experiment: str, sweep: str | None = None) -> list[RunPoint]:
    """The finished runs of `experiment` (optionally of one sweep), report runs excluded."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"report: no MLflow experiment named {experiment!r}; found {names}")
    runs = client.search_runs([exp.experiment_id], max_results=50_000)
    if not runs:
        raise ValueError(
            f"report: experiment {experiment!r} has no runs; run the sweeps first, e.g. "
            f"`python -m suite test --config sweeps/lambda.yaml`"
        )
    finished = [
        r for r in runs if r.info.status == _FINISHED and r.data.tags.get("stage") != "report"
    ]
    if not finished:
        statuses = sorted({r.info.status for r in runs})
        raise ValueError(
            f"report: experiment {experiment!r} has {len(runs)} runs but none FINISHED "
            f"(statuses {statuses}); wait for the sweeps to finish or rerun the failed jobs"
        )
    if sweep is not None:
        finished = [r for r in finished if r.data.tags.get("sweep") == sweep]
        if not finished:
            sweeps = sorted({r.data.tags["sweep"] for r in runs if "sweep" in r.data.tags})
            raise ValueError(
                f"report: sweep {sweep!r} is empty: no finished run of experiment "
                f"{experiment!r} is tagged sweep={sweep}; sweeps present: {sweeps}"
            )
    return [
        RunPoint(
            r.info.run_id,
            r.info.run_name or r.info.run_id,
            dict(r.data.params),
            dict(r.data.metrics),
            dict(r.data.tags),
        )  # fmt: skip
        for r in sorted(finished, key=lambda r: (r.info.start_time or 0, r.info.run_id))
    ]


def student_label(run: RunPoint) -> str:
    for key in ("diversity.beta", "model.beta", "beta"):
        if key in run.params:
            return f"beta={run.params[key]} ({run.name})"
    return run.name


def trajectories(
    client, runs: Sequence[RunPoint], quality: str, diversity: str
) -> list[Trajectory]:
    """Evaluation histories of the student runs (figure 1's lines)."""
    out = []
    for run in runs:
        if not run.target.endswith("DistillStudent"):
            continue
        q = {m.step: m.value for m in client.get_metric_history(run.run_id, quality)}
        d = {m.step: m.value for m in client.get_metric_history(run.run_id, diversity)}
        steps = sorted(set(q) & set(d))
        if steps:
            out.append(Trajectory(student_label(run), steps, [q[s] for s in steps],
                                  [d[s] for s in steps]))  # fmt: skip
    return out


def fronts(runs: Sequence[RunPoint]) -> list[Front]:
    """Group the evaluator runs by their `front` param (else `sweep` tag) and order them."""
    groups: dict[str, list[RunPoint]] = {}
    for run in runs:
        if run.target.endswith("DistillStudent"):
            continue
        if not (run.target.endswith("MergedEvaluator") or "front" in run.params):
            continue
        if run.params.get("front") == SIDE_BY_SIDE:
            continue
        name = run.params.get("front") or run.tags.get("sweep") or "other"
        groups.setdefault(name, []).append(run)
    out = []
    for name, members in groups.items():
        varies = None
        for key in FRONT_PARAMS:
            values = {m.value(key) for m in members}
            if len(values) > 1 and None not in values:
                varies = key
                break
        if varies is not None:
            members = sorted(members, key=lambda m: m.value(varies))
        out.append(Front(name, members, varies))
    return sorted(out, key=lambda f: f.name)


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.4g}"
    return str(value)


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list]

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]  # fmt: skip
        lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows([["" if v is None else v for v in row] for row in self.rows])
        return buffer.getvalue()


def vendi_table(runs: Sequence[RunPoint]) -> Table:
    """Table 1 (appendix D.4): Vendi and 1 - mean per evaluated model, most diverse first."""
    rows = [
        [r.name, r.params.get("front", ""), r.metrics["eval/vendi"],
         r.metrics.get("eval/one_minus_mean"), r.metrics.get("eval/n_vendi_generations")]
        for r in runs if "eval/vendi" in r.metrics and not r.target.endswith("DistillStudent")
        and r.params.get("front") != SIDE_BY_SIDE
    ]  # fmt: skip
    rows.sort(key=lambda row: -row[2])
    return Table("Table 1: Vendi score and 1 - mean (appendix D.4)",
                 ["model", "front", "vendi", "one_minus_mean", "generations"], rows)  # fmt: skip


RUN_PARAMS = ("front", "beta", "lambda", "gamma", "temperature", "sources", "baseline")
RUN_METRICS = ("eval/quality", "eval/diversity", "eval/oracle_quality", "eval/mulan",
               "eval/preference", "eval/vendi", "eval/one_minus_mean", "eval/fad",
               "eval/kl_teacher", "eval/entropy", "eval/winrate_quality",
               "eval/winrate_diversity")  # fmt: skip


def runs_table(runs: Sequence[RunPoint]) -> Table:
    """Every run's final metrics and the params that place it (the raw numbers, as CSV).

    Students show their last evaluation (the final value MLflow keeps per metric)."""
    rows = [
        [r.name, "student" if r.target.endswith("DistillStudent") else "evaluator"]
        + [r.params.get(k, "") for k in RUN_PARAMS]
        + [r.metrics.get(k) for k in RUN_METRICS]
        for r in runs
        if r.target.endswith(("DistillStudent", "MergedEvaluator"))
    ]
    return Table("Every run: final metrics", ["run", "kind", *RUN_PARAMS, *RUN_METRICS], rows)


def _model_a(run: RunPoint) -> str:
    """A side-by-side run's model A by its name in the pair (e.g. beta15), else the run name."""
    name = run.params.get("model_a")
    if run.params.get("front") == SIDE_BY_SIDE and name:
        return run.params.get(f"models.{name}.name", name)
    return run.name


def winrate_table(runs: Sequence[RunPoint], kind: str, number: int) -> Table:
    """Tables 2 / 3 (appendix E): side-by-side results of each run against its baseline.

    When the experiment holds side-by-side runs (sweeps/sbs.yaml: the paper's ten pairs),
    the tables hold those pairs only; otherwise every evaluated run against its baseline.
    """
    key = f"eval/winrate_{kind}"
    rows = []
    sbs = [r for r in runs if r.params.get("front") == SIDE_BY_SIDE]
    for r in sbs or runs:
        if key not in r.metrics:
            continue
        m = r.metrics
        rows.append([
            _model_a(r), r.params.get("baseline", r.params.get("model.baseline.name", "")),
            int(m.get(f"{key}_wins", 0)), int(m.get(f"{key}_losses", 0)),
            int(m.get(f"{key}_ties", 0)), m[key], m.get(f"{key}_p_ttest"),
            m.get(f"{key}_p_wilcoxon"), m.get(f"{key}_p_sign"),
        ])  # fmt: skip
    return Table(
        f"Table {number}: side-by-side {kind} judged by the oracle (appendix E)",
        ["model_a", "model_b", "wins_a", "wins_b", "ties", "win_rate_a", "p_ttest",
         "p_wilcoxon", "p_sign"], rows,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _figure(width: float, height: float, cols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    axes = [fig.add_subplot(1, cols, i + 1) for i in range(cols)]
    return fig, axes


def plot_quality_diversity(
    path: Path, trajs: Sequence[Trajectory], fronts_: Sequence[Front], quality: str, diversity: str
) -> None:
    """Figures 1 and 3: diversity on x, quality on y."""
    fig, (ax,) = _figure(7.5, 5.5)
    for traj in trajs:
        line = ax.plot(traj.diversity, traj.quality, "-", alpha=0.5, lw=1)[0]
        ax.plot(traj.diversity[-1:], traj.quality[-1:], "o", ms=8, color=line.get_color(),
                label=f"{traj.name} (training)")  # fmt: skip
        ax.plot(traj.diversity[:-1], traj.quality[:-1], ".", color=line.get_color(), alpha=0.5)
    for front in fronts_:
        xy = front.xy(quality, diversity)
        if len(xy) == 0:
            continue
        if front.varies is None:
            ax.plot(xy[:, 0], xy[:, 1], "x", ms=11, mew=2.5, label=front.name)
        else:
            ax.plot(
                xy[:, 0], xy[:, 1], "-o", ms=3.5, lw=1.5, label=f"{front.name} ({front.varies})"
            )
    ax.set_xlabel(f"diversity ({diversity})")
    ax.set_ylabel(f"quality ({quality})")
    ax.set_title("Quality-diversity trade-off (figures 1 and 3)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)


def _against(ax, front: Front, metric: str, label: str, diagonal: bool) -> None:
    x = np.array([r.value(front.varies) for r in front.runs if metric in r.metrics])
    y = np.array([r.metrics[metric] for r in front.runs if metric in r.metrics])
    ax.plot(x, y, "-o", ms=4, label=front.name)
    if diagonal and len(x) >= 2:  # the linear trade-off between the endpoints (figure 4)
        ax.plot([x[0], x[-1]], [y[0], y[-1]], "--", color="grey", label="diagonal")
    ax.set_xlabel(front.varies)
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_lambda(path: Path, lerp: Front, cfg: Front | None, quality: str, diversity: str) -> None:
    """Figure 4: quality and diversity vs lambda with the diagonal between the endpoints
    (left), and vs gamma for CFG (right)."""
    panels = [(lerp, quality, "quality"), (lerp, diversity, "diversity")]
    if cfg is not None:
        panels += [(cfg, quality, "quality"), (cfg, diversity, "diversity")]
    fig, axes = _figure(3.6 * len(panels), 3.6, cols=len(panels))
    for ax, (front, metric, label) in zip(axes, panels):
        _against(ax, front, metric, f"{label} ({metric})", diagonal=front is lerp)
        ax.set_title(f"{front.name}: {label} vs {front.varies}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    """A front name as an MLflow metric-name part (letters, digits, _ - . / space only)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "front"


def pick_lambda_front(fronts_: Sequence[Front], wanted: str | None) -> Front | None:
    lam = [f for f in fronts_ if f.varies == "lambda"]
    if wanted is not None:
        match = [f for f in fronts_ if f.name == wanted]
        if not match:
            raise ValueError(
                f"report: lambda front {wanted!r} is empty: no finished run has front={wanted}; "
                f"fronts present: {[f.name for f in fronts_]}"
            )
        if match[0].varies != "lambda":
            raise ValueError(f"report: front {wanted!r} does not vary lambda ({match[0].varies})")
        return match[0]
    preferred = [f for f in lam if f.name.replace(" ", "") == "LERP(0,15)"]
    return (preferred or sorted(lam, key=lambda f: -len(f.runs)) or [None])[0]


def build_report(
    tracking_uri: str,
    experiment: str,
    out: str | os.PathLike,
    *,
    sweep: str | None = None,
    lambda_front: str | None = None,
    quality: str = QUALITY,
    diversity: str = DIVERSITY,
    reference: Sequence[float] | None = None,
    log_to_mlflow: bool = True,
) -> dict[str, Path]:
    """Write the report files into `out` (all or nothing); returns {file name: path}."""
    client = _client(tracking_uri)
    runs = load_runs(client, experiment, sweep)
    trajs = trajectories(client, runs, quality, diversity)
    fronts_ = fronts(runs)
    curves = [f for f in fronts_ if len(f.xy(quality, diversity))]
    if not trajs and not curves:
        raise ValueError(
            f"report: no finished run of {experiment!r} logged both {quality!r} and "
            f"{diversity!r}; nothing to plot"
        )
    finals = np.array([[t.diversity[-1], t.quality[-1]] for t in trajs]).reshape(-1, 2)
    parts = [np.column_stack([t.diversity, t.quality]) for t in trajs]
    every = np.concatenate(parts + [f.xy(quality, diversity) for f in curves])  # [k, 2]
    if reference is None:  # a little below the worst point of every curve, on both axes
        low, high = every.min(axis=0), every.max(axis=0)
        span = np.where(high > low, high - low, 1.0)
        reference = (float(low[0] - 0.05 * span[0]), float(low[1] - 0.05 * span[1]))
    ref_xy = (float(reference[0]), float(reference[1]))  # (diversity, quality)

    hv_rows = [[f.name, f.varies or "", len(f.xy(quality, diversity)),
                hypervolume_2d(f.xy(quality, diversity), ref_xy)] for f in curves]  # fmt: skip
    if len(finals):
        hv_rows.append(["fine-tunes (final)", "beta", len(finals), hypervolume_2d(finals, ref_xy)])
    hv = Table(f"Hypervolume against the reference (diversity, quality) = "
               f"({ref_xy[0]:.4g}, {ref_xy[1]:.4g})",
               ["front", "varies", "points", "hypervolume"], hv_rows)  # fmt: skip
    tables = {
        "table1_vendi": vendi_table(runs),
        "table2_winrate_quality": winrate_table(runs, "quality", 2),
        "table3_winrate_diversity": winrate_table(runs, "diversity", 3),
        "hypervolume": hv,
    }
    raw = runs_table(runs)
    lerp = pick_lambda_front(fronts_, lambda_front)
    cfg = next((f for f in fronts_ if f.varies == "gamma" and "negative" in f.name),
               next((f for f in fronts_ if f.varies == "gamma"), None))  # fmt: skip

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        plot_quality_diversity(tmp / "quality_diversity.png", trajs, curves, quality, diversity)
        if lerp is not None:
            plot_lambda(tmp / "lambda.png", lerp, cfg, quality, diversity)
        summary = [f"# Pareto report: experiment `{experiment}`" + (f", sweep `{sweep}`" if sweep else ""),
                   "", f"Runs: {len(runs)} finished; students: {len(trajs)}; fronts: "
                   f"{', '.join(f.name for f in curves) or 'none'}.", "",
                   f"Quality: `{quality}`, diversity: `{diversity}`.", "",
                   "![quality-diversity](quality_diversity.png)", ""]  # fmt: skip
        if lerp is not None:
            summary += [f"![lambda]({'lambda.png'})", ""]
        else:
            summary += ["(No front varies lambda: figure 4 is not drawn.)", ""]
        for name, table in tables.items():
            (tmp / f"{name}.md").write_text(table.markdown())
            (tmp / f"{name}.csv").write_text(table.csv())
            summary.append(table.markdown())
        (tmp / "runs.csv").write_text(raw.csv())
        summary += ["", f"Raw numbers of all {len(raw.rows)} runs: `runs.csv`."]
        (tmp / "report.md").write_text("\n".join(summary))
        out.mkdir(parents=True, exist_ok=True)
        written = {}
        for file in sorted(tmp.iterdir()):
            os.replace(file, out / file.name)
            written[file.name] = out / file.name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if log_to_mlflow:
        _log_report(client, experiment, sweep, written, hv_rows, ref_xy, quality, diversity)
    return written


def _log_report(client, experiment, sweep, written, hv_rows, ref_xy, quality, diversity) -> None:
    exp = client.get_experiment_by_name(experiment)
    run = client.create_run(
        exp.experiment_id, run_name=f"report-{sweep}" if sweep else "report",
        tags={"stage": "report", **({"sweep": sweep} if sweep else {})},
    )  # fmt: skip
    run_id = run.info.run_id
    try:
        for key, value in (("quality_metric", quality), ("diversity_metric", diversity),
                           ("reference_diversity", ref_xy[0]), ("reference_quality", ref_xy[1])):  # fmt: skip
            client.log_param(run_id, key, value)
        for name, _, _, area in hv_rows:
            client.log_metric(run_id, f"hypervolume/{_slug(name)}", float(area))
        for path in written.values():
            client.log_artifact(run_id, str(path), artifact_path="report")
        client.set_terminated(run_id, _FINISHED)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m suite.report",
        description="Pareto report (figures 1, 3, 4; tables 1-3; hypervolumes) from MLflow runs.",
    )
    parser.add_argument("--experiment", required=True, help="MLflow experiment, e.g. cfg-distill")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--out", default="docs/repro", help="output folder")
    parser.add_argument("--sweep", default=None, help="only the runs tagged sweep=NAME")
    parser.add_argument("--lambda-front", default=None, help="front of figure 4, e.g. LERP(0,15)")
    parser.add_argument("--quality-metric", default=QUALITY)
    parser.add_argument("--diversity-metric", default=DIVERSITY)
    parser.add_argument("--reference", nargs=2, type=float, metavar=("DIVERSITY", "QUALITY"),
                        default=None, help="hypervolume reference point")  # fmt: skip
    parser.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    args = parser.parse_args(argv)
    try:
        written = build_report(
            args.tracking_uri, args.experiment, args.out, sweep=args.sweep,
            lambda_front=args.lambda_front, quality=args.quality_metric,
            diversity=args.diversity_metric, reference=args.reference,
            log_to_mlflow=not args.no_log,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in written.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
