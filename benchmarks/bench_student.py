"""Benchmark of the student's training step and of its inference cost (issue 8).

1. Per-step time breakdown of `DistillStudent.distill_step` + backward + AdamW step for the
   tiny default (TokenLM `tiny`, embedder preset `tiny`, random init: the cost does not
   depend on the weights) at B prompts x N generations on a fixed number of threads.
2. Inference cost (paper section 2.1: CFG doubles the inference cost): generation time of
   the student (plain sampling) vs the CFG teacher (gamma 3, cond + negative rows in one
   batched forward with one KV cache), same batch and length, and their ratio.

Usage: python benchmarks/bench_student.py [--threads 2] [--prompts 8] [--n 2] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from roofline import embed_flops, lm_decode_flops, lm_forward_flops, matmul_peak

from lightning_modules.student import DistillStudent
from suite.models.lm import SIZES, TokenLM
from suite.models.vit import AudioEmbedder, embedder_config
from suite.music.prompts import load_prompt_records, prompt_set
from suite.music.tokens import SEQ_LEN, VOCAB_SIZE
from suite.rollout import generate


def build(tmp: Path, args) -> DistillStudent:
    torch.manual_seed(0)
    TokenLM(VOCAB_SIZE, SEQ_LEN, **SIZES["tiny"]).save(tmp / "lm.pt")
    AudioEmbedder(embedder_config("tiny")).save(tmp / "emb.pt")
    m = DistillStudent(
        policy={"name": "music", "checkpoint": str(tmp / "lm.pt")},
        embedder=str(tmp / "emb.pt"),
        n_generations=args.n,
        beta=15.0,
        beta_warmup_steps=0,
    )
    m.setup("fit")
    return m


def prompts(b: int, seed: int, lines: list[str] | None = None) -> dict:
    """b training prompts (the policy encodes them; the text tower caches their vectors)."""
    lines = lines or [r["prompt"] for r in load_prompt_records(prompt_set("train"))]
    return {"prompt": [lines[(seed * b + i) % len(lines)] for i in range(b)]}


def bench_step(m: DistillStudent, args) -> dict[str, list[float]]:
    opt = m.configure_optimizers()
    rows: dict[str, list[float]] = {}
    # Read and parse the prompt file once, outside the timed step (the DataModule does it
    # once per run; reading it per step added ~0.25 s to "other").
    lines = [r["prompt"] for r in load_prompt_records(prompt_set("train"))]
    batches = [prompts(args.prompts, step, lines) for step in range(args.steps + 1)]
    for step, batch in enumerate(batches):  # step 0 warms up allocators and kernels
        t0 = time.perf_counter()
        loss, stats = m.distill_step(batch)
        t1 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if step == 0:
            continue
        times = {k[5:]: v for k, v in stats.items() if k.startswith("time/")}
        times["other (loss, logging)"] = (t1 - t0) - sum(times.values())
        times["backward + AdamW"] = t2 - t1
        times["total"] = t2 - t0
        for k, v in times.items():
            rows.setdefault(k, []).append(v)
    return rows


def bench_inference(m: DistillStudent, args) -> dict[str, float]:
    cond = m.encode(m.policy, prompts(args.prompts, 99)["prompt"])
    neg = m.negative(m.teacher, "Bad audio quality.")
    allowed = m.teacher.allowed_mask()
    out: dict[str, list[float]] = {"student (plain)": [], "teacher (CFG, gamma 3)": []}
    for rep in range(args.steps + 1):
        t0 = time.perf_counter()
        generate(m.policy, cond, args.n, temperature=0.99, allowed=allowed)
        t1 = time.perf_counter()
        generate(m.teacher, cond, args.n, temperature=0.99, gamma=3.0, neg_cond=neg,
                 allowed=allowed)  # fmt: skip
        t2 = time.perf_counter()
        if rep:
            out["student (plain)"].append(t1 - t0)
            out["teacher (CFG, gamma 3)"].append(t2 - t1)
    return {k: statistics.median(v) for k, v in out.items()}


def phase_flops(m: DistillStudent, args) -> dict[str, float]:
    """Matmul FLOPs of the timed phases (render and the loss have none worth counting)."""
    lm = m.student
    gens = args.prompts * args.n
    config = m._need("embedder").config
    clips = 2  # a 6-s piece is two 3-s clips of the tiny E
    student = lm_forward_flops(lm, gens)
    flops = {
        "sampling": lm_decode_flops(lm) * gens * lm.seq_len,
        "teacher": lm_forward_flops(lm, 2 * gens),  # conditional + negative rows
        "student": student,
        "embed": embed_flops(config, gens, clips),
        "backward + AdamW": 2 * student,  # the backward of a matmul costs two of its forwards
    }
    flops["total"] = sum(flops.values())
    return flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        m = build(Path(tmp), args)
    n_params = sum(p.numel() for p in m.student.parameters())
    print(
        f"tiny student: {n_params / 1e6:.2f} M parameters, L={SEQ_LEN}, V={VOCAB_SIZE}; "
        f"{args.prompts} prompts x N={args.n}; {args.threads} threads; "
        f"median (min-max) over {args.steps} steps after one warm-up"
    )
    rows = bench_step(m, args)
    total = statistics.median(rows["total"])
    peak = matmul_peak()
    flops = phase_flops(m, args)
    print(f"fp32 matmul peak (512^3, {args.threads} thread(s)): {peak / 1e9:.1f} GFLOP/s; "
          "'of peak': the phase's matmul FLOPs (benchmarks/roofline.py) per second over it")  # fmt: skip
    print(f"\n{'phase':<24}{'median s':>10}{'min':>9}{'max':>9}{'share':>8}{'GFLOP':>8}{'of peak':>9}")
    for k, v in rows.items():
        med = statistics.median(v)
        f = flops.get(k)
        roof = f"{f / 1e9:>8.1f}{f / med / peak:>9.1%}" if f else f"{'':>8}{'':>9}"
        print(f"{k:<24}{med:>10.3f}{min(v):>9.3f}{max(v):>9.3f}{med / total:>8.0%}{roof}")
    inf = bench_inference(m, args)
    print(f"\n{'generation (' + str(args.prompts * args.n) + ' pieces)':<28}{'median s':>10}")
    for k, v in inf.items():
        print(f"{k:<28}{v:>10.3f}")
    ratio = inf["teacher (CFG, gamma 3)"] / inf["student (plain)"]
    print(f"{'CFG / student ratio':<28}{ratio:>10.2f}x")


if __name__ == "__main__":
    main()
