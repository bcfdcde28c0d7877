"""MusicGen behind the policy interface: sampler speed against transformers, and KL memory.

1. Generation: the suite's sampler (`suite.sampling.sample`) on `MusicGenPolicy`, plain and
   with CFG (gamma 3, prompt + negative prompt as 2B rows in one forward per step) against
   transformers' own `MusicgenForConditionalGeneration.generate` (do_sample, plain and
   `guidance_scale=3`, which batches the prompt with the null condition the same way), same
   batch, same number of decoder steps, random weights (speed does not depend on them).
   Ratios are of times measured side by side in one run (median of `--repeats`).
2. Memory of one training step's scores (KL of eq. 2 + log-probs + backward) at a
   MusicGen-like shape, whole-sequence against `chunked_scores` (`--chunk` positions at a
   time), each in its own process: peak resident memory above the process's baseline
   (CPU), or `torch.cuda.max_memory_allocated` on a GPU, next to the formula's estimate.

    python benchmarks/bench_musicgen.py [--threads 1] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings

import torch

#: Random configs: the tests' tiny one, and a "medium" one (musicgen-small's vocabulary and
#: codebooks, a third of its depth and half its width) that a CPU still runs.
CONFIGS = {
    "tiny": dict(hidden=32, layers=2, heads=2, ffn=64, codes=64),
    "medium": dict(hidden=512, layers=8, heads=8, ffn=2048, codes=2048),
}
PROMPTS = ["80s pop track with bassy drums and synth", "Rock song.", "A calm piano piece",
           "Upbeat jazz with a walking bass"]  # fmt: skip


def build(name: str, frames: int, device: str):
    from suite.policies import musicgen as mg

    saved = dict(mg.TINY)
    mg.TINY.update(CONFIGS[name])
    try:
        model, tokenizer = mg.tiny_musicgen(seed=0)
    finally:
        mg.TINY.clear()
        mg.TINY.update(saved)
    policy = mg.MusicGenPolicy(model, tokenizer, frames=frames).to(device).eval()
    return policy, model.to(device).eval(), tokenizer


def median_times(fns: dict, repeats: int, device: str) -> dict[str, float]:
    """Median seconds of each function over `repeats` rounds, interleaved so that load on a
    shared machine hits every contender alike (one warm-up round first)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_sampling(name: str, batch: int, frames: int, repeats: int, device: str) -> dict:
    from suite.sampling import sample

    policy, model, tokenizer = build(name, frames, device)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    cond, neg = policy.encode_text(prompts), policy.encode_text(["Bad audio quality."])
    allowed = policy.allowed_mask()
    ids, mask = tokenizer(prompts, 64)
    ids, mask = ids.to(device), mask.to(device)
    steps = policy.seq_len

    def ours(gamma):
        gen = torch.Generator(device=device).manual_seed(0)
        return lambda: sample(policy, cond, neg_cond=neg if gamma != 1 else None, gamma=gamma,
                              allowed=allowed, generator=gen)  # fmt: skip

    def theirs(gamma):
        @torch.no_grad()
        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0,
                               guidance_scale=gamma if gamma != 1 else None,
                               max_new_tokens=steps, min_new_tokens=steps)  # fmt: skip
        return run

    t = median_times({"ours": ours(1.0), "ours_cfg": ours(3.0), "hf": theirs(1.0),
                      "hf_cfg": theirs(3.0)}, repeats, device)  # fmt: skip
    return {"config": name, "batch": batch, "steps": steps, **t}


def memory_child(name: str, rows: int, frames: int, chunk: int, device: str) -> dict:
    """One scoring pass + backward in this process; peak memory above the start."""
    import resource

    from suite.policies import musicgen as mg
    from suite.rollout import (
        chunked_scores,
        kl_to_teacher,
        masked,
        sequence_log_probs,
        teacher_logits,
    )

    teacher, _, _ = build(name, frames, device)
    student = teacher.fork()
    cond = teacher.encode_text([PROMPTS[i % len(PROMPTS)] for i in range(rows)])
    neg = teacher.encode_text(["Bad audio quality."])
    codes = torch.randint(0, teacher.codes, (rows, teacher.num_codebooks, frames), device=device)
    tokens = mg.delay(codes, teacher.pad)
    allowed = teacher.allowed_mask()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    if chunk:
        kl, logp, _ = chunked_scores(student, teacher, tokens, cond, gamma=3.0, neg_cond=neg,
                                     temperature=0.99, allowed=allowed, chunk=chunk)  # fmt: skip
    else:
        t = teacher_logits(teacher, tokens, cond, gamma=3.0, neg_cond=neg, allowed=allowed)
        s = masked(student(tokens, cond), allowed)
        kl, logp = kl_to_teacher(s, t, 0.99), sequence_log_probs(s, tokens, 0.99)
    (kl.mean() - logp.mean()).backward()
    seconds = time.perf_counter() - start
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"peak_mb": peak / 2**20, "seconds": seconds}


def estimate_mb(rows: int, K: int, positions: int, V: int, L: int, D: int) -> float:
    """The docstring formula of `chunked_scores`: 6 logit-sized fp32 tensors + hidden states."""
    return (6 * rows * K * positions * V * 4 + 3 * rows * L * D * 4) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=100, help="generation frames (50 = 1 s)")
    parser.add_argument("--memory-frames", type=int, default=500, help="training frames (10 s)")
    parser.add_argument("--memory-rows", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=50)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        name, rows, frames, chunk = args.child.split(",")
        print(json.dumps(memory_child(name, int(rows), int(frames), int(chunk), args.device)))
        return

    print(f"# device={args.device} threads={args.threads}; median of {args.repeats} runs after a warm-up")
    print("\n| config | batch | decoder steps | ours plain tok/s | ours CFG tok/s | CFG / plain time "
          "| transformers plain tok/s | transformers CFG tok/s | ours CFG vs transformers CFG |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in CONFIGS:
        r = bench_sampling(name, args.batch, args.frames, args.repeats, args.device)
        tps = lambda t, r=r: r["batch"] * r["steps"] * 4 / t  # noqa: E731  (4 codebooks per step)
        print(f"| {name} | {r['batch']} | {r['steps']} | {tps(r['ours']):,.0f} | {tps(r['ours_cfg']):,.0f} "
              f"| {r['ours_cfg'] / r['ours']:.2f} | {tps(r['hf']):,.0f} | {tps(r['hf_cfg']):,.0f} "
              f"| {r['hf_cfg'] / r['ours_cfg']:.2f}x |")  # fmt: skip

    print("\n| KL of one step, medium config | rows | steps | peak MB measured | MB by the formula | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    c = CONFIGS["medium"]
    L = args.memory_frames + 3
    for chunk in (0, args.chunk):
        cmd = [sys.executable, __file__, "--device", args.device, "--threads", str(args.threads),
               "--child", f"medium,{args.memory_rows},{args.memory_frames},{chunk}"]  # fmt: skip
        out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        est = estimate_mb(args.memory_rows, 4, chunk or L, c["codes"] + 1, L, c["hidden"])
        label = f"chunked ({chunk} positions)" if chunk else "whole sequence"
        print(f"| {label} | {args.memory_rows} | {L} | {out['peak_mb']:,.0f} | {est:,.0f} | {out['seconds']:.1f} |")


if __name__ == "__main__":
    main()
