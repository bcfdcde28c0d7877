"""Flawed renditions of clean pieces: the preference task's (clean, flawed) pairs.

Since world version 3 the composer's flaws live in half-bar segments (DESIGN.md section 5);
`make_flawed` draws a flawed twin of a piece the same way: >= 1 of a bad recording, performance
flaws and wrong notes, inside a random subset of its segments (paper section 3.1's quality
axis, judged by the preference model).
"""

from __future__ import annotations

import torch

from suite.music import attributes as A
from suite.music import tokens as T
from suite.music.composer import N_SEGMENTS, SEGMENT
from suite.music.edits import with_recording


def is_clean(tokens: torch.Tensor) -> torch.Tensor:
    """`[B]` bool: every step recorded clean and played "ok"."""
    perf, rec = T.step_flaws(tokens)
    return ((rec == 0) & (perf == 0)).all(dim=1)


def flawed_segments(b: int, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """`[b, N_SEGMENTS]` bool: the half-bar segments a flawed rendition flaws, each with
    odds `p` and at least one per piece (since world version 3, flaws live in segments)."""
    seg = torch.rand(b, N_SEGMENTS, generator=generator) < p
    none = ~seg.any(dim=1)
    seg[none, torch.randint(0, N_SEGMENTS, (int(none.sum()),), generator=generator)] = True
    return seg


def recording_runs(segments: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`[b, N_STEPS]` bool: one burst of 2-4 steps inside each flagged segment
    (`segments` `[b, N_SEGMENTS]`), drawn like the composer's (`composer._flaw_segment`)."""
    b = segments.shape[0]
    length = torch.randint(2, 5, (b, N_SEGMENTS), generator=generator)
    start = (torch.rand(b, N_SEGMENTS, generator=generator) * (SEGMENT - length + 1)).long()
    seg = torch.arange(T.N_STEPS) // SEGMENT  # [S]: each step's segment
    offset = torch.arange(T.N_STEPS) % SEGMENT
    start, length = start[:, seg], length[:, seg]  # [b, S]
    return segments[:, seg] & (offset >= start) & (offset < start + length)


def make_flawed(tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A flawed rendition of each piece: >= 1 of {bad recording, performance flaws, wrong
    notes}, inside a random subset of its half-bar segments (as the composer's flaws).

    Random draws use `generator` (CPU) so that a seed fixes the pairs.
    """
    b = tokens.shape[0]
    out = tokens.clone().cpu()
    kinds = torch.rand(b, 3, generator=generator) < torch.tensor([0.5, 0.5, 0.4])
    none = ~kinds.any(dim=1)
    kinds[none, torch.randint(0, 3, (int(none.sum()),), generator=generator)] = True
    segments = flawed_segments(b, generator)  # [b, NSEG]
    in_seg = segments[:, torch.arange(T.N_STEPS) // SEGMENT]  # [b, S]
    # 1. recording: a burst of noisy / distorted / lo-fi steps per flawed segment, each
    # segment its own effect; 2. performance flaws at 20-40 % of the flawed segments' steps;
    # both live in the perf tokens (performance * N_REC + recording)
    pos = torch.as_tensor(T.track_positions("perf"))
    perf, rec = T.step_flaws(out)  # [b, S] each
    bad = torch.randint(1, len(A.RECORDINGS), (b, N_SEGMENTS), generator=generator)
    bad = bad[:, torch.arange(T.N_STEPS) // SEGMENT]  # [b, S]
    runs = recording_runs(segments, generator) & kinds[:, 0:1]
    rec = torch.where(runs, bad, rec)
    rate = 0.2 + 0.2 * torch.rand(b, 1, generator=generator)
    hit = (torch.rand(b, len(pos), generator=generator) < rate) & kinds[:, 1:2] & in_seg
    flaw = torch.randint(1, len(A.PERFORMANCE), (b, len(pos)), generator=generator)
    perf = torch.where(hit, flaw, perf)
    out[:, pos] = T.TYPE_RANGES["perf"][0] + perf * T.N_REC + rec
    # 3. wrong notes: a third of melody onsets moved a semitone up or down
    pos = torch.as_tensor(T.track_positions("melody"))
    start = T.TYPE_RANGES["melody"][0]
    local = out[:, pos] - start
    onset = (local >= 2) & (local < 2 + T.MEL_HIGH - T.MEL_LOW)
    pick = onset & (torch.rand(local.shape, generator=generator) < 0.35) & kinds[:, 2:3] & in_seg
    step = torch.where(torch.rand(local.shape, generator=generator) < 0.5, -1, 1)
    moved = (local + step).clamp(2, 1 + T.MEL_HIGH - T.MEL_LOW)
    out[:, pos] = torch.where(pick, start + moved, out[:, pos])
    # A piece without melody onsets may come out unchanged: record its flawed segments badly.
    same = (out == tokens.cpu()).all(dim=1)
    out[same] = with_recording(out[same], torch.where(in_seg, bad, 0)[same])
    return out.to(tokens.device)
