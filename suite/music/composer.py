"""Seeded procedural composer of the embedded music world (DESIGN.md section 5).

The paper trains MusicLM on captioned music whose quality varies (section 3.1; appendix B
shows that a negative prompt, "Bad audio quality.", steers generation away from flawed
recordings). The composer produces that kind of data: pieces over explicit attributes
whose genres differ in harmony, rhythm, drums, instruments and tempo, and flaws that
live in the music: wrong notes, early / late notes, detuned notes, dropouts, and bursts of
badly recorded steps (noisy, distorted or lo-fi; no header token announces them, see
tokens.py). World version 4: each half-bar segment is flawed independently, with its own
kinds and severity; a piece comes from a good recording session (segments flawed with odds
1/3, captions silent about it) or, 12 % of the time, a bad one (odds 0.9, and its caption
says so), so a prompt without quality words leaves no per-piece latent for one position to
switch, while the negative prompt still names a much more flawed distribution.

The genre and mood conventions (`GENRE_PROFILES`, `DRUM_PATTERNS`, `MOOD_*`) live in
conventions.py and are re-exported here. `compose(rng)` returns a `Composition` (piece,
flaw record); it is a pure function of the generator state, so a corpus is deterministic
for a seed. Reading order: attributes, the chord / bass / melody / drum tracks of a clean
piece (`compose_clean`), the flaws (`add_flaws`), then `compose`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from suite.music import attributes as A
from suite.music import tokens as T
from suite.music.conventions import (  # noqa: F401 (re-exported: composer.GENRE_PROFILES, ...)
    DRUM_PATTERNS,
    EIGHTHS,
    GENRE_PROFILES,
    HAT,
    HELD_OUT_COMBOS,
    KICK,
    MOOD_DENSITY,
    MOOD_FAMILY,
    MOOD_REGISTER,
    MOOD_TEMPO_SHIFT,
    PERC,
    RIDE,
    SNARE,
    GenreProfile,
)

SEGMENT = 8  # steps per flaw segment: half a bar, one chord slot
N_SEGMENTS = T.N_STEPS // SEGMENT
SEGMENT_FLAW_P = 1.0 / 3.0  # a good session's segments, each independently: ~80 % of its
# pieces have some flaw, none says so, and no step tells of another segment
BAD_SESSION_P = 0.12  # a bad session (world 4): each segment flawed with BAD_SEGMENT_P, and
BAD_SEGMENT_P = 0.9  # the caption always admits it ("Bad audio quality.", "sloppy timing", ...)
FLAW_KINDS: tuple[str, ...] = ("wrong_notes", "timing", "detune", "dropout", "recording")


@dataclass
class Composition:
    """A composed piece plus the record of the flaws put into it."""

    piece: T.Piece
    flaws: dict[str, int] = field(default_factory=dict)  # kind -> how many steps / notes

    @property
    def flawed(self) -> bool:
        return bool(self.flaws)


def scale_pitch_classes(key: str, mode: str) -> list[int]:
    tonic = A.check_value("key", key)
    return sorted((tonic + i) % 12 for i in A.MODE_SCALES[mode])


def diatonic_chord(key: str, mode: str, degree: int, color: str) -> int:
    """Chord code on a scale degree, stacked in thirds from the mode, in the genre colour."""
    tonic = A.KEYS.index(key)
    scale = A.MODE_SCALES[mode]

    def iv(k: int) -> int:  # interval above the chord root of the k-th third
        d = degree + 2 * k
        return (scale[d % 7] + 12 * (d // 7)) - scale[degree % 7]

    third, fifth, seventh = iv(1), iv(2), iv(3)
    fourth = (scale[(degree + 3) % 7] - scale[degree % 7]) % 12
    root = tonic + scale[degree % 7]
    if fifth == 6:
        quality = "dim"
    elif color == "power":
        quality = "5"
    elif color == "dominant":  # dominant sevenths where the mode has them, else triads
        quality = "7" if third == 4 and seventh == 10 else "maj" if third == 4 else "min"
    elif color == "sus" and fourth == 5 and fifth == 7 and degree % 2 == 0:
        quality = "sus4"
    elif color == "seventh":
        quality = "maj7" if third == 4 and seventh == 11 else "7" if third == 4 else "m7"
    else:
        quality = "maj" if third == 4 else "min"
    return T.chord_code(root, quality)


def sample_attributes(rng: np.random.Generator, genre: str | None = None) -> dict[str, str]:
    """Attributes of one piece, following genre and mood conventions."""
    genre = genre or A.GENRES[rng.integers(len(A.GENRES))]
    prof = GENRE_PROFILES[genre]
    moods = [m for m in A.MOODS if (genre, m) not in HELD_OUT_COMBOS]
    mood = moods[rng.integers(len(moods))]
    tempo_i = A.TEMPO_NAMES.index(prof.tempos[rng.integers(len(prof.tempos))])
    lo, hi = A.TEMPO_NAMES.index(prof.tempos[0]), A.TEMPO_NAMES.index(prof.tempos[-1])
    tempo_i = int(np.clip(tempo_i + MOOD_TEMPO_SHIFT[mood], lo, hi))
    modes = prof.major_modes if MOOD_FAMILY[mood] == "major" else prof.minor_modes
    drums = prof.drums[0] if rng.random() < 0.8 else prof.drums[rng.integers(len(prof.drums))]
    return {
        "genre": genre,
        "mood": mood,
        "tempo": A.TEMPO_NAMES[tempo_i],
        "key": A.KEYS[rng.integers(12)],
        "mode": modes[rng.integers(len(modes))],
        "lead": prof.leads[rng.integers(len(prof.leads))],
        "chords": prof.chords[rng.integers(len(prof.chords))],
        "bass": prof.basses[rng.integers(len(prof.basses))],
        "drums": drums,
        "recording": "clean",
    }


def _bass_line(rng, prof: GenreProfile, roots: list[int], key: str, mode: str) -> list[int]:
    """Bass track (MIDI pitches / REST / HOLD) following the chord roots of each slot."""
    scale = scale_pitch_classes(key, mode)

    def low(pc: int) -> int:  # the pitch class in the bass register (E1 .. D#2 + octave)
        return T.BASS_LOW + 8 + (pc - (T.BASS_LOW + 8)) % 12

    def scale_step(p: int, k: int) -> int:  # k scale steps above pitch p (p in scale)
        pcs = sorted(scale)
        i = pcs.index(p % 12) if p % 12 in pcs else 0
        j = i + k
        return p - pcs[i] + pcs[j % 7] + 12 * (j // 7)

    out = [T.REST] * T.N_STEPS
    for step in range(T.N_STEPS):
        root = low(roots[step // 8])
        fifth = scale_step(root, 4)
        b = step % 16
        if prof.bass == "walking":
            if step % 4 == 0:  # legato quarter notes on chord and scale tones
                out[step] = scale_step(root, [0, 2, 4, 5][(step // 4) % 4] * (rng.random() < 0.9))
            else:
                out[step] = T.HOLD
        elif prof.bass == "eighths":
            out[step] = root if step % 2 == 0 else T.HOLD
        elif prof.bass in ("half", "whole"):
            span = 8 if prof.bass == "half" else 16
            out[step] = root if step % span == 0 else T.HOLD
        elif prof.bass == "offbeat":
            out[step] = root if b % 4 == 2 else T.HOLD if b % 4 == 3 else T.REST
        elif prof.bass == "root-fifth":
            out[step] = (root if b % 8 == 0 else fifth) if b % 4 == 0 else T.HOLD
        elif prof.bass == "boogie":
            if step % 2 == 0:
                out[step] = scale_step(root, [0, 2, 4, 5][(step // 2) % 4])
            else:
                out[step] = T.HOLD
        elif prof.bass == "bossa":
            out[step] = {0: root, 6: fifth, 8: root, 14: fifth}.get(b % 16, T.HOLD)
        elif prof.bass == "syncopated":
            out[step] = {0: root, 3: T.HOLD, 7: fifth, 10: root}.get(
                b, T.HOLD if b < 12 else T.REST
            )
        elif prof.bass == "sixteenths":
            out[step] = root
    return [min(max(p, T.BASS_LOW), T.BASS_HIGH - 1) if p >= 0 else p for p in out]


def _melody(rng, prof: GenreProfile, attrs: dict[str, str], chords: list[int]) -> list[int]:
    """Melody: genre rhythm x mood density, a scale random walk around the mood register."""
    scale = scale_pitch_classes(attrs["key"], attrs["mode"])
    pool = [p for p in range(T.MEL_LOW, T.MEL_HIGH) if p % 12 in scale]
    centre = MOOD_REGISTER[attrs["mood"]]
    weights = np.array(prof.melody_steps)
    density = prof.density * MOOD_DENSITY[attrs["mood"]]
    prob = np.clip(weights / weights.mean() * density, 0, 1)
    # one rhythm per bar, repeated with variation: recognisable phrasing
    bar = [rng.random() < prob[s % 4] for s in range(16)]
    bar[0] = True
    onsets = bar + [
        b if rng.random() < 0.8 else rng.random() < prob[s % 4] for s, b in enumerate(bar)
    ]
    i = int(np.argmin([abs(p - centre) for p in pool]))
    out: list[int] = []
    held = 0  # steps the current note has sounded
    for step, on in enumerate(onsets):
        if not on:
            # legato genres hold to the next onset; the others play short notes (1-2 steps)
            sounding = out and out[-1] != T.REST
            keep = prof.legato or (held < 2 and rng.random() < 0.6)
            out.append(T.HOLD if sounding and keep else T.REST)
            held += 1
            continue
        held = 1
        chord_pcs = {p % 12 for p in T.chord_pitches(chords[step // 8])}
        move = int(rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3]))
        i = int(np.clip(i + move, 0, len(pool) - 1))
        # pull back toward the register centre, land on chord tones on the beat
        if abs(pool[i] - centre) > 7:
            i += -1 if pool[i] > centre else 1
        if step % 4 == 0 and pool[i] % 12 not in chord_pcs:
            near = [j for j in (i - 1, i + 1) if 0 <= j < len(pool) and pool[j] % 12 in chord_pcs]
            if near:
                i = near[0]
        out.append(pool[i])
    return out


def _drums(rng, style: str) -> list[int]:
    bar = list(DRUM_PATTERNS[style])
    second = list(bar)
    if style != "none" and rng.random() < 0.3:  # a short fill on the last beat
        second[12:16] = (
            [SNARE, SNARE, SNARE | KICK, SNARE] if style != "ambient pulse" else [RIDE, 0, RIDE, 0]
        )
    return bar + second


def compose_clean(rng: np.random.Generator, attrs: dict[str, str]) -> T.Piece:
    """A flawless piece for the given attributes."""
    A.check_attributes(attrs, complete=True)
    prof = GENRE_PROFILES[attrs["genre"]]
    prog = prof.progressions[rng.integers(len(prof.progressions))]
    slots = [prog[i % 4] for i in range(4)]  # 4 slots of 8 steps (2 beats)
    chords = [diatonic_chord(attrs["key"], attrs["mode"], d, prof.color) for d in slots]
    roots = [c // len(T.CHORD_QUALITIES) for c in chords]
    chord_track = []
    for step in range(T.N_STEPS):
        b = step % 16
        onset = b in prof.comp or step % 8 == 0 and prof.comp_len == 0
        if step % 8 == 0 and prof.comp_len == 0:
            chord_track.append(
                chords[step // 8]
                if (step % 16 == 0 or chords[step // 8] != chords[step // 8 - 1])
                else T.HOLD
            )
        elif onset:
            chord_track.append(chords[step // 8])
        else:
            last_on = max((s for s in range(step + 1) if (s % 16) in prof.comp), default=-99)
            sounding = prof.comp_len == 0 or step - last_on < prof.comp_len
            chord_track.append(T.HOLD if sounding and last_on >= 0 else T.REST)
    return T.Piece(
        attrs=dict(attrs),
        melody=_melody(rng, prof, attrs, [chords[s // 8] for s in range(T.N_STEPS)]),
        chord=chord_track,
        bass=_bass_line(rng, prof, roots, attrs["key"], attrs["mode"])
        if attrs["bass"] != "none"
        else [T.REST] * T.N_STEPS,
        drums=_drums(rng, attrs["drums"]),
        perf=[0] * T.N_STEPS,
    )


def add_flaws(
    rng: np.random.Generator, piece: T.Piece, segments: list[int] | None = None
) -> dict[str, int]:
    """Put flaws into the given half-bar segments of the piece in place (all of them when
    `segments` is None); returns kind -> number of flawed events, plus "segments": how many.

    Each flawed segment draws its own kinds (at least one local flaw, so a recording effect
    never explains all of the badness; a recording burst in 60 % of them), its own severity
    and its own recording kind. Segments are independent (since world version 3): no step tells
    the model whether another segment is flawed, so CFG has to act wherever flaws may start.
    """
    segments = list(range(N_SEGMENTS)) if segments is None else sorted(set(segments))
    if not segments or not all(0 <= k < N_SEGMENTS for k in segments):
        raise ValueError(f"add_flaws: segments must be a non-empty subset of 0..{N_SEGMENTS - 1}, got {segments}")
    flaws: dict[str, int] = {}
    scale = set(scale_pitch_classes(piece.attrs["key"], piece.attrs["mode"]))
    for k in segments:
        for kind, n in _flaw_segment(rng, piece, scale, k * SEGMENT, (k + 1) * SEGMENT).items():
            flaws[kind] = flaws.get(kind, 0) + n
    if "recording" in flaws:  # counted once: bursts never overlap across segments
        flaws["recording"] = sum(r != 0 for r in piece.rec)
        piece.attrs["recording"] = T.piece_recording(piece.rec)
    flaws["segments"] = len(segments)
    return flaws


def _flaw_segment(rng, piece: T.Piece, scale: set[int], lo: int, hi: int) -> dict[str, int]:
    """Flaw steps lo..hi-1 of the piece in place; kind -> count (densities as world 2's
    whole-piece flaws, so a fully flawed piece is as bad as before)."""
    kinds = [k for k in FLAW_KINDS[:4] if rng.random() < 0.45]
    if not kinds:
        kinds = [FLAW_KINDS[rng.integers(4)]]
    severity = rng.uniform(0.3, 1.0)
    steps = range(lo, hi)
    flaws: dict[str, int] = {}
    if "wrong_notes" in kinds:
        n = 0
        for track, low, high in (
            (piece.melody, T.MEL_LOW, T.MEL_HIGH),
            (piece.bass, T.BASS_LOW, T.BASS_HIGH),
        ):
            for s in steps:
                p = track[s]
                if p >= 0 and rng.random() < 0.35 * severity:
                    options = [q for q in (p - 1, p + 1) if q % 12 not in scale and low <= q < high]
                    if options:
                        track[s] = options[rng.integers(len(options))]
                        n += 1
        if n:
            flaws["wrong_notes"] = n
    onsets = [s for s in steps if piece.melody[s] >= 0 or piece.bass[s] >= 0 or piece.chord[s] >= 0]
    if "timing" in kinds:
        n = 0
        for s in onsets:
            if rng.random() < 0.4 * severity:
                piece.perf[s] = 1 if rng.random() < 0.5 else 2
                n += 1
        if n:
            flaws["timing"] = n
    if "detune" in kinds:
        n = 0
        for s in steps:
            if piece.melody[s] >= 0 and piece.perf[s] == 0 and rng.random() < 0.4 * severity:
                piece.perf[s] = 4
                n += 1
        if n:
            flaws["detune"] = n
    if "dropout" in kinds or not flaws:  # 1-3 silent steps; also when the draws hit nothing
        length = 1 + int(rng.integers(1 + round(2 * severity)))
        start = lo + int(rng.integers(hi - lo - length + 1))
        flaws["dropout"] = sum(piece.perf[s] != 3 for s in range(start, start + length))
        for s in range(start, start + length):
            piece.perf[s] = 3
    if rng.random() < 0.6:  # a burst of 2-4 badly recorded steps inside the segment
        code = 1 + int(rng.integers(len(A.RECORDINGS) - 1))
        length = 2 + int(rng.integers(1 + round(2 * severity)))
        start = lo + int(rng.integers(hi - lo - length + 1))
        for s in range(start, start + length):
            piece.rec[s] = code
        flaws["recording"] = length
    return flaws


def recording_bursts(rng: np.random.Generator, piece: T.Piece, kind: str, severity: float) -> int:
    """Record 1-3 runs of 3-8 steps of `piece` badly (`kind`), in place; returns the number
    of badly recorded steps. A run can start anywhere, so no one position announces it."""
    code = A.check_value("recording", kind)
    for _ in range(1 + int(rng.integers(1 + round(2 * severity)))):
        start, length = int(rng.integers(T.N_STEPS - 2)), int(rng.integers(3, 9))
        for s in range(start, min(T.N_STEPS, start + length)):
            piece.rec[s] = code
    piece.attrs["recording"] = T.piece_recording(piece.rec)
    return sum(r != 0 for r in piece.rec)


def compose(
    rng: np.random.Generator, attrs: dict[str, str] | None = None, flawed: bool | None = None
) -> Composition:
    """Compose one piece: random attributes unless given; a recording session, bad with
    BAD_SESSION_P odds, whose half-bar segments are each flawed independently (a good
    session with SEGMENT_FLAW_P odds, a bad one with BAD_SEGMENT_P). `flawed` True: at
    least one flawed segment; False: a good session and none.

    Only a bad session's caption admits the flaws (captions.describe), so a prompt without
    quality words means a good session, whose segments share no latent: CFG away from the
    negative prompt must act in every segment, at no one position (world version 4)."""
    attrs = dict(attrs) if attrs is not None else sample_attributes(rng)
    asked = attrs.get("recording", "clean")
    attrs["recording"] = "clean"
    piece = compose_clean(rng, attrs)
    bad = flawed is not False and bool(rng.random() < BAD_SESSION_P)
    odds = BAD_SEGMENT_P if bad else SEGMENT_FLAW_P
    segments = [] if flawed is False else [int(k) for k in np.flatnonzero(rng.random(N_SEGMENTS) < odds)]
    if not segments and (flawed or (flawed is None and asked != "clean")):
        segments = [int(rng.integers(N_SEGMENTS))]
    flaws = add_flaws(rng, piece, segments) if segments else {}
    if bad and flaws:
        flaws["bad_session"] = 1
    if asked != "clean":  # a recording asked for by name: its bursts replace any drawn ones
        piece.rec = [0] * T.N_STEPS
        flaws["recording"] = recording_bursts(rng, piece, asked, rng.uniform(0.3, 1.0))
    return Composition(piece=piece, flaws=flaws)
