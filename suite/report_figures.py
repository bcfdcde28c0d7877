"""Figures of the Pareto report: the quality-diversity plane and lambda (paper figures 1, 3, 4).

- `plot_quality_diversity`: figures 1 and 3, diversity on x and quality on y: each student
  group's training trajectory (last evaluation marked; validation prompts), the students'
  exports on the test prompts (mean over seeds) and every evaluated front (LERP over
  lambda, CFG over gamma, temperature; a single-point front such as the uniform merge as a
  cross);
- `plot_lambda`: figure 4, quality and diversity against lambda along a LERP front with the
  dashed diagonal between its endpoints (a linear trade-off), and against gamma for CFG.

Both draw the intervals the tables give (one seed is an anecdote): a student trained at
several seeds is one line, the mean over its seeds at the evaluations they share, with its
seeds faint behind it and the 95 % t-interval over seeds on both axes at its last point; an
evaluated model carries the 95 % bootstrap interval over prompts its run logged
(`<metric>_ci_low` / `_ci_high`) on both axes.

Figures are matplotlib `Figure`s saved to a path (no pyplot state, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from suite.report_runs import Front, RunPoint, Trajectory
from suite.report_tables import mean_interval


def _figure(width: float, height: float, cols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    axes = [fig.add_subplot(1, cols, i + 1) for i in range(cols)]
    return fig, axes


def _ci(run: RunPoint, metric: str) -> tuple[float, float]:
    """(below, above) half-widths of the run's bootstrap interval for `metric` (0 if absent)."""
    value = run.metrics.get(metric)
    low, high = run.metrics.get(f"{metric}_ci_low"), run.metrics.get(f"{metric}_ci_high")
    if value is None or low is None or high is None or not np.isfinite([low, high]).all():
        return 0.0, 0.0
    return max(value - low, 0.0), max(high - value, 0.0)


def _errors(runs: Sequence[RunPoint], metric: str) -> np.ndarray | None:
    """`[2, k]` error bars for matplotlib (below, above), or None when no run has an interval."""
    bars = np.array([_ci(r, metric) for r in runs], dtype=np.float64).reshape(-1, 2).T
    return bars if bars.any() else None


def seed_groups(trajs: Sequence[Trajectory]) -> dict[str, list[Trajectory]]:
    """Trajectories grouped by their student group (beta, N), in first-seen order."""
    groups: dict[str, list[Trajectory]] = {}
    for traj in trajs:
        groups.setdefault(traj.group or traj.name, []).append(traj)
    return groups


def mean_trajectory(members: Sequence[Trajectory]) -> Trajectory:
    """The seeds' mean at the evaluation steps every seed has."""
    steps = sorted(set.intersection(*(set(t.steps) for t in members)))
    at = [dict(zip(t.steps, zip(t.diversity, t.quality))) for t in members]
    div = [float(np.mean([a[s][0] for a in at])) for s in steps]
    qual = [float(np.mean([a[s][1] for a in at])) for s in steps]
    name = members[0].group or members[0].name
    return Trajectory(name, steps, qual, div, name)


def _plot_students(ax, trajs: Sequence[Trajectory]) -> None:
    for group, members in seed_groups(trajs).items():
        if len(members) == 1:
            traj = members[0]
            line = ax.plot(traj.diversity, traj.quality, "-", alpha=0.5, lw=1)[0]
            ax.plot(traj.diversity[-1:], traj.quality[-1:], "o", ms=8, color=line.get_color(),
                    label=f"{traj.name} (training)")  # fmt: skip
            ax.plot(traj.diversity[:-1], traj.quality[:-1], ".", color=line.get_color(), alpha=0.5)
            continue
        mean = mean_trajectory(members)
        line = ax.plot(mean.diversity, mean.quality, "-", alpha=0.7, lw=1.2)[0]
        color = line.get_color()
        for traj in members:  # each seed, faint
            ax.plot(traj.diversity, traj.quality, "-", color=color, alpha=0.15, lw=0.8)
        if not mean.steps:  # the seeds share no evaluation step: nothing to average
            continue
        ax.plot(mean.diversity[:-1], mean.quality[:-1], ".", color=color, alpha=0.5)
        # The interval over seeds at the line's last point: the last step they all evaluated.
        last = mean.steps[-1]
        at = [dict(zip(t.steps, zip(t.diversity, t.quality)))[last] for t in members]
        d, d_lo, d_hi = mean_interval([a[0] for a in at])
        q, q_lo, q_hi = mean_interval([a[1] for a in at])
        ax.errorbar([d], [q], xerr=[[d - d_lo], [d_hi - d]], yerr=[[q - q_lo], [q_hi - q]],
                    fmt="o", ms=8, color=color, capsize=3,
                    label=f"{group} (training, {len(members)} seeds, 95 % t-interval)")  # fmt: skip


