"""Reading the report's MLflow runs: runs, fronts and training trajectories (paper section 3.4).

The Pareto report (suite/report.py) places every finished run on the quality-diversity
plane of figures 1 and 3. This module reads them: `load_runs` returns the finished runs of
an experiment (optionally of one sweep; report runs excluded) as `RunPoint`s with their
params, final metrics and tags; `trajectories` reads the students' evaluation histories
(figure 1's lines); `fronts` groups the evaluator runs by their `front` param (else their
`sweep` tag) and orders each front by the param that varies along it (lambda, gamma or
temperature: figures 3 and 4). Side-by-side runs (sweeps/sbs.yaml) are no front, nor are
the students' exports evaluated at each training seed (`student_exports`, sweeps/exports.yaml).
Bad input (no experiment, no finished run, an empty sweep) is a ValueError naming it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

QUALITY = "eval/quality"
DIVERSITY = "eval/diversity"
FRONT_PARAMS = ("lambda", "gamma", "temperature")  # what may vary along a front
SIDE_BY_SIDE = "side-by-side"  # the `front` of conf/eval_sbs.yaml runs: tables 2-3, not a curve
# The `front` of conf/eval_student.yaml runs: each student's export at each training seed on
# the test prompts; points with an interval over seeds, not a curve.
STUDENT_EXPORTS = "students"
FINISHED = "FINISHED"


@dataclass
class RunPoint:
    """One finished run: its final metrics and the params that place it on a front."""

    run_id: str
    name: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    start_time: int = 0  # epoch ms (runs are listed in start order)

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
    group: str = ""  # the student's beta (and N): seeds of one group are drawn as one line


def mlflow_client(tracking_uri: str):
    import mlflow

    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.is_file():  # MlflowClient would create an empty database: refuse instead
            raise FileNotFoundError(f"report: no MLflow database at {db} ({tracking_uri})")
    return mlflow.MlflowClient(tracking_uri=tracking_uri)


WORLD_TAG = "music_world_version"


def one_world(runs: list[RunPoint]) -> tuple[list[RunPoint], str]:
    """The runs of the newest music world among `runs`, and a line saying what was left out.

    A music-world run carries its world version as a tag (`suite.run.run_tags`); a rebuilt
    world changes every number, so a report never mixes worlds. Runs of other policies carry
    no tag and are kept when no run has one; once some do, untagged runs (made before the
    tag existed, world <= 2) are left out with the older worlds'."""
    versions = {r.tags.get(WORLD_TAG) for r in runs}
    tagged = sorted((v for v in versions if v is not None), key=lambda v: (len(v), v))
    if not tagged:
        return runs, ""
    newest = tagged[-1]
    kept = [r for r in runs if r.tags.get(WORLD_TAG) == newest]
    left = len(runs) - len(kept)
    note = (f"report: {left} run(s) of older music worlds (or untagged) left out; "
            f"reporting music world version {newest}") if left else ""  # fmt: skip
    return kept, note


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
        r for r in runs if r.info.status == FINISHED and r.data.tags.get("stage") != "report"
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
            r.info.start_time or 0,
        )  # fmt: skip
        for r in sorted(finished, key=lambda r: (r.info.start_time or 0, r.info.run_id))
    ]


def student_label(run: RunPoint) -> str:
    """A student's name in figures and on the listening page: its beta and run name; for
    the N study, its beta, N and seed (its run names repeat Hydra's override)."""
    for key in ("diversity.beta", "model.beta", "beta"):
        if key in run.params:
            n = student_n(run)
            if n is not None:
                return f"beta={run.params[key]}, N={n} (seed {run.params.get('seed', '?')})"
            return f"beta={run.params[key]} ({run.name})"
    return run.name


def student_n(run: RunPoint) -> str | None:
    """A trained student's generations per prompt N when it is not one of the beta sweep's
    seeds: a run of figure 10's N study (tag sweep=n_study; its N = 2 run has the sweep's
    own config, so only the tag tells it apart) or any N other than 2."""
    n = run.params.get("model.n_generations", "2") or "2"
    return n if n != "2" or run.tags.get("sweep") == "n_study" else None


