"""Benchmark: rendering speed of the embedded music world (suite/music/render.py).

Prints a table of wall time and process CPU time for rendering batches of composed pieces.
CPU time is the figure to compare on a shared machine (wall time includes waiting for
cores other jobs hold). Usage: python benchmarks/music_render.py [--threads 2] [--batch 128]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from suite.music import composer, render, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    toks = np.stack(
        [
            tokens.encode(composer.compose(np.random.default_rng([0, i])).piece)
            for i in range(args.batch)
        ]
    )
    batch = torch.from_numpy(toks)
    render.render(batch[:4])  # build the tables once
    print("| batch | threads | audio s/piece | wall s | cpu s | cpu s per piece |")
    print("|---|---|---|---|---|---|")
    for _ in range(args.repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        audio = render.render(batch)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        print(
            f"| {args.batch} | {args.threads} | {audio.shape[1] / render.SAMPLE_RATE:.1f} | "
            f"{wall:.3f} | {cpu:.3f} | {cpu / args.batch * 1000:.2f} ms |"
        )


if __name__ == "__main__":
    main()
