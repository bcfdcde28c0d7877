"""The benchmarks' FLOP counts (benchmarks/roofline.py) against torch's own FlopCounterMode,
which counts the matmuls actually dispatched (not the CPU attention kernel, so the checks
leave attention out where the model calls scaled_dot_product_attention)."""

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from roofline import embed_flops, lm_decode_flops, lm_forward_flops  # noqa: E402

from suite.models.lm import TokenLM  # noqa: E402
from suite.models.vit import AudioEmbedder, embedder_config  # noqa: E402


def counted(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_decode_flops_are_the_dispatched_matmuls_of_every_step():
    m = TokenLM(50, 20, d_model=32, n_layers=2, n_heads=4, d_ff=64, n_prefix=3).eval()
    tokens = torch.randint(0, 50, (4, 20))
    with torch.no_grad():
        cache, _ = m.start(torch.randn(4, 384))

    def steps():
        for n in range(19):
            m.step(tokens[:, n], cache)

    # The steps' attention is two bmm calls, which the counter sees: an exact match.
    assert counted(steps) == lm_decode_flops(m) * 4 * 19


def test_forward_flops_without_attention_match_the_counter():
    m = TokenLM(50, 20, d_model=32, n_layers=2, n_heads=4, d_ff=64, n_prefix=3).eval()
    tokens, cond = torch.randint(0, 50, (4, 20)), torch.randn(4, 384)
    prefix = 2 * 384 * 3 * 32 * 4  # cond_proj, which lm_forward_flops leaves out
    assert counted(lambda: m(tokens, cond)) - prefix == lm_forward_flops(m, 4, attention=False)
    assert lm_forward_flops(m, 4) > lm_forward_flops(m, 4, attention=False)


def test_embed_flops_without_attention_match_the_counter():
    e = AudioEmbedder(embedder_config("tiny")).eval()
    # two 6-s pieces = four 3-s clips of the tiny E
    assert counted(lambda: e(torch.randn(2, 96000))) == embed_flops(
        e.config, 2, clips_per_piece=2, attention=False
    )
