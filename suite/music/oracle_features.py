"""Content reading of the oracle judge (DESIGN.md sections 4 and 5).

What a listener hears in a piece, read from its tokens: the note and chord spans
(`Features`), the key and mode (scale fit plus tonic evidence), the drum style (nearest
two-bar pattern), the genre (drums, harmony colour, comping, bass and melody rhythm,
tempo and instruments against `conventions.GENRE_PROFILES`) and how well the content fits
a mood. `recognise` puts them together: the attributes as the CONTENT shows them, which the
judge (oracle_judge.py) compares with the prompt, and which the MIDI import uses to fill a
header. The paper's raters (section 3.1, appendix F) hear the same things.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from suite.music import attributes as A
from suite.music import composer as C
from suite.music import tokens as T


@dataclass
class Features:
    """What the oracle reads from one decoded piece."""

    decoded: T.Decoded
    melody_notes: list[tuple[int, int, int]]  # (start, end, pitch)
    bass_notes: list[tuple[int, int, int]]
    chord_spans: list[tuple[int, int, int]]  # (start, end, chord code)


def features(tokens) -> Features:
    dec = T.decode(tokens)
    return Features(dec, T.note_spans(dec.melody), T.note_spans(dec.bass), T.note_spans(dec.chord))


def _pitch_weights(f: Features) -> np.ndarray:
    """Duration-weighted pitch-class histogram of melody, bass and chord tones, [12]."""
    hist = np.zeros(12)
    for s, e, p in f.melody_notes + f.bass_notes:
        hist[p % 12] += e - s
    for s, e, c in f.chord_spans:
        for p in T.chord_pitches(c):
            hist[p % 12] += 0.5 * (e - s)
    return hist


def estimate_key(f: Features, genre: str | None = None) -> tuple[str, str]:
    """(key, mode) from content: scale fit of the pitch histogram plus tonic evidence
    (chord roots and bass notes weighted by duration, the first chord). With a genre,
    only the modes that genre uses are considered (a listener's prior: jazz in minor is
    dorian), which settles pieces that never play the degree telling two modes apart."""
    hist = _pitch_weights(f)
    total = hist.sum()
    if total == 0:
        return f.decoded.attrs["key"], f.decoded.attrs["mode"]
    root_w = np.zeros(12)
    for i, (s, e, c) in enumerate(f.chord_spans):
        root_w[c // len(T.CHORD_QUALITIES)] += (e - s) * (1.5 if i == 0 else 1.0)
    for s, e, p in f.bass_notes:
        root_w[p % 12] += 0.5 * (e - s) * (1.0 if s % 8 == 0 else 0.3)
    root_w = root_w / max(root_w.sum(), 1e-9)
    best, best_score = ("C", "major"), -1e9
    modes = A.MODES
    if genre is not None:
        prof = C.GENRE_PROFILES[genre]
        modes = prof.major_modes + prof.minor_modes
    for tonic in range(12):
        for mode in modes:
            pcs = [(tonic + i) % 12 for i in A.MODE_SCALES[mode]]
            fit = hist[pcs].sum() / total
            # characteristic degrees: the triad on the tonic must fit the mode
            third = (tonic + A.MODE_SCALES[mode][2]) % 12
            score = 4.0 * fit + 1.5 * root_w[tonic] + 0.2 * hist[third] / total
            if score > best_score + 1e-9:
                best, best_score = (A.KEYS[tonic], mode), score
    return best


def detect_drum_style(f: Features) -> str:
    """The drum style whose two-bar pattern is nearest (bitwise) to the drum track."""
    hits = np.array(f.decoded.drums)
    bits = (hits[:, None] >> np.arange(len(A.DRUM_PARTS))) & 1  # [S, 5]
    best, best_d = "none", 1e9
    for style, bar in C.DRUM_PATTERNS.items():
        ref = np.array(bar * 2)
        ref_bits = (ref[:, None] >> np.arange(len(A.DRUM_PARTS))) & 1
        d = np.abs(bits - ref_bits).sum()
        if d < best_d:
            best, best_d = style, d
    return best


@cache
def _bass_onsets(genre: str) -> frozenset[int]:
    line = C._bass_line(
        np.random.default_rng(0), C.GENRE_PROFILES[genre], [0, 0, 0, 0], "C", "major"
    )
    return frozenset(s for s, p in enumerate(line[:16]) if p >= 0)


_COLORS = {
    "triad": {"maj", "min", "dim"},
    "seventh": {"maj7", "m7", "7", "dim"},
    "dominant": {"7", "maj", "min", "dim"},
    "power": {"5", "dim"},
    "sus": {"sus4", "maj", "min", "dim"},
}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def estimate_genre(f: Features) -> str:
    """Genre from content and instrumentation: drums, harmony colour, comping, bass and
    melody rhythm, tempo and instruments, scored against `composer.GENRE_PROFILES`."""
    d = f.decoded
    style = detect_drum_style(f)
    qualities = [T.CHORD_QUALITIES[c % len(T.CHORD_QUALITIES)] for _, _, c in f.chord_spans]
    comp = {s % 16 for s, _, _ in f.chord_spans}
    bass_on = {s for s, _, _ in f.bass_notes if s < 16}
    mel_pos = np.bincount([s % 4 for s, _, _ in f.melody_notes], minlength=4).astype(float)
    scores = {}
    for genre, prof in C.GENRE_PROFILES.items():
        score = 2.0 * (style in prof.drums)
        score += 1.0 * (d.attrs["tempo"] in prof.tempos)
        score += 1.0 * (d.attrs["lead"] in prof.leads) + 1.0 * (d.attrs["chords"] in prof.chords)
        score += 0.5 * (d.attrs["bass"] in prof.basses)
        if qualities:
            score += 1.5 * np.mean([q in _COLORS[prof.color] for q in qualities])
        score += 1.0 * jaccard(comp, set(prof.comp) | ({0, 8} if prof.comp_len == 0 else set()))
        score += 1.0 * jaccard(bass_on, set(_bass_onsets(genre)))
        if mel_pos.sum():
            ref = np.array(prof.melody_steps) / sum(prof.melody_steps)
            score += 1.0 - 0.5 * np.abs(mel_pos / mel_pos.sum() - ref).sum()
        scores[genre] = score
    return max(scores, key=scores.get)


def _mean_melody_pitch(f: Features) -> float | None:
    if not f.melody_notes:
        return None
    w = np.array([e - s for s, e, _ in f.melody_notes], dtype=float)
    return float(np.average([p for _, _, p in f.melody_notes], weights=w))


def mood_consistency(f: Features, mood: str) -> float:
    """How well the content fits a mood: mode family and melody register, in [0, 1]."""
    family = "major" if f.decoded.attrs["mode"] in A.MAJOR_FAMILY else "minor"
    fam = float(C.MOOD_FAMILY[mood] == family)
    mean = _mean_melody_pitch(f)
    reg = 0.0 if mean is None else max(0.0, 1.0 - abs(mean - C.MOOD_REGISTER[mood]) / 12.0)
    return 0.5 * fam + 0.5 * reg


def recognise(tokens) -> dict[str, str]:
    """Attributes as the CONTENT shows them (genre, key, mode, drums) plus the header's
    global attributes (mood, tempo, instruments, recording), for attribute recognition."""
    f = features(tokens)
    genre = estimate_genre(f)
    key, mode = estimate_key(f, genre)
    out = dict(f.decoded.attrs)
    out.update(genre=genre, key=key, mode=mode, drums=detect_drum_style(f))
    return out
