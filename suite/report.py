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
- `listen.html` (+ the clips it plays in `listen/`): each compared model's logged
  generations for the same test prompts side by side, with its metrics and MIDI, and the
  side-by-side pairs' two clips next to each other (suite/report_listen.py);
- `claims`: each testable claim of the paper as a difference with its 95 % interval and
  a verdict read off the interval alone (suite/report_claims.py);
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
No Lightning or Hydra here: only MLflow, numpy and matplotlib. The parts: report_runs.py
(reading MLflow: runs, fronts, trajectories), report_tables.py (hypervolume, tables 1-3),
report_figures.py (figures 1, 3, 4), report_listen.py (the listening page); this module
assembles and writes the report.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from suite.report_claims import claims_table
from suite.report_figures import plot_lambda, plot_quality_diversity, seed_means
from suite.report_listen import write_listen_page
from suite.report_runs import (  # noqa: F401 (re-exported: suite.report.RunPoint, ...)
    DIVERSITY,
    FINISHED,
    FRONT_PARAMS,
    QUALITY,
    SIDE_BY_SIDE,
    Front,
    RunPoint,
    Trajectory,
    beta_sweep_exports,
    fronts,
    load_runs,
    mlflow_client,
    one_world,
    student_exports,
    student_label,
    trajectories,
)
from suite.report_tables import (  # noqa: F401 (re-exported: suite.report.hypervolume_2d, ...)
    RUN_METRICS,
    RUN_PARAMS,
    Table,
    d2_table,
    exports_table,
    hypervolume_2d,
    n_study_table,
    pareto_mask,
    runs_table,
    seeds_table,
    vendi_table,
    winrate_table,
)


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


