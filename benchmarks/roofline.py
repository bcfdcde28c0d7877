"""The matmul roofline of the benchmarks: this machine's fp32 matmul peak, measured in the
same run, and the matmul FLOPs of the suite's models, so a phase's time can be read as a
share of what the machine allows.

FLOPs count the matrix products only (a multiply-add is 2): linear layers, attention
scores and mixing, convolutions. Layer norms, activations, softmax, sampling and the
renderer are not counted, so a phase's share of the peak is an upper bound on how much of
its time is spent in matmuls at full speed.
"""

from __future__ import annotations

import time

import torch


def matmul_peak(size: int = 512, reps: int = 5) -> float:
    """fp32 matmul FLOP/s of this machine at the current thread count (best of reps)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _layer_flops(d: int, f: int, keys: float) -> float:
    """One TokenLM layer for one query: qkv, output and MLP matmuls, attention over `keys`."""
    return 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * f + 2 * 2 * keys * d


def lm_decode_flops(model) -> float:
    """FLOPs of one decoding step of a `TokenLM` for one row, averaged over the seq_len - 1
    steps (the step feeding token n attends to P + n + 1 cached positions), with the head."""
    mean_keys = model.n_prefix + model.seq_len / 2
    per_layer = _layer_flops(model.d_model, model.d_ff, mean_keys)
    return model.n_layers * per_layer + 2 * model.d_model * model.vocab_size


def lm_forward_flops(model, rows: int, attention: bool = True) -> float:
    """FLOPs of one teacher-forced `TokenLM` forward over `rows` whole sequences (causal
    attention: position i attends to i + 1 keys; `attention=False` leaves it out) and the
    head at the seq_len positions that give logits. The prefix projection is not counted."""
    positions = model.n_prefix + model.seq_len - 1
    mean_keys = (positions + 1) / 2 if attention else 0
    per_position = model.n_layers * _layer_flops(model.d_model, model.d_ff, mean_keys)
    head = 2 * model.d_model * model.vocab_size * model.seq_len
    return rows * (positions * per_position + head)


def embed_flops(config, pieces: int, clips_per_piece: int = 1, attention: bool = True) -> float:
    """FLOPs of the embedder E (`suite.models.vit.EmbedderConfig`) on `pieces` pieces of
    `clips_per_piece` clips each: per clip the STFT as a convolution (real and imaginary
    kernels), the mel matrix, the patch convolution and the ViT layers (`attention=False`
    leaves their attention out); per piece the projection of the clips' mean."""
    enc, vit = config.encoder, config.encoder.vit
    mel = enc.mel
    frames = mel.num_frames(enc.clip_samples)
    bins = mel.n_fft // 2 + 1
    front = frames * (2 * 2 * bins * mel.n_fft + 2 * bins * mel.n_mels)
    grid_f = -(-mel.n_mels // vit.patch_freq)
    grid_t = -(-frames // vit.patch_time)
    n = grid_f * grid_t  # tokens per clip
    inner = vit.heads * vit.head_dim
    patch = 2 * n * vit.width * vit.patch_freq * vit.patch_time
    layer = (2 * n * vit.width * 3 * inner + 2 * n * inner * vit.width
             + 2 * 2 * n * vit.width * vit.ff_dim + 2 * 2 * n * n * inner * attention)  # fmt: skip
    clips = pieces * clips_per_piece
    return clips * (front + patch + vit.depth * layer) + pieces * 2 * vit.width * config.out_dim
