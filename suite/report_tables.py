"""Hypervolumes and the tables of the Pareto report (paper tables 1-3, section 3.4).

- `hypervolume_2d`: the area of the quality-diversity plane a front dominates against a
  reference point (both objectives maximised), exact in 2-D; `pareto_mask` its front;
- `Table`: a titled table written as Markdown and CSV;
- `vendi_table`: table 1 (Vendi and 1 - mean per evaluated model, appendix D.4);
- `winrate_table`: tables 2 and 3 (side-by-side wins, losses, ties, win rate and the
  p-values of appendix E, against each run's baseline or the paper's ten pairs);
- `runs_table`: every run's final metrics and placing params (runs.csv), with the
  evaluator's 95 % bootstrap intervals over prompts beside its main means;
- `seeds_table`: the students' final numbers per beta as mean and 95 % t-interval over
  training seeds (one seed is an anecdote), from their own last evaluation (validation);
- `exports_table`: the same on the TEST prompts, from the evaluator runs of every seed's
  export (sweeps/exports.yaml): the students' numbers a report quotes;
- `d2_table`: appendix D.2, the correlation across evaluated models between E's diversity,
  the oracle's musical diversity (the world's stand-in for human diversity ratings) and
  the entropy per token.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from suite.report_runs import (
    SIDE_BY_SIDE,
    STUDENT_EXPORTS,
    RunPoint,
    beta_order,
    beta_sweep_exports,
    distinct_models,
    export_n,
    student_exports,
    student_n,
)


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

    def _merged(self) -> list[tuple[int, int | None, int | None]]:
        """(value, low, high) column indices: `x` takes `x_low` / `x_high`, and a bare
        `low` / `high` pair belongs to the column before it (the CSV keeps them apart)."""
        index = {name: i for i, name in enumerate(self.header)}
        used: set[int] = set()
        out = []
        for i, name in enumerate(self.header):
            if i in used:
                continue
            low, high = index.get(f"{name}_low"), index.get(f"{name}_high")
            if low is None and self.header[i + 1 : i + 3] == ["low", "high"]:
                low, high = i + 1, i + 2
            if low is not None and high is not None:
                used |= {low, high}
                out.append((i, low, high))
            else:
                out.append((i, None, None))
        return out

    def markdown(self) -> str:
        """The table with each interval beside its value: `0.903 [0.874, 0.933]`."""
        cols = self._merged()
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header[i] for i, _, _ in cols) + " |",
                 "|" + "|".join("---" for _ in cols) + "|"]  # fmt: skip
        for row in self.rows:
            cells = []
            for i, lo, hi in cols:
                cell = _fmt(row[i])
                if lo is not None and all(isinstance(row[j], int | float) and math.isfinite(row[j])
                                          for j in (lo, hi)):  # fmt: skip
                    cell += f" [{_fmt(row[lo])}, {_fmt(row[hi])}]"
                cells.append(cell)
            lines.append("| " + " | ".join(cells) + " |")
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
# Quality by part (text adherence: MuLan, oracle adherence; acoustic: preference, oracle
# quality) and diversity by judge (E's, the oracle's musical distance), each its own column.
RUN_METRICS = ("eval/quality", "eval/diversity", "eval/oracle_diversity", "eval/oracle_quality",
               "eval/oracle_adherence", "eval/mulan", "eval/preference", "eval/vendi",
               "eval/one_minus_mean", "eval/fad", "eval/kl_teacher", "eval/entropy",
               "eval/winrate_quality", "eval/winrate_diversity")  # fmt: skip
# The evaluator's 95 % bootstrap intervals over prompts (suite.metrics.intervals).
RUN_INTERVALS = tuple(f"{m}_ci_{end}" for m in ("eval/quality", "eval/diversity",
                      "eval/oracle_quality", "eval/oracle_diversity") for end in ("low", "high"))  # fmt: skip


def runs_table(runs: Sequence[RunPoint]) -> Table:
    """Every run's final metrics and the params that place it (the raw numbers, as CSV).

    Students show their last evaluation (the final value MLflow keeps per metric)."""
    rows = [
        [r.name, "student" if r.target.endswith("DistillStudent") else "evaluator"]
        + [r.params.get(k, "") for k in RUN_PARAMS]
        + [r.metrics.get(k) for k in (*RUN_METRICS, *RUN_INTERVALS)]
        for r in runs
        if r.target.endswith(("DistillStudent", "MergedEvaluator"))
    ]
    return Table("Every run: final metrics",
                 ["run", "kind", *RUN_PARAMS, *RUN_METRICS, *RUN_INTERVALS], rows)  # fmt: skip


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean of a few values (NaNs left out);
    one value gives (value, nan, nan): no interval from one seed."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


SEED_METRICS = ("eval/quality", "eval/diversity", "eval/oracle_quality", "eval/oracle_diversity",
                "eval/kl_teacher")  # fmt: skip


def _student_key(run: RunPoint) -> tuple[float, int, str]:
    """(beta, N, label): students group by beta AND, for the N study, generations per prompt
    (`report_runs.student_n`: figure 10's runs are not extra seeds of the beta sweep)."""
    beta = run.params.get("beta", run.params.get("model.beta", "?"))
    n = student_n(run)
    try:
        order = float(beta)
    except ValueError:
        order = math.inf
    return order, int(n) if n and n.isdigit() else 0, beta if n is None else f"{beta} (N={n})"


def _interval_header(lead: Sequence[str], metrics: Sequence[str]) -> list[str]:
    """`lead`, then `name, name_low, name_high` per metric (`eval/` left off)."""
    header = list(lead)
    for key in metrics:
        name = key.split("/", 1)[1]
        header += [name, f"{name}_low", f"{name}_high"]
    return header


def _seed_rows(lead: list[str], groups: Sequence[tuple[str, str, Sequence[RunPoint]]],
               metrics: Sequence[str]) -> tuple[list[str], list[list]]:  # fmt: skip
    """Header and rows of a per-group table: (label, members, runs) -> label, the number of
    runs, members, then mean, low, high over the runs of each metric."""
    rows = []
    for label, members, group in groups:
        row: list = [label, len(group), members]
        for key in metrics:
            row += list(mean_interval([r.metrics.get(key) for r in group]))
        rows.append(row)
    return _interval_header(lead, metrics), rows


def seeds_table(runs: Sequence[RunPoint]) -> Table:
    """The students' final metrics per (beta, N): seeds, then mean [low, high] per metric.

    These are the students' own last evaluations, on the VALIDATION split (where their
    checkpoints are chosen); the test split's numbers come from the evaluator runs."""
    groups: dict[tuple[float, int, str], list[RunPoint]] = {}
    for r in runs:
        if r.target.endswith("DistillStudent"):
            groups.setdefault(_student_key(r), []).append(r)
    rows = [(key[2], " ".join(sorted(r.params.get("seed", "?") for r in groups[key])), groups[key])
            for key in sorted(groups)]  # fmt: skip
    header, body = _seed_rows(["beta", "seeds", "seed_values"], rows, SEED_METRICS)
    return Table("Students over training seeds (their last evaluation, validation split): "
                 "mean and 95 % t-interval", header, body)  # fmt: skip


EXPORT_METRICS = ("eval/quality", "eval/diversity", "eval/oracle_quality", "eval/oracle_diversity",
                  "eval/oracle_adherence", "eval/mulan", "eval/preference", "eval/vendi",
                  "eval/one_minus_mean", "eval/fad", "eval/kl_teacher", "eval/entropy")  # fmt: skip


def exports_table(runs: Sequence[RunPoint]) -> Table:
    """The students on the test prompts: per beta, the evaluator's numbers of each training
    seed's export (one evaluation seed for all: common draws), mean and 95 % t-interval."""
    rows = [(beta, " ".join(sorted(r.params.get("sources", "?") for r in group)), group)
            for beta, group in beta_sweep_exports(runs).items()]  # fmt: skip
    header, body = _seed_rows(["beta", "seeds", "sources"], rows, EXPORT_METRICS)
    return Table("Students on the test prompts (the evaluator on each training seed's export): "
                 "mean and 95 % t-interval over seeds", header, body)  # fmt: skip


N_STUDY_METRICS = ("eval/quality", "eval/diversity", "eval/oracle_quality", "eval/oracle_diversity")


def n_study_table(runs: Sequence[RunPoint]) -> Table:
    """Figure 10 on the test prompts: each N-study student's export (beta 15 trained with N
    generations per prompt at a constant number per step; one training seed each) with the
    evaluator's 95 % bootstrap interval over prompts, plus its KL and entropy."""
    exports = [r for group in student_exports(runs).values() for r in group if export_n(r)]
    exports.sort(key=lambda r: (beta_order(r.params.get("beta", "?")), int(export_n(r))))
    rows = []
    for r in exports:
        row: list = [export_n(r), r.params.get("beta", "?"), r.params.get("sources", "?")]
        for key in N_STUDY_METRICS:
            row += [r.metrics.get(key), r.metrics.get(f"{key}_ci_low"), r.metrics.get(f"{key}_ci_high")]
        rows.append(row + [r.metrics.get("eval/kl_teacher"), r.metrics.get("eval/entropy")])
    header = _interval_header(["N", "beta", "sources"], N_STUDY_METRICS)
    return Table("Figure 10: generations per prompt N at a constant number per step (test prompts, "
                 "one training seed each; 95 % bootstrap interval over prompts)",
                 header + ["kl_teacher", "entropy"], rows)  # fmt: skip


# Vendi comes from E's Gram matrix like E diversity (claim 6 agrees by construction): its
# rows against the oracle and the entropy are the independent checks of it.
D2_AXES = (("eval/diversity", "E diversity"), ("eval/oracle_diversity", "oracle musical diversity"),
           ("eval/entropy", "entropy per token"), ("eval/vendi", "Vendi (E)"))  # fmt: skip


MIN_MODELS = 8  # fewer models give no Spearman interval: 3 rank perfectly 1 time in 6


def spearman_interval(x: Sequence[float], y: Sequence[float], confidence: float = 0.95,
                      resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of Spearman's rho over the models (pairs resampled
    together); resamples where a measure is constant (rho undefined) are left out. Below
    `MIN_MODELS` models the bootstrap is degenerate (a perfect rank order resamples to
    [1, 1]): (nan, nan)."""
    xy = np.asarray([x, y], dtype=np.float64).T  # [n, 2]
    xy = xy[np.lexsort((xy[:, 1], xy[:, 0]))]  # the same models in any order: the same interval
    if len(xy) < MIN_MODELS:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    rhos = []
    for _ in range(resamples):
        pick = xy[rng.integers(0, len(xy), len(xy))]
        if np.ptp(pick[:, 0]) > 0 and np.ptp(pick[:, 1]) > 0:
            rhos.append(stats.spearmanr(pick[:, 0], pick[:, 1]).statistic)
    if len(rhos) < resamples // 2:
        return math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(rhos, [tail, 100 - tail])
    return float(low), float(high)


def d2_table(runs: Sequence[RunPoint]) -> Table:
    """Appendix D.2: Spearman (with its 95 % bootstrap interval over models) and Pearson
    correlation across evaluated models, one row per scope and pair of diversity measures,
    over the distinct models (`report_runs.distinct_models`) that logged both. Scopes: every evaluated model, and the CFG
    sweep with the students' exports (the models the world issue's criterion names)."""
    # Not the N study's exports: its N = 2 student is the beta sweep's seed-0 beta 15 (the
    # same config and seed: the same weights) under another name, so it would count twice.
    evaluated = [r for r in runs if r.target.endswith("MergedEvaluator")
                 and r.params.get("front") != SIDE_BY_SIDE and export_n(r) is None]  # fmt: skip
    # Each scope picks its runs first and then drops repeats of a model: deduplicating
    # first could keep a student's LERP-endpoint twin and drop the student from its scope.
    scopes = {
        "all models": distinct_models(evaluated),
        "CFG sweep + students": distinct_models(
            [r for r in evaluated if r.params.get("front", "").startswith("CFG(")
             or r.params.get("front") == STUDENT_EXPORTS]),
    }  # fmt: skip
    rows = []
    for scope, members in scopes.items():
        for i, (ka, na) in enumerate(D2_AXES):
            for kb, nb in D2_AXES[i + 1 :]:
                pairs = np.array([[r.metrics.get(ka, math.nan), r.metrics.get(kb, math.nan)]
                                  for r in members]).reshape(-1, 2)  # fmt: skip
                pairs = pairs[np.isfinite(pairs).all(axis=1)]
                if len(pairs) >= 3 and np.ptp(pairs[:, 0]) > 0 and np.ptp(pairs[:, 1]) > 0:
                    rho = float(stats.spearmanr(pairs[:, 0], pairs[:, 1]).statistic)
                    low, high = spearman_interval(pairs[:, 0], pairs[:, 1])
                    r_ = float(stats.pearsonr(pairs[:, 0], pairs[:, 1]).statistic)
                else:
                    rho = low = high = r_ = math.nan
                rows.append([scope, na, nb, len(pairs), rho, low, high, r_])
    return Table("Appendix D.2: diversity measures across models (Spearman with its 95 % "
                 "bootstrap interval over models)",
                 ["scope", "measure_a", "measure_b", "models", "spearman", "spearman_low",
                  "spearman_high", "pearson"], rows)  # fmt: skip


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