def seed_means(exports: dict[str, Sequence[RunPoint]], quality: str, diversity: str
               ) -> dict[str, tuple[tuple[float, float, float], tuple[float, float, float], int]]:  # fmt: skip
    """Per beta: (diversity mean, low, high), (quality mean, low, high) over the seeds'
    exports (t-interval), and the number of seeds; betas without both metrics are left out."""
    out = {}
    for beta, runs in exports.items():
        runs = [r for r in runs if np.isfinite([r.metrics.get(quality, np.nan),
                                                 r.metrics.get(diversity, np.nan)]).all()]  # fmt: skip
        if runs:
            out[beta] = (mean_interval([r.metrics[diversity] for r in runs]),
                         mean_interval([r.metrics[quality] for r in runs]), len(runs))  # fmt: skip
    return out


def _bar(mean: float, low: float, high: float) -> list[list[float]]:
    return [[0.0], [0.0]] if not np.isfinite([low, high]).all() else [[mean - low], [high - mean]]


def plot_quality_diversity(
    path: Path, trajs: Sequence[Trajectory], fronts_: Sequence[Front], quality: str, diversity: str,
    exports: dict[str, Sequence[RunPoint]] | None = None,
) -> None:
    """Figures 1 and 3: diversity on x, quality on y, with the intervals of the runs.
    `exports`: the students' exports on the test prompts by beta (`student_exports`)."""
    fig, (ax,) = _figure(8.0, 5.5)
    _plot_students(ax, trajs)
    for beta, (d, q, n) in seed_means(exports or {}, quality, diversity).items():
        ax.errorbar([d[0]], [q[0]], xerr=_bar(*d), yerr=_bar(*q), fmt="D", ms=7, capsize=3,
                    mfc="none", mew=1.8, label=f"student beta={beta} (test prompts, {n} seeds)")  # fmt: skip
    for front in fronts_:
        runs = [r for r in front.runs if quality in r.metrics and diversity in r.metrics]
        xy = front.xy(quality, diversity)
        if len(xy) == 0:
            continue
        xerr, yerr = _errors(runs, diversity), _errors(runs, quality)
        if front.varies is None:
            ax.errorbar(xy[:, 0], xy[:, 1], xerr=xerr, yerr=yerr, fmt="x", ms=11, mew=2.5,
                        capsize=2, label=front.name)  # fmt: skip
        else:
            ax.errorbar(xy[:, 0], xy[:, 1], xerr=xerr, yerr=yerr, fmt="-o", ms=3.5, lw=1.5,
                        elinewidth=0.7, capsize=1.5, label=f"{front.name} ({front.varies})")  # fmt: skip
    ax.set_xlabel(f"diversity ({diversity})")
    ax.set_ylabel(f"quality ({quality})")
    title = "Quality-diversity trade-off (figures 1 and 3)"
    ax.set_title(f"{title}\nbars: 95 % intervals (models: over prompts; students: over seeds)",
                 fontsize=10)  # fmt: skip
    ax.grid(alpha=0.3)
    # Beside the axes, not on them: with a dozen fronts no corner of the plot is empty.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")


def _against(ax, front: Front, metric: str, label: str, diagonal: bool) -> None:
    runs = [r for r in front.runs if metric in r.metrics]
    x = np.array([r.value(front.varies) for r in runs])
    y = np.array([r.metrics[metric] for r in runs])
    ax.errorbar(x, y, yerr=_errors(runs, metric), fmt="-o", ms=4, capsize=2, label=front.name)
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
