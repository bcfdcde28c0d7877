"""The recording quality lives in the steps (music world version 2, DESIGN.md section 5):
no header token announces a bad recording, bursts of badly recorded steps are spread
through flawed pieces, the renderer applies an effect only where the steps say so, and
the oracle's quality falls with the share of badly recorded steps."""

from __future__ import annotations

import numpy as np
import torch

from suite.music import attributes as A
from suite.music import composer as C
from suite.music import oracle as O
from suite.music import render as R
from suite.music import tokens as T
from suite.music.edits import with_recording


def _pieces(n: int, seed: int = 5) -> list[C.Composition]:
    return [C.compose(np.random.default_rng([seed, i])) for i in range(n)]


def test_no_header_position_carries_the_recording():
    assert "recording" not in A.HEADER_NAMES and "recording" in A.ATTRIBUTE_NAMES
    assert T.HEADER_LEN == len(A.ATTRIBUTE_NAMES) - 1
    assert "recording" not in T.POSITION_TYPES
    assert T.TYPE_RANGES["perf"][1] - T.TYPE_RANGES["perf"][0] == len(A.PERFORMANCE) * len(A.RECORDINGS)


def test_recording_round_trips_per_step_and_names_the_piece():
    comps = _pieces(200)
    bursty = 0
    for comp in comps:
        dec = T.decode(T.encode(comp.piece))
        assert dec.n_invalid == 0 and dec.rec == comp.piece.rec and dec.perf == comp.piece.perf
        assert dec.attrs["recording"] == comp.piece.attrs["recording"]
        bad = np.array(comp.piece.rec) != 0
        if bad.any():
            bursty += 1
            assert comp.flaws["recording"] == bad.sum()
            assert not bad.all() or len(set(comp.piece.rec)) == 1
            assert comp.piece.attrs["recording"] == A.RECORDINGS[np.bincount(comp.piece.rec)[1:].argmax() + 1]
        else:
            assert comp.piece.attrs["recording"] == "clean" and "recording" not in comp.flaws
    assert 0.1 < bursty / len(comps) < 0.35  # ~ a third flawed x 60 % with a recording flaw
    starts = [int(np.flatnonzero(np.array(c.piece.rec))[0]) for c in comps if any(c.piece.rec)]
    assert len(set(starts)) >= 8  # bursts start all over the piece, not at one position


def test_piece_recording_is_the_most_frequent_flaw():
    assert T.piece_recording([0] * T.N_STEPS) == "clean"
    rec = [0] * 20 + [2] * 5 + [3] * 7
    assert T.piece_recording(rec) == "lo-fi"
    assert T.piece_recording([1, 2] + [0] * 30) == "noisy"  # a tie goes to RECORDINGS order


def test_asking_for_a_recording_by_name_records_bursts_of_it():
    attrs = C.sample_attributes(np.random.default_rng(0), genre="rock")
    comp = C.compose(np.random.default_rng(1), {**attrs, "recording": "lo-fi"}, flawed=False)
    rec = np.array(comp.piece.rec)
    assert comp.piece.attrs["recording"] == "lo-fi" and (rec != 0).any()
    assert set(rec[rec != 0].tolist()) == {A.RECORDINGS.index("lo-fi")}


def test_with_recording_changes_only_the_recording_part():
    toks = torch.from_numpy(np.stack([T.encode(c.piece) for c in _pieces(8)]))
    perf0, _ = T.step_flaws(toks)
    out = with_recording(toks, torch.full((8,), 2))
    perf1, rec1 = T.step_flaws(out)
    assert torch.equal(perf0, perf1) and (rec1 == 2).all()
    other = torch.ones(T.SEQ_LEN, dtype=torch.bool)
    other[torch.as_tensor(T.track_positions("perf"))] = False
    assert torch.equal(out[:, other], toks[:, other])
    per_step = torch.zeros(8, T.N_STEPS, dtype=torch.long)
    per_step[:, 5:9] = 3
    assert torch.equal(T.step_flaws(with_recording(toks, per_step))[1], per_step)


def test_the_renderer_records_badly_only_the_flagged_steps():
    attrs = C.sample_attributes(np.random.default_rng(2), genre="rock")
    attrs["tempo"] = A.TEMPO_NAMES[0]  # the slowest tempo: one loop fills the 6 s exactly
    piece = C.compose(np.random.default_rng(3), attrs, flawed=False).piece
    clean = torch.from_numpy(T.encode(piece))[None]
    rec = torch.zeros(1, T.N_STEPS, dtype=torch.long)
    rec[0, 8:16] = A.RECORDINGS.index("distorted")
    a, b = R.render(clean)[0], R.render(with_recording(clean, rec))[0]
    spb = R.AUDIO_SAMPLES // T.N_STEPS
    assert torch.equal(a[: 8 * spb], b[: 8 * spb]) and torch.equal(a[16 * spb :], b[16 * spb :])
    assert (a[8 * spb : 16 * spb] - b[8 * spb : 16 * spb]).abs().mean() > 0.05


def test_oracle_quality_falls_with_the_share_of_badly_recorded_steps():
    piece = C.compose(np.random.default_rng(4), flawed=False).piece
    toks = torch.from_numpy(T.encode(piece))[None]
    scores = []
    for k in (0, 4, 8, 16):
        rec = torch.zeros(1, T.N_STEPS, dtype=torch.long)
        rec[0, :k] = 1
        judged = O.judge(with_recording(toks, rec)[0])
        assert abs(judged.flaws["recording"] - k / T.N_STEPS) < 1e-9
        scores.append(judged.quality)
    assert scores[0] > scores[1] > scores[2] > scores[3]
    assert abs(scores[1] / scores[0] - (1 - 1.5 * 4 / 32)) < 1e-6