def student_group(run: RunPoint) -> str:
    """What a student's seeds share: its beta and, for the N study, its generations per
    prompt (figure 10 trains beta 15 at N = 2, 4, 8: those are not extra seeds)."""
    beta = next((run.params[k] for k in ("diversity.beta", "model.beta", "beta")
                 if k in run.params), None)  # fmt: skip
    if beta is None:
        return run.name
    n = student_n(run)
    return f"beta={beta}" if n is None else f"beta={beta} (N={n})"


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
                                  [d[s] for s in steps], student_group(run)))  # fmt: skip
    return out


def beta_order(label: str) -> tuple[float, str]:
    try:  # "15 (N=4)" sorts after "15"
        return float(label.split(" ", 1)[0]), label
    except ValueError:
        return math.inf, label


def export_n(run: RunPoint) -> str | None:
    """The N (generations per prompt) an exported student of figure 10's N study trained
    with (conf/eval_student.yaml's `student_n`); None for the beta sweep's students."""
    n = run.params.get("student_n")
    return None if n in (None, "", "None", "null") else n


def student_exports(runs: Sequence[RunPoint]) -> dict[str, list[RunPoint]]:
    """The evaluator runs of the students' exports (front `students`), grouped by beta in
    beta order: one run per training seed (its newest evaluation), on the test prompts.
    The N study's students are groups of their own ("15 (N=4)"): not extra seeds."""
    newest: dict[str, RunPoint] = {}  # runs come in start order: a repeat replaces
    for run in runs:
        if run.params.get("front") == STUDENT_EXPORTS and not run.target.endswith("DistillStudent"):
            newest[run.params.get("sources") or run.run_id] = run
    groups: dict[str, list[RunPoint]] = {}
    for run in newest.values():
        beta, n = run.params.get("beta", "?"), export_n(run)
        groups.setdefault(beta if n is None else f"{beta} (N={n})", []).append(run)
    return {beta: groups[beta] for beta in sorted(groups, key=beta_order)}


def beta_sweep_exports(runs: Sequence[RunPoint]) -> dict[str, list[RunPoint]]:
    """`student_exports` without the N study's groups: the beta sweep's students by beta
    (what the claims, D.2, the students' table and the figure's diamonds are about)."""
    return {beta: group for beta, group in student_exports(runs).items()
            if all(export_n(r) is None for r in group)}  # fmt: skip


def model_identity(run: RunPoint) -> tuple:
    """What model an evaluator run sampled, whatever front it was run for: a LERP at lambda
    0 or 1 is its endpoint, CFG at gamma 1 is the plain model (any negative prompt), so the
    base model at temperature 0.99 is one model on the CFG and the temperature fronts."""
    sources = [s for s in (run.params.get("sources") or run.run_id).split(",") if s]
    lam = run.value("lambda")
    if lam in (0.0, 1.0) and len(sources) == 2:
        sources = [sources[int(lam)]]
        lam = None
    gamma = run.value("gamma")
    gamma = 1.0 if gamma is None else gamma
    negative = run.params.get("negative_prompt", "") if gamma != 1.0 else ""
    return (tuple(sources), lam, run.value("temperature"), gamma, negative,
            run.params.get("method", ""))  # fmt: skip


def distinct_models(runs: Sequence[RunPoint]) -> list[RunPoint]:
    """One run per `model_identity` (the newest), so a model evaluated for two fronts counts
    once in a correlation across models."""
    newest: dict[tuple, RunPoint] = {}
    for run in runs:
        newest[model_identity(run)] = run
    return list(newest.values())


def fronts(runs: Sequence[RunPoint]) -> list[Front]:
    """Group the evaluator runs by their `front` param (else `sweep` tag) and order them."""
    groups: dict[str, list[RunPoint]] = {}
    for run in runs:
        if run.target.endswith("DistillStudent"):
            continue
        if not (run.target.endswith("MergedEvaluator") or "front" in run.params):
            continue
        if run.params.get("front") in (SIDE_BY_SIDE, STUDENT_EXPORTS):
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
