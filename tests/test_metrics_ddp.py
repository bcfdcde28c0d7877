"""Every suite metric under DDP: 2 CPU processes on gloo equal one process on the same data.

One spawn checks all metrics (process start-up dominates the cost). Each rank updates its
share of every data set (uneven shares, interleaved chunks), computes, and compares with
the single-process values computed in the parent before the spawn.
"""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from suite.metrics import (
    FrechetAudioDistance,
    MuLanScore,
    PairwiseDiversity,
    QualityScore,
    TokenEntropy,
    VendiScore,
    WinRate,
)

PROMPTS = ["calm piano", "fast techno", "sad strings"]
SAMPLES = 16


class _Mulan(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.audio = nn.Linear(SAMPLES, 4)
        self.text = nn.Embedding(len(PROMPTS), 4)

    def score(self, audio: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        idx = torch.tensor([PROMPTS.index(p) for p in prompts])
        return nn.functional.cosine_similarity(self.audio(audio), self.text(idx), dim=-1)


class _Preference(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(SAMPLES, 1)

    def score(self, audio: torch.Tensor) -> torch.Tensor:
        return self.head(audio).squeeze(-1)


def _data() -> dict[str, torch.Tensor | list[str]]:
    g = torch.Generator().manual_seed(123)
    a = torch.randn(41, generator=g, dtype=torch.float64)
    return {
        "emb": torch.randn(9, 3, 6, generator=g) + 0.3,  # [B, N, D]
        "real": torch.randn(40, 5, generator=g, dtype=torch.float64),
        "fake": torch.randn(31, 5, generator=g, dtype=torch.float64) * 1.3 + 0.2,
        "a": a,
        "b": a + 0.5 * torch.randn(41, generator=g, dtype=torch.float64) - 0.2,
        "audio": torch.rand(7, SAMPLES, generator=g) * 2 - 1,
        "prompts": [PROMPTS[i % 3] for i in range(7)],
        "logits": torch.randn(5, 4, 6, generator=g),
        "mask": torch.rand(5, 4, generator=g) > 0.3,
    }


def _metrics() -> dict:
    torch.manual_seed(7)  # identical scorer weights in every process
    mulan, pref = _Mulan(), _Preference()
    return {
        "div": PairwiseDiversity(),
        "vendi": VendiScore(q=1.0),
        "vendi_inf": VendiScore(q=math.inf),
        "fad": FrechetAudioDistance(5, keep_features=True),
        "win": WinRate(tie_margin=0.1, num_resamples=499),
        "mulan": MuLanScore(mulan),
        "quality": QualityScore(mulan, pref, omega=5.0),
        "entropy": TokenEntropy(),
    }


def _share(n: int, rank: int, world: int) -> slice:
    """Rank 0 gets the larger first share: uneven on purpose."""
    if world == 1:
        return slice(0, n)
    cut = (n * 3) // 5
    return slice(0, cut) if rank == 0 else slice(cut, n)


def _evaluate(rank: int, world: int) -> dict[str, float]:
    d, m = _data(), _metrics()
    s = lambda key: _share(len(d[key]), rank, world)  # noqa: E731
    for chunk in torch.split(d["emb"][s("emb")], 2):
        for key in ("div", "vendi", "vendi_inf"):
            m[key].update(chunk)
    for chunk in torch.split(d["fake"][s("fake")], 7):  # generated first: order must not matter
        m["fad"].update(chunk, real=False)
    m["fad"].update(d["real"][s("real")], real=True)
    m["win"].update(d["a"][s("a")], d["b"][s("b")])
    sl = s("audio")
    for key in ("mulan", "quality"):
        m[key].update(d["audio"][sl], d["prompts"][sl])
    m["entropy"].update(d["logits"][s("logits")], d["mask"][s("mask")])

    out = {
        key: m[key].compute().item()
        for key in ("div", "vendi", "vendi_inf", "mulan", "quality", "entropy")
    }
    out["fad"] = m["fad"].compute().item()
    out["fad_n_real"], out["fad_n_fake"] = m["fad"].n_real, m["fad"].n_fake
    out["fad_inf"] = m["fad"].fad_inf(num_steps=4, min_n=10).value
    out.update({f"win_{k}": v.item() for k, v in m["win"].compute().items()})
    out.update({f"quality_{k}": v.item() for k, v in m["quality"].compute_components().items()})
    return out


def _worker(rank: int, world: int, port: int, expected: dict[str, float]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        got = _evaluate(rank, world)
        for key, want in expected.items():
            ok = (math.isnan(want) and math.isnan(got[key])) or math.isclose(
                got[key], want, rel_tol=1e-9, abs_tol=1e-12
            )
            assert ok, f"rank {rank}: {key} = {got[key]!r} under DDP, {want!r} in one process"
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_all_metrics_equal_single_process_under_ddp():
    expected = _evaluate(rank=0, world=1)
    assert expected["fad_n_real"] == 40 and expected["fad_n_fake"] == 31
    mp.spawn(_worker, args=(2, _free_port(), expected), nprocs=2, join=True)
