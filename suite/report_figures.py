"""Figures of the Pareto report: the quality-diversity plane and lambda (paper figures 1, 3, 4).

- `plot_quality_diversity`: figures 1 and 3, diversity on x and quality on y: each student
  run's training trajectory (last evaluation marked) and every evaluated front (LERP over
  lambda, CFG over gamma, temperature; a single-point front such as the uniform merge as a
  cross);
- `plot_lambda`: figure 4, quality and diversity against lambda along a LERP front with the
  dashed diagonal between its endpoints (a linear trade-off), and against gamma for CFG.

Figures are matplotlib `Figure`s saved to a path (no pyplot state, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from suite.report_runs import Front, Trajectory


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