def _one_world(runs: list[RunPoint]) -> list[RunPoint]:
    runs, note = one_world(runs)
    if note:
        print(note, file=sys.stderr)
    return runs


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
    listen_prompts: int = 4,
    listen_audio: str = "wav",
    runs_dir: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Write the report files into `out` (all or nothing); returns {file name: path}.

    `listen_prompts` prompts of the listening page (0: no page), `listen_audio` its clips'
    format ("wav" as logged, or "mp3", smaller to keep in git). With `runs_dir` the runs are
    read from the CSVs `suite.report_store` exported there instead of MLflow (no listening
    page and no report run: the clips and the store stay with MLflow)."""
    if isinstance(listen_prompts, bool) or not isinstance(listen_prompts, int) or listen_prompts < 0:
        raise ValueError(f"report: listen_prompts (--listen-prompts) must be an int >= 0 "
                         f"(0: no listening page), got {listen_prompts!r}")  # fmt: skip
    if listen_audio not in ("wav", "mp3"):
        raise ValueError(f"report: listen_audio (--listen-audio) must be 'wav' or 'mp3', "
                         f"got {listen_audio!r}")  # fmt: skip
    if runs_dir is not None:
        from suite.report_store import load_runs_dir, trajectories_dir

        client, listen_prompts, log_to_mlflow = None, 0, False
        runs = _one_world(load_runs_dir(runs_dir, sweep))
        trajs = trajectories_dir(runs_dir, runs, quality, diversity)
    else:
        client = mlflow_client(tracking_uri)
        runs = _one_world(load_runs(client, experiment, sweep))
        trajs = trajectories(client, runs, quality, diversity)
    fronts_ = fronts(runs)
    curves = [f for f in fronts_ if len(f.xy(quality, diversity))]
    exports = beta_sweep_exports(runs)  # (the N study has its own table)
    means = seed_means(exports, quality, diversity)  # {beta: (d, q, seeds)} on the test prompts
    if not trajs and not curves and not means:
        raise ValueError(
            f"report: no finished run of {experiment!r} logged both {quality!r} and "
            f"{diversity!r}; nothing to plot"
        )
    finals = np.array([[t.diversity[-1], t.quality[-1]] for t in trajs]).reshape(-1, 2)
    tested = np.array([[d[0], q[0]] for d, q, _ in means.values()]).reshape(-1, 2)
    parts = [np.column_stack([t.diversity, t.quality]) for t in trajs]
    every = np.concatenate(parts + [tested] + [f.xy(quality, diversity) for f in curves])  # [k, 2]
    if reference is None:  # a little below the worst point of every curve, on both axes
        low, high = every.min(axis=0), every.max(axis=0)
        span = np.where(high > low, high - low, 1.0)
        reference = (float(low[0] - 0.05 * span[0]), float(low[1] - 0.05 * span[1]))
    ref_xy = (float(reference[0]), float(reference[1]))  # (diversity, quality)

    hv_rows = [[f.name, f.varies or "", len(f.xy(quality, diversity)),
                hypervolume_2d(f.xy(quality, diversity), ref_xy)] for f in curves]  # fmt: skip
    if len(tested):  # the students on the test prompts, like the fronts: their seed means
        hv_rows.append(["students (test prompts, seed means)", "beta", len(tested),
                        hypervolume_2d(tested, ref_xy)])  # fmt: skip
    if len(finals):  # their own last evaluations, on the validation prompts
        hv_rows.append(["fine-tunes (final, validation prompts)", "beta", len(finals),
                        hypervolume_2d(finals, ref_xy)])  # fmt: skip
    hv = Table(f"Hypervolume against the reference (diversity, quality) = "
               f"({ref_xy[0]:.4g}, {ref_xy[1]:.4g})",
               ["front", "varies", "points", "hypervolume"], hv_rows)  # fmt: skip
    tables = {
        "table1_vendi": vendi_table(runs),
        "table2_winrate_quality": winrate_table(runs, "quality", 2),
        "table3_winrate_diversity": winrate_table(runs, "diversity", 3),
        "seeds": seeds_table(runs),
        "students_test": exports_table(runs),
        "n_study_test": n_study_table(runs),
        "d2_diversity_measures": d2_table(runs),
        "hypervolume": hv,
        "claims": claims_table(runs, lambda_front or "LERP(0,15)"),
    }
    raw = runs_table(runs)
    lerp = pick_lambda_front(fronts_, lambda_front)
    cfg = next((f for f in fronts_ if f.varies == "gamma" and "negative" in f.name),
               next((f for f in fronts_ if f.varies == "gamma"), None))  # fmt: skip

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        plot_quality_diversity(tmp / "quality_diversity.png", trajs, curves, quality, diversity,
                               exports)  # fmt: skip
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
        if listen_prompts:
            title = f"Listening: experiment {experiment}" + (f", sweep {sweep}" if sweep else "")
            write_listen_page(client, runs, fronts_, tmp, title, listen_prompts, listen_audio)
            summary += ["", "Generations of every model, side by side: [listen.html](listen.html)."]
        (tmp / "report.md").write_text("\n".join(summary))
        out.mkdir(parents=True, exist_ok=True)
        written = {}
        for file in sorted(tmp.iterdir()):
            if file.is_dir() and (out / file.name).is_dir():
                shutil.rmtree(out / file.name)  # the clips of an older page
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
        for name, path in written.items():
            if path.is_dir():
                client.log_artifacts(run_id, str(path), artifact_path=f"report/{name}")
            else:
                client.log_artifact(run_id, str(path), artifact_path="report")
        client.set_terminated(run_id, FINISHED)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m suite.report",
        description="Pareto report (figures 1, 3, 4; tables 1-3; hypervolumes) from MLflow runs.",
    )
    parser.add_argument("--experiment", default=None, help="MLflow experiment, e.g. cfg-distill")
    parser.add_argument("--runs-dir", default=None,
                        help="read the runs from the CSVs of `python -m suite.report_store` "
                             "(e.g. docs/repro/steps) instead of MLflow")  # fmt: skip
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--out", default="docs/repro", help="output folder")
    parser.add_argument("--sweep", default=None, help="only the runs tagged sweep=NAME")
    parser.add_argument("--lambda-front", default=None, help="front of figure 4, e.g. LERP(0,15)")
    parser.add_argument("--quality-metric", default=QUALITY)
    parser.add_argument("--diversity-metric", default=DIVERSITY)
    parser.add_argument("--reference", nargs=2, type=float, metavar=("DIVERSITY", "QUALITY"),
                        default=None, help="hypervolume reference point")  # fmt: skip
    parser.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    parser.add_argument("--listen-prompts", type=int, default=4,
                        help="prompts on the listening page listen.html (0: no page)")  # fmt: skip
    parser.add_argument("--listen-audio", choices=("wav", "mp3"), default="wav",
                        help="format of the page's clips (mp3: smaller, to keep in git)")  # fmt: skip
    args = parser.parse_args(argv)
    if (args.experiment is None) == (args.runs_dir is None):
        print("error: give exactly one of --experiment (MLflow) and --runs-dir (exported CSVs)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        written = build_report(
            args.tracking_uri, args.experiment or str(args.runs_dir), args.out, sweep=args.sweep,
            lambda_front=args.lambda_front, quality=args.quality_metric,
            diversity=args.diversity_metric, reference=args.reference,
            log_to_mlflow=not args.no_log, listen_prompts=args.listen_prompts,
            listen_audio=args.listen_audio, runs_dir=args.runs_dir,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in written.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
