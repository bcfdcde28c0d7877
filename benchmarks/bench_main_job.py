"""Benchmark of the main job's training steps as a user runs them (issue 20: the main job's fit
on 2 cores), one process with N threads against DDP over gloo with one thread per process.

Each contender runs `python -m suite fit --config conf/beta15.yaml` for `--steps` training
steps (no evaluation, nothing exported where it would be read: a temporary MLflow store,
checkpoint folder and export path) with the GLOBAL batch of the main job, 32 prompts x 2
generations: one process holds all 32 prompts; under `trainer=ddp_cpu` each of the two
ranks holds 16 and the REINFORCE baseline is taken over the global batch (the same
objective, eq. 5; each rank draws its own random stream, so the samples differ). The
seconds per training step come from the timestamps of the `train/loss` values the run
logged (every step), from step `--skip` on, so start-up, process spawn and the first steps'
warm-up are left out. Contenders are interleaved, `--runs` times each; the table gives
every run and the median.

Usage: python benchmarks/bench_main_job.py [--steps 40] [--skip 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONTENDERS = {
    "1 process x 2 threads, batch 32": ["torch_threads=2"],
    "DDP 2 processes x 1 thread, batch 16 + 16": [
        "trainer=ddp_cpu",
        "torch_threads=1",
        "data.batch_size=16",
    ],
}


def run_fit(extra: list[str], steps: int, tmp: Path) -> list[tuple[int, int]]:
    """Run the main job for `steps` steps; return (step, timestamp ms) of each train/loss."""
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp / 'mlflow.db'}"
    cmd = [
        sys.executable, "-m", "suite", "fit", "--config", "conf/beta15.yaml", *extra,
        f"trainer.max_steps={steps}", "trainer.log_every_n_steps=1", f"eval_every={10 * steps}",
        "validate_first=false", "trainer.enable_progress_bar=false", "experiment=bench",
        f"paths.ckpt_dir={tmp / 'ckpt'}", f"model.export_path={tmp / 'student.safetensors'}", f"hydra.run.dir={tmp / 'hydra'}",
    ]  # fmt: skip
    env = dict(os.environ, MLFLOW_TRACKING_URI=store)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_main_job: {' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("bench").experiment_id])
    history = client.get_metric_history(run.info.run_id, "train/loss")
    return sorted((m.step, m.timestamp) for m in history)


def seconds_per_step(points: list[tuple[int, int]], skip: int) -> float:
    kept = [(s, t) for s, t in points if s >= skip]
    if len(kept) < 2:
        raise SystemExit(f"bench_main_job: fewer than 2 logged steps after step {skip}")
    (s0, t0), (s1, t1) = kept[0], kept[-1]
    return (t1 - t0) / 1000 / (s1 - s0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--skip", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.steps <= args.skip + 1:
        raise SystemExit(
            f"bench_main_job: --steps ({args.steps}) must exceed --skip + 1 ({args.skip + 1})"
        )
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for r in range(args.runs):
        for name, extra in CONTENDERS.items():
            with tempfile.TemporaryDirectory() as tmp:
                sec = seconds_per_step(run_fit(extra, args.steps, Path(tmp)), args.skip)
            times[name].append(sec)
            print(f"run {r + 1}: {name}: {sec:.3f} s/step", flush=True)
    ref = statistics.median(times[next(iter(CONTENDERS))])
    print(
        f"\n# main job, steps {args.skip}-{args.steps - 1}, medians of {args.runs} interleaved runs\n"
    )
    print("| contender | s / step, each run | median | vs 1 process |")
    print("|---|---|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {', '.join(f'{t:.2f}' for t in ts)} | {med:.2f} | {med / ref:.2f}x |")


if __name__ == "__main__":
    main()
