"""Musically aware distance between two pieces (DESIGN.md sections 4 and 5).

The paper judges the diversity of generations (section 3.1, appendix E: side-by-side
diversity); the oracle's stand-in is `distance`, in [0, 1], which compares header
attributes, melody intervals and onsets, harmony relative to each piece's key (so a
transposition is close), bass onsets and drum parts, instead of counting differing tokens.
"""

from __future__ import annotations

import numpy as np

from suite.music import attributes as A
from suite.music import tokens as T
from suite.music.oracle_features import Features, features, jaccard


def _interval_hist(notes: list[tuple[int, int, int]]) -> np.ndarray:
    pitches = [p for _, _, p in notes]
    iv = np.clip(np.diff(pitches), -7, 7) + 7 if len(pitches) > 1 else np.array([], int)
    hist = np.bincount(iv, minlength=15).astype(float)
    return hist / hist.sum() if hist.sum() else hist


def _onsets(notes, n=T.N_STEPS) -> set[int]:
    return {s for s, _, _ in notes if s < n}


def distance(tokens_a, tokens_b) -> float:
    """Musically aware distance in [0, 1] between two pieces (0 = the same music).

    Unlike token Hamming distance it does not grow just because notes are added: it
    compares normalised interval histograms, onset patterns (Jaccard), the harmony relative
    to each piece's key (so a transposition is close), drum parts and header attributes.
    """
    fa, fb = features(tokens_a), features(tokens_b)
    ha, hb = fa.decoded.attrs, fb.decoded.attrs
    tempo = abs(A.TEMPO_NAMES.index(ha["tempo"]) - A.TEMPO_NAMES.index(hb["tempo"])) / 5
    fifths = (7 * (A.KEYS.index(ha["key"]) - A.KEYS.index(hb["key"]))) % 12
    header = np.mean(
        [
            ha["genre"] != hb["genre"],
            ha["mood"] != hb["mood"],
            tempo,
            min(fifths, 12 - fifths) / 6,
            ha["mode"] != hb["mode"],
            ha["lead"] != hb["lead"],
            ha["chords"] != hb["chords"],
            ha["bass"] != hb["bass"],
            ha["drums"] != hb["drums"],  # not the recording: a distance between the MUSIC
        ]
    )
    melody = 0.5 * (
        0.5 * np.abs(_interval_hist(fa.melody_notes) - _interval_hist(fb.melody_notes)).sum()
    )
    melody += 0.5 * (1.0 - jaccard(_onsets(fa.melody_notes), _onsets(fb.melody_notes)))

    def harmony(f: Features, attrs) -> list[tuple[int, int]]:
        tonic = A.KEYS.index(attrs["key"])
        out = []
        for slot in range(4):
            code = next((c for s, e, c in f.chord_spans if s <= slot * 8 < e), None)
            out.append(
                (-1, -1)
                if code is None
                else ((code // len(T.CHORD_QUALITIES) - tonic) % 12, code % len(T.CHORD_QUALITIES))
            )
        return out

    harm = np.mean([x != y for x, y in zip(harmony(fa, ha), harmony(fb, hb))])
    bass = 1.0 - jaccard(_onsets(fa.bass_notes), _onsets(fb.bass_notes))
    da, db = np.array(fa.decoded.drums), np.array(fb.decoded.drums)
    bits = lambda x: (x[:, None] >> np.arange(len(A.DRUM_PARTS))) & 1  # noqa: E731
    drums = float(np.mean(bits(da) != bits(db)))
    return float(0.3 * header + 0.3 * melody + 0.15 * harm + 0.1 * bass + 0.15 * drums)
