"""Finished runs exported to CSV and read back: a reproduction assembled across machines.

The MLflow store is not in git and a long protocol (`sweeps/reproduce.sh`) may run its
steps on different machines. After each step, `export_runs` writes that step's finished
runs into a folder that is committed:

    <dir>/<step>.runs.csv      run_id, name, start_time, params, metrics, tags
                               (the last three as JSON objects: every param, final metric, tag)
    <dir>/<step>.history.csv   run_id, key, step, value: the students' evaluation histories
                               (every `eval/*` metric), for figure 1's training lines

`load_runs_dir(dir)` (each run once, even if two steps exported it) and
`trajectories_dir(dir, ...)` give back the `RunPoint`s and
`Trajectory`s `suite.report` draws from MLflow, so `python -m suite report --runs-dir DIR`
rebuilds every table and figure (not the listening page: its clips stay in MLflow) from the
committed CSVs alone. A step whose CSV exists is finished: the script skips it.

    python -m suite.report_store --experiment repro --sweep beta --step students --out docs/repro/steps

Files are written to a temporary name and renamed, so an interrupted export leaves none.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from suite.report_runs import (
    RunPoint,
    Trajectory,
    load_runs,
    mlflow_client,
    student_group,
    student_label,
)

RUN_COLUMNS = ("run_id", "name", "start_time", "params", "metrics", "tags")
HISTORY_COLUMNS = ("run_id", "key", "step", "value")
_STUDENT = "DistillStudent"


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_runs(tracking_uri: str, experiment: str, step: str, out: str | os.PathLike,
                sweep: str | None = None, tag: str | None = None,
                since_ms: int | None = None) -> tuple[Path, Path]:  # fmt: skip
    """Write `<out>/<step>.runs.csv` and `<step>.history.csv` for the experiment's finished
    runs (of one `sweep` tag, and/or one `tag` "KEY=VALUE", and/or started at or after
    `since_ms` (epoch ms: a rerun step keeps its new runs only), when given); returns the paths."""
    if not step or any(c in step for c in "/\\ "):
        raise ValueError(f"report_store: step must be a plain name (no '/', '\\', space), got {step!r}")
    client = mlflow_client(tracking_uri)
    runs = load_runs(client, experiment, sweep)
    if tag is not None:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise ValueError(f"report_store: tag must be KEY=VALUE, got {tag!r}")
        runs = [r for r in runs if r.tags.get(key) == value]
        if not runs:
            raise ValueError(f"report_store: no finished run of {experiment!r} is tagged {tag}")
    if since_ms is not None:
        runs = [r for r in runs if r.start_time >= since_ms]
        if not runs:
            raise ValueError(f"report_store: no finished run of {experiment!r} started since {since_ms} ms")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [[r.run_id, r.name, r.start_time, json.dumps(r.params, sort_keys=True),
             json.dumps(r.metrics, sort_keys=True), json.dumps(r.tags, sort_keys=True)]
            for r in runs]  # fmt: skip
    history = []
    for r in runs:
        if r.target.endswith(_STUDENT):
            for key in sorted(k for k in r.metrics if k.startswith("eval/")):
                history += [[r.run_id, key, m.step, m.value]
                            for m in client.get_metric_history(r.run_id, key)]  # fmt: skip
    runs_path, history_path = out / f"{step}.runs.csv", out / f"{step}.history.csv"
    _write_csv(history_path, HISTORY_COLUMNS, history)
    _write_csv(runs_path, RUN_COLUMNS, rows)  # last: its presence marks the step finished
    return runs_path, history_path


def load_runs_dir(folder: str | os.PathLike, sweep: str | None = None) -> list[RunPoint]:
    """Every run of every `*.runs.csv` in `folder` (optionally of one sweep tag), in start
    order; a missing or empty folder, or a malformed file, is a ValueError naming it."""
    folder = Path(folder)
    files = sorted(folder.glob("*.runs.csv")) if folder.is_dir() else []
    if not files:
        raise ValueError(f"report: no exported runs (*.runs.csv) in {folder}")
    rows = []
    for file in files:
        with file.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != RUN_COLUMNS:
                raise ValueError(f"report: {file} is not a runs export (columns {reader.fieldnames}, "
                                 f"expected {list(RUN_COLUMNS)})")  # fmt: skip
            for line, row in enumerate(reader, 2):
                try:
                    params, metrics, tags = (json.loads(row[k]) for k in ("params", "metrics", "tags"))
                except json.JSONDecodeError as err:
                    raise ValueError(f"report: {file}, line {line}: bad JSON: {err}") from err
                start = int(float(row["start_time"] or 0))
                rows.append((start, row["run_id"],
                             RunPoint(row["run_id"], row["name"], params, metrics, tags, start)))  # fmt: skip
    unique = {run_id: (start, run_id, point) for start, run_id, point in rows}  # a run in two
    runs = [p for _, _, p in sorted(unique.values(), key=lambda t: (t[0], t[1]))]  # steps: once
    if sweep is not None:
        runs = [r for r in runs if r.tags.get("sweep") == sweep]
        if not runs:
            raise ValueError(f"report: no exported run in {folder} is tagged sweep={sweep}")
    return runs


def trajectories_dir(folder: str | os.PathLike, runs: Sequence[RunPoint], quality: str,
                     diversity: str) -> list[Trajectory]:  # fmt: skip
    """The students' evaluation histories from `folder`'s `*.history.csv` files."""
    hist: dict[tuple[str, str], dict[int, float]] = {}
    for file in sorted(Path(folder).glob("*.history.csv")):
        with file.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                hist.setdefault((row["run_id"], row["key"]), {})[int(row["step"])] = float(row["value"])
    out = []
    for run in runs:
        if not run.target.endswith(_STUDENT):
            continue
        q, d = hist.get((run.run_id, quality), {}), hist.get((run.run_id, diversity), {})
        steps = sorted(set(q) & set(d))
        if steps:
            out.append(Trajectory(student_label(run), steps, [q[s] for s in steps],
                                  [d[s] for s in steps], student_group(run)))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suite.report_store",
                                     description="Export one step's finished MLflow runs to CSV.")  # fmt: skip
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--step", required=True, help="the file prefix, e.g. students")
    parser.add_argument("--out", default="docs/repro/steps")
    parser.add_argument("--sweep", default=None, help="only the runs tagged sweep=NAME")
    parser.add_argument("--tag", default=None, help="only the runs tagged KEY=VALUE")
    parser.add_argument("--since-ms", type=int, default=None,
                        help="only the runs started at or after this epoch time (ms)")  # fmt: skip
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    args = parser.parse_args(argv)
    try:
        paths = export_runs(args.tracking_uri, args.experiment, args.step, args.out, args.sweep,
                            args.tag, args.since_ms)  # fmt: skip
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
