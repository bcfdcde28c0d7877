"""Cost of the FAD and Vendi metrics (paper appendices D.4 and G) at evaluation sizes.

Prints a table: for embedding widths D = 192 / 512 and n = 1e3 / 1e4 / 1e5 feature rows,
- FAD: time to stream n generated rows in batches of 1000 (the reference side gets the
  same n) plus `compute()`, and the metric's state size: O(D^2), independent of n, unless
  `keep_features=True` (needed for `fad_inf`), which keeps every generated row (O(n D));
- Vendi: time of `VendiScore` over n / 8 prompt groups of 8 generations, fed 128 prompts
  per update (the suite's per-prompt use);
then one whole-set Vendi over n = 1000 embeddings, by the N x N kernel and by the D x D
dual (the functional's choice when D < N), which share their non-zero eigenvalues.

Memory is reported as the bytes held in metric states (torch's CPU allocator is not
visible to tracemalloc). Run: `python benchmarks/bench_metrics.py [--max-n 100000]`.
"""

from __future__ import annotations

import argparse
import time

import torch

from suite.metrics import FrechetAudioDistance, VendiScore
from suite.metrics import functional as F

BATCH_ROWS = 1000
PROMPTS_PER_UPDATE = 128
GROUP = 8


def state_bytes(metric: torch.nn.Module) -> int:
    """Bytes held in a torchmetrics metric's states (tensors and lists of tensors)."""
    total = 0
    for key in metric._defaults:
        value = getattr(metric, key)
        for v in value if isinstance(value, list) else [value]:
            total += v.numel() * v.element_size()
    return total


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def bench_fad(
    d: int, n: int, keep_features: bool, gen: torch.Generator
) -> tuple[float, float, int]:
    """(update seconds, compute seconds, state bytes) for n rows per side."""
    metric = FrechetAudioDistance(d, keep_features=keep_features)
    update_s = 0.0
    for start in range(0, n, BATCH_ROWS):
        rows = min(BATCH_ROWS, n - start)
        real = torch.randn(rows, d, generator=gen)
        fake = torch.randn(rows, d, generator=gen) * 1.1 + 0.05
        t0 = time.perf_counter()
        metric.update(real, real=True)
        metric.update(fake, real=False)
        update_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    value = metric.compute()
    compute_s = time.perf_counter() - t0
    assert torch.isfinite(value)
    return update_s, compute_s, state_bytes(metric)


def bench_vendi_groups(d: int, n: int, gen: torch.Generator) -> float:
    """Seconds for VendiScore over n / GROUP prompts of GROUP generations."""
    metric = VendiScore()
    prompts = n // GROUP
    elapsed = 0.0
    for start in range(0, prompts, PROMPTS_PER_UPDATE):
        b = min(PROMPTS_PER_UPDATE, prompts - start)
        emb = torch.randn(b, GROUP, d, generator=gen) + 0.2  # [B, N, D]
        t0 = time.perf_counter()
        metric.update(emb)
        elapsed += time.perf_counter() - t0
    assert torch.isfinite(metric.compute())
    return elapsed


def bench_vendi_whole(d: int, n: int, gen: torch.Generator) -> tuple[float, float, float]:
    """(kernel-side seconds, dual-side seconds, |difference| of the two Vendi scores)."""
    emb = torch.randn(n, d, generator=gen) + 0.2
    t0 = time.perf_counter()
    u = emb.double() / emb.double().norm(dim=1, keepdim=True)
    lam = torch.linalg.eigvalsh(u @ u.T / n)  # [n], the N x N kernel
    kernel = torch.exp(F.renyi_entropy(lam.unsqueeze(0), 1.0, size=max(n, d)))[0]
    kernel_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    dual = F.vendi_score(emb)  # D < N: eigen-solve of the D x D matrix
    dual_s = time.perf_counter() - t0
    return kernel_s, dual_s, abs(float(kernel - dual))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-n", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    sizes = [n for n in (1_000, 10_000, 100_000) if n <= args.max_n]

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); FAD batches of "
        f"{BATCH_ROWS} rows per side; Vendi groups of {GROUP}, {PROMPTS_PER_UPDATE} prompts/update"
    )
    header = (
        f"{'D':>4} {'n':>7} | {'FAD update':>10} {'FAD compute':>11} {'FAD state':>10} "
        f"{'keep (calc)':>11} | {'Vendi (n/8 groups)':>18}"
    )
    print(header)
    print("-" * len(header))
    for d in (192, 512):
        for n in sizes:
            upd, comp, nbytes = bench_fad(d, n, keep_features=False, gen=gen)
            keep_bytes = 2 * 8 * (d * d + d) + 16 + n * d * 8  # states + kept float64 rows
            vendi_s = bench_vendi_groups(d, n, gen)
            print(
                f"{d:>4} {n:>7} | {upd:>9.3f}s {comp:>10.3f}s {_fmt_bytes(nbytes):>10} "
                f"{_fmt_bytes(keep_bytes):>11} | {vendi_s:>17.3f}s"
            )
    # Measured (not computed) state size with keep_features, at the smallest n, as a check.
    _, _, kept = bench_fad(192, sizes[0], keep_features=True, gen=gen)
    print(f"measured FAD state with keep_features, D=192, n={sizes[0]}: {_fmt_bytes(kept)}")
    print()
    print(
        f"{'D':>4} {'n':>7} | {'Vendi whole set: N x N kernel':>29} {'D x D dual':>11} {'|diff|':>9}"
    )
    for d in (192, 512):
        k_s, d_s, diff = bench_vendi_whole(d, 1_000, gen)
        print(f"{d:>4} {1_000:>7} | {k_s:>28.3f}s {d_s:>10.3f}s {diff:>9.1e}")


if __name__ == "__main__":
    main()
