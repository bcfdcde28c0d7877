"""Sampler throughput: plain vs CFG, KV cache vs recomputation, and a transformers peer.

Measures what CFG distillation buys (paper section 1: CFG doubles inference cost) on the
suite's `TokenLM` (suite/models/lm.py) behind the policy interface (`TokenLMPolicy`) with
`suite.sampling.sample`, the loop every policy is sampled by:

1. tokens/s of plain sampling and of CFG (gamma 3, one batched forward of 2B rows) at
   batch 1, 16, 64, and the CFG / plain time ratio;
2. the KV cache vs recomputing the whole sequence (prefix + tokens so far) at every step;
3. Hugging Face transformers' `generate` (do_sample, top_k=0, use_cache) on a randomly
   initialised GPT2LMHeadModel of the same width, depth, heads, MLP width and vocabulary,
   same batch and generation length, and the ratio ours / transformers.

Every row is the best of `--repeats` runs, interleaved so that load on a shared machine
hits all contenders alike; compare ratios within one run, not across runs. `--runs R`
repeats the whole measurement R times and prints each run's ratios and their median (the
figure to quote on a noisy machine).

4. The roofline: the fp32 matmul peak of this machine at the same thread count, measured in
   the same run (best of a few square matmuls), and the fraction of it our plain sampler
   reaches, counting the decode FLOPs per token (`roofline.lm_decode_flops`: the layers' matmuls at the
   mean cache length, attention scores and mixing, and the output head).

    python benchmarks/bench_sampling.py [--size tiny] [--threads 1] [--repeats 3] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch
from roofline import lm_decode_flops, matmul_peak

from suite.models.lm import SIZES, TokenLM
from suite.music.tokens import SEQ_LEN, VOCAB_SIZE
from suite.policies.music import TokenLMPolicy
from suite.sampling import sample


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


@torch.no_grad()
def sample_recompute(
    model: TokenLM, cond: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Baseline without a cache: a full forward over prefix + tokens so far at each step."""
    B, L = cond.shape[0], model.seq_len
    tokens = torch.zeros(B, L, dtype=torch.long)  # [B, L]
    for n in range(L):
        # tokens[:, n] is not read by logits[:, n]; it is a placeholder until sampled.
        logits = model(tokens[:, : n + 1], cond)[:, n]  # [B, V]
        tokens[:, n] = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
    return tokens


def build_gpt2(model: TokenLM):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=model.vocab_size,
        n_positions=model.seq_len + 1,
        n_embd=model.d_model,
        n_layer=model.n_layers,
        n_head=model.n_heads,
        n_inner=model.d_ff,
        bos_token_id=0,
        eos_token_id=None,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


@torch.no_grad()
def gpt2_generate(gpt2, batch: int, length: int) -> torch.Tensor:
    start = torch.zeros(batch, 1, dtype=torch.long)  # one BOS token, like our prefix
    return gpt2.generate(
        start,
        attention_mask=torch.ones_like(start),
        max_new_tokens=length,
        min_new_tokens=length,
        do_sample=True,
        top_k=0,
        use_cache=True,
        pad_token_id=0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-recompute", action="store_true", help="skip the no-cache baseline")
    parser.add_argument("--runs", type=int, default=1, help="whole measurements; prints medians")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    torch.manual_seed(0)

    model = TokenLM(vocab_size=VOCAB_SIZE, seq_len=SEQ_LEN, **SIZES[args.size]).eval()
    policy = TokenLMPolicy(model).eval()
    gpt2 = build_gpt2(model)
    L = model.seq_len
    gen = torch.Generator().manual_seed(0)
    batches = [int(b) for b in args.batches.split(",")]
    print(
        f"# {args.size}: {model.num_parameters() / 1e6:.2f}M params, V={VOCAB_SIZE}, L={L}, "
        f"d={model.d_model}, layers={model.n_layers}, heads={model.n_heads}; "
        f"threads={args.threads}, best of {args.repeats}; GPT-2 peer "
        f"{sum(p.numel() for p in gpt2.parameters()) / 1e6:.2f}M params"
    )
    # Warm-up (first-call allocations, lazy imports).
    sample(policy, policy.cond_from_vectors(torch.randn(2, model.cond_dim)), length=4, generator=gen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gpt2_generate(gpt2, 2, 4)

    peak = matmul_peak()
    flops = lm_decode_flops(model)
    print(f"# fp32 matmul peak (512^3, {args.threads} thread(s)): {peak / 1e9:.1f} GFLOP/s; "
          f"decode {flops / 1e6:.2f} MFLOP per token")  # fmt: skip
    tps = lambda t, B: B * L / t  # noqa: E731  (tokens per second of a batch's time)
    ratios: dict[int, dict[str, list[float]]] = {B: {"cfg": [], "hf": [], "roof": []} for B in batches}
    for run in range(args.runs):
        rows = measure(args, policy, model, gpt2, batches, gen)
        print()
        print(f"run {run + 1} of {args.runs}")
        print("| batch | plain tok/s | CFG tok/s | CFG/plain time | no-cache tok/s | cache speed-up "
              "| transformers tok/s | transformers time / ours | plain, share of matmul peak |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for B, t in rows:
            recompute = "n/a" if args.no_recompute else f"{tps(t['recompute'], B):,.0f}"
            speedup = "n/a" if args.no_recompute else f"{t['recompute'] / t['plain']:.1f}x"
            roof = tps(t["plain"], B) * flops / peak
            ratios[B]["cfg"].append(t["cfg"] / t["plain"])
            ratios[B]["hf"].append(t["hf"] / t["plain"])
            ratios[B]["roof"].append(roof)
            print(
                f"| {B} | {tps(t['plain'], B):,.0f} | {tps(t['cfg'], B):,.0f} | "
                f"{t['cfg'] / t['plain']:.2f} | {recompute} | {speedup} | "
                f"{tps(t['hf'], B):,.0f} | {t['hf'] / t['plain']:.2f}x | {roof:.1%} |"
            )
    if args.runs > 1:
        print()
        print(f"median of {args.runs} runs")
        print("| batch | CFG/plain time | transformers time / ours | plain, share of matmul peak |")
        print("|---:|---:|---:|---:|")
        for B in batches:
            r = ratios[B]
            print(f"| {B} | {statistics.median(r['cfg']):.2f} | {statistics.median(r['hf']):.2f}x | "
                  f"{statistics.median(r['roof']):.1%} |")  # fmt: skip


def measure(args, policy, model, gpt2, batches, gen) -> list[tuple[int, dict[str, float]]]:
    """One measurement: per batch, the best of `args.repeats` interleaved runs per contender."""
    L = model.seq_len
    rows = []
    for B in batches:
        vectors = torch.randn(B, model.cond_dim)
        cond = policy.cond_from_vectors(vectors)
        neg = policy.cond_from_vectors(torch.zeros(1, model.cond_dim))
        best = {"plain": float("inf"), "cfg": float("inf"), "recompute": float("inf"), "hf": float("inf")}
        contenders = {
            "plain": (sample, (policy, cond), {"generator": gen}),
            "cfg": (sample, (policy, cond), {"neg_cond": neg, "gamma": 3.0, "generator": gen}),
            "hf": (gpt2_generate, (gpt2, B, L), {}),
        }
        if not args.no_recompute:
            contenders["recompute"] = (sample_recompute, (model, vectors, gen), {})
        for _ in range(args.repeats):
            for name, (fn, fn_args, fn_kwargs) in contenders.items():
                best[name] = min(best[name], timed(fn, *fn_args, **fn_kwargs))
        rows.append((B, best))
    return rows


if __name__ == "__main__":
    main()
