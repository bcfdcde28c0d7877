"""Kernel-level measurements behind the decoding and training-step choices (issue 20).

1. The KV cache's gap cliff (`suite/models/kv_cache.py`): the keys' batched matmul (and a
   plain `.sum()`) over T = 86 filled positions of caches with room for `T_max` positions,
   small TokenLM shape (batch 64, 8 heads, Dh = 32, 6 layers cycled so the cache is not in
   cache). A gap of `T_max - T` positions follows every (row, head) block.
2. Causal attention of a teacher-forced forward, [128, 4, 170, 32]:
   `scaled_dot_product_attention` against batched matmuls with a mask.
3. The log-mel of 128 three-second clips, E's front end (n_fft 512) and a pitch-resolving
   one (n_fft 2048): nnAudio's convolution STFT (`MelConfig.stft="conv"`, what every
   committed model uses) against `torch.stft` (`stft="fft"`, same window and mel matrix).
4. `--compile`: `torch.compile` (inductor, dynamic shapes) of the tiny TokenLM's decoding
   step against eager, compile time included (slow: about a minute).

Medians of `--repeats` timings. Usage: python benchmarks/bench_kernels.py [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def gap_cliff(repeats: int) -> None:
    B, H, Dh, layers, T = 64, 8, 32, 6, 86
    q = torch.randn(B, H, 1, Dh)
    print("| room T_max | gap (positions) | keys bmm, us per layer | .sum(), us per layer |")
    print("|---:|---:|---:|---:|")
    for room in (86, 87, 88, 89, 90, 92, 100, 130, 170):
        kv = torch.randn(layers, B, H, room, Dh)  # [layers, B, H, T_max, Dh]

        def keys_bmm(kv=kv):
            for layer in range(layers):
                torch.matmul(q, kv[layer, :, :, :T].transpose(2, 3))

        def keys_sum(kv=kv):
            for layer in range(layers):
                kv[layer, :, :, :T].sum()

        bmm_us = median_time(keys_bmm, repeats) / layers * 1e6
        sum_us = median_time(keys_sum, repeats) / layers * 1e6
        print(f"| {room} | {room - T} | {bmm_us:,.0f} | {sum_us:,.0f} |")


def causal_attention(repeats: int) -> None:
    q, k, v = (torch.randn(128, 4, 170, 32) for _ in range(3))
    mask = torch.ones(170, 170, dtype=torch.bool).tril()

    def sdpa():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def masked_bmm():
        s = torch.matmul(q, k.transpose(-1, -2)) * 32**-0.5
        return torch.matmul(torch.softmax(s.masked_fill(~mask, float("-inf")), -1), v)

    diff = (sdpa() - masked_bmm()).abs().max().item()
    print(f"causal attention [128, 4, 170, 32]: scaled_dot_product_attention "
          f"{median_time(sdpa, repeats) * 1e3:.1f} ms, batched matmuls + mask "
          f"{median_time(masked_bmm, repeats) * 1e3:.1f} ms (max |diff| {diff:.1e})")  # fmt: skip


@torch.no_grad()
def log_mel(repeats: int) -> None:
    """E's front end (n_fft 512) and a pitch-resolving one (n_fft 2048, 192 mels) with
    nnAudio's convolution STFT (`MelConfig.stft="conv"`) and torch.stft ("fft")."""
    import dataclasses

    from suite.models.mel import LogMel, MelConfig

    clips = torch.randn(128, 48000) * 0.3
    for cfg in (MelConfig(), MelConfig(n_fft=2048, win_length=2048, n_mels=192)):
        conv, fft = LogMel(cfg), LogMel(dataclasses.replace(cfg, stft="fft"))
        diff = (conv.spectrogram(clips) - fft.spectrogram(clips)).abs().max().item()
        t_conv = median_time(lambda m=conv: m.spectrogram(clips), repeats)
        t_fft = median_time(lambda m=fft: m.spectrogram(clips), repeats)
        print(f"log-mel of 128 x 3 s, n_fft {cfg.n_fft}, {cfg.n_mels} mels: nnAudio (convolution "
              f"STFT) {t_conv * 1e3:.1f} ms, torch.stft {t_fft * 1e3:.1f} ms ({t_fft / t_conv:.2f}x; "
              f"max |diff| {diff:.1e}, log domain)")  # fmt: skip


@torch.no_grad()
def compiled_step() -> None:
    from suite.models.lm import SIZES, TokenLM
    from suite.music.tokens import SEQ_LEN, VOCAB_SIZE

    torch.manual_seed(0)
    lm = TokenLM(VOCAB_SIZE, SEQ_LEN, **SIZES["tiny"]).eval()
    cond = torch.randn(64, lm.cond_dim)

    def run(step):
        cache, logits = lm.start(cond)
        for _ in range(SEQ_LEN - 1):
            logits = step(logits.argmax(-1), cache)

    compiled = torch.compile(lm.step, dynamic=True)
    start = time.perf_counter()
    run(compiled)
    first = time.perf_counter() - start
    eager = median_time(lambda: run(lm.step), 3)
    again = median_time(lambda: run(compiled), 3)
    print(f"decoding step, tiny, batch 64, {SEQ_LEN - 1} steps: eager {eager:.3f} s, compiled "
          f"{again:.3f} s after a first run of {first:.1f} s (compilation included)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {args.threads} thread(s), medians of {args.repeats}\n")
    gap_cliff(args.repeats)
    print()
    causal_attention(args.repeats)
    log_mel(args.repeats)
    if args.compile:
        compiled_step()


if __name__ == "__main__":
    main()
