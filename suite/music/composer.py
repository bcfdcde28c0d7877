"""Seeded procedural composer of the embedded music world (DESIGN.md section 5).

The paper trains MusicLM on captioned music whose quality varies (section 3.1; appendix B
shows that a negative prompt, "Bad audio quality.", steers generation away from flawed
recordings). The composer produces that kind of data: pieces over explicit attributes
whose genres differ in harmony, rhythm, drums, instruments and tempo, and a third of
which carry flaws spread THROUGH the sequence (wrong notes, early / late notes, detuned
notes, dropouts) as well as a global recording-quality flaw in the header.

`GENRE_PROFILES` holds the world's genre conventions; the oracle (oracle.py) reads the same
tables, as a human rater knows genre conventions. `compose(rng)` returns a `Composition`
(piece, flaw record); it is a pure function of the generator state, so a corpus is
deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from suite.music import attributes as A
from suite.music import tokens as T

FLAWED_SHARE = 1.0 / 3.0

# Drum bits
KICK, SNARE, HAT, RIDE, PERC = 1, 2, 4, 8, 16


def _pattern(**parts: tuple[int, ...]) -> tuple[int, ...]:
    """One bar (16 steps) of drum hit sets from step lists per part."""
    bits = {"kick": KICK, "snare": SNARE, "hat": HAT, "ride": RIDE, "perc": PERC}
    bar = [0] * 16
    for name, steps in parts.items():
        for s in steps:
            bar[s] |= bits[name]
    return tuple(bar)


EIGHTHS = tuple(range(0, 16, 2))
# One-bar drum pattern per style (the second bar repeats it, with an occasional fill).
DRUM_PATTERNS: dict[str, tuple[int, ...]] = {
    "none": (0,) * 16,
    "rock beat": _pattern(kick=(0, 8, 10), snare=(4, 12), hat=EIGHTHS),
    "jazz swing": _pattern(ride=(0, 4, 7, 8, 12, 15), hat=(4, 12), kick=(0,)),
    "four on the floor": _pattern(kick=(0, 4, 8, 12), perc=(4, 12), hat=(2, 6, 10, 14)),
    "boom bap": _pattern(kick=(0, 7, 10), snare=(4, 12), hat=EIGHTHS),
    "bossa groove": _pattern(kick=(0, 6, 8, 14), perc=(0, 3, 6, 10, 12), hat=EIGHTHS),
    "shuffle": _pattern(hat=(0, 3, 4, 7, 8, 11, 12, 15), snare=(4, 12), kick=(0, 8)),
    "brushes": _pattern(snare=(0, 4, 8, 12), hat=(4, 12), perc=(2, 10)),
    "double kick": _pattern(kick=tuple(range(16)), snare=(4, 12), ride=(0, 8)),
    "ambient pulse": _pattern(kick=(0,), ride=(8,)),
}


@dataclass(frozen=True)
class GenreProfile:
    """The conventions of one genre (what makes it recognisable)."""

    tempos: tuple[str, ...]  # tempo buckets the genre plays at
    leads: tuple[str, ...]
    chords: tuple[str, ...]  # chord instruments
    basses: tuple[str, ...]
    drums: tuple[str, ...]  # drum styles, first = the usual one
    major_modes: tuple[str, ...]  # modes used for major-family moods
    minor_modes: tuple[str, ...]
    progressions: tuple[tuple[int, ...], ...]  # 4 slots of 2 beats, scale degrees (0-based)
    color: str  # chord colour: triad | seventh | dominant | power | sus
    comp: tuple[int, ...]  # chord onsets within a bar (steps)
    comp_len: int  # steps a chord onset sounds (0 = until the next onset)
    bass: str  # bass pattern name
    melody_steps: tuple[float, float, float, float]  # onset weight by step % 4
    density: float  # melody onsets per step before the mood factor
    legato: bool  # melody notes held to the next onset (else short)


GENRE_PROFILES: dict[str, GenreProfile] = {
    "jazz": GenreProfile(
        ("relaxed", "moderate", "upbeat", "fast"),
        ("saxophone", "trumpet", "piano"),
        ("piano", "electric piano"),
        ("acoustic bass",),
        ("jazz swing", "brushes"),
        ("major",),
        ("dorian",),
        ((0, 0, 1, 4), (0, 5, 1, 4), (1, 4, 0, 0)),
        "seventh",
        (0, 6, 10),
        3,
        "walking",
        (1.0, 0.05, 0.15, 0.9),
        0.4,
        True,
    ),
    "rock": GenreProfile(
        ("moderate", "upbeat", "fast"),
        ("electric guitar", "distorted guitar"),
        ("distorted guitar", "electric guitar"),
        ("electric bass",),
        ("rock beat",),
        ("major", "mixolydian"),
        ("minor",),
        ((0, 4, 5, 3), (0, 3, 4, 3), (0, 0, 3, 4)),
        "triad",
        (0, 2, 4, 6, 8, 10, 12, 14),
        2,
        "eighths",
        (1.0, 0.0, 0.9, 0.0),
        0.35,
        False,
    ),
    "classical": GenreProfile(
        ("slow", "relaxed", "moderate"),
        ("violin", "flute", "piano"),
        ("strings", "piano"),
        ("acoustic bass", "none"),
        ("none",),
        ("major",),
        ("minor",),
        ((0, 3, 4, 0), (0, 5, 3, 4), (0, 1, 4, 0)),
        "triad",
        (0, 8),
        0,
        "half",
        (1.0, 0.7, 0.9, 0.7),
        0.5,
        True,
    ),
    "ambient": GenreProfile(
        ("slow",),
        ("synth lead", "flute", "electric piano"),
        ("synth pad", "strings"),
        ("synth bass", "none"),
        ("none", "ambient pulse"),
        ("major",),
        ("dorian",),
        ((0, 0, 3, 3), (0, 0, 5, 5), (0, 5, 3, 0)),
        "sus",
        (0,),
        0,
        "whole",
        (1.0, 0.0, 0.3, 0.0),
        0.12,
        True,
    ),
    "electronic": GenreProfile(
        ("upbeat", "fast"),
        ("synth lead",),
        ("synth pad",),
        ("synth bass",),
        ("four on the floor",),
        ("major",),
        ("minor",),
        ((0, 0, 5, 5), (0, 5, 2, 6), (0, 3, 5, 4)),
        "triad",
        (2, 6, 10, 14),
        1,
        "offbeat",
        (1.0, 0.8, 1.0, 0.8),
        0.6,
        False,
    ),
    "folk": GenreProfile(
        ("relaxed", "moderate"),
        ("flute", "violin", "voice"),
        ("acoustic guitar",),
        ("acoustic bass",),
        ("brushes", "none"),
        ("major", "mixolydian"),
        ("dorian",),
        ((0, 3, 0, 4), (0, 0, 3, 4), (0, 4, 3, 0)),
        "triad",
        (0, 4, 6, 8, 12, 14),
        2,
        "root-fifth",
        (1.0, 0.0, 0.6, 0.0),
        0.3,
        True,
    ),
    "blues": GenreProfile(
        ("slow", "relaxed", "moderate"),
        ("electric guitar", "saxophone", "piano"),
        ("piano", "organ", "electric guitar"),
        ("electric bass", "acoustic bass"),
        ("shuffle",),
        ("mixolydian",),
        ("minor",),
        ((0, 0, 3, 0), (0, 3, 0, 4), (0, 0, 4, 3)),
        "dominant",
        (0, 3, 4, 7, 8, 11, 12, 15),
        1,
        "boogie",
        (1.0, 0.0, 0.1, 0.8),
        0.35,
        True,
    ),
    "bossa nova": GenreProfile(
        ("moderate", "upbeat"),
        ("flute", "voice", "saxophone"),
        ("acoustic guitar",),
        ("acoustic bass",),
        ("bossa groove",),
        ("major",),
        ("dorian",),
        ((0, 0, 1, 4), (1, 4, 0, 0), (0, 5, 1, 4)),
        "seventh",
        (0, 3, 6, 10, 12),
        2,
        "bossa",
        (1.0, 0.1, 0.7, 0.5),
        0.35,
        True,
    ),
    "hip hop": GenreProfile(
        ("slow", "relaxed"),
        ("electric piano", "synth lead"),
        ("electric piano", "synth pad"),
        ("synth bass", "electric bass"),
        ("boom bap",),
        ("major",),
        ("minor",),
        ((0, 0, 5, 5), (0, 5, 3, 4), (0, 0, 3, 3)),
        "seventh",
        (0, 10),
        0,
        "syncopated",
        (1.0, 0.3, 0.5, 0.6),
        0.3,
        False,
    ),
    "metal": GenreProfile(
        ("fast", "very fast"),
        ("distorted guitar",),
        ("distorted guitar",),
        ("electric bass",),
        ("double kick",),
        ("mixolydian",),
        ("minor",),
        ((0, 0, 5, 6), (0, 6, 5, 4), (0, 5, 6, 0)),
        "power",
        tuple(range(16)),
        1,
        "sixteenths",
        (1.0, 0.9, 1.0, 0.9),
        0.7,
        False,
    ),
}

# (genre, mood) pairs the corpus never contains: the held-out eval prompts ask for them.
HELD_OUT_COMBOS: frozenset[tuple[str, str]] = frozenset(
    {
        ("jazz", "energetic"),
        ("rock", "romantic"),
        ("classical", "dark"),
        ("ambient", "happy"),
        ("electronic", "sad"),
        ("folk", "dark"),
        ("blues", "happy"),
        ("bossa nova", "sad"),
        ("hip hop", "calm"),
        ("metal", "happy"),
    }
)

# Mood conventions: major / minor family, melody register centre, density factor.
MOOD_FAMILY = {
    "happy": "major",
    "sad": "minor",
    "calm": "major",
    "energetic": "major",
    "dark": "minor",
    "romantic": "major",
}
MOOD_REGISTER = {"happy": 76, "sad": 65, "calm": 67, "energetic": 72, "dark": 59, "romantic": 70}
MOOD_DENSITY = {
    "happy": 1.1,
    "sad": 0.7,
    "calm": 0.6,
    "energetic": 1.5,
    "dark": 0.9,
    "romantic": 0.85,
}
MOOD_TEMPO_SHIFT = {"happy": 0, "sad": -1, "calm": -1, "energetic": 1, "dark": 0, "romantic": 0}

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


def add_flaws(rng: np.random.Generator, piece: T.Piece) -> dict[str, int]:
    """Spread flaws through the piece in place; returns kind -> number of flawed events.

    At least one local flaw always (so a single header token never explains all of the
    badness), plus a recording flaw in 60 % of flawed pieces.
    """
    kinds = [k for k in FLAW_KINDS[:4] if rng.random() < 0.45]
    if not kinds:
        kinds = [FLAW_KINDS[rng.integers(4)]]
    severity = rng.uniform(0.3, 1.0)
    flaws: dict[str, int] = {}
    scale = set(scale_pitch_classes(piece.attrs["key"], piece.attrs["mode"]))
    mel_on = [s for s, p in enumerate(piece.melody) if p >= 0]
    if "wrong_notes" in kinds:
        n = 0
        for track, lo, hi in (
            (piece.melody, T.MEL_LOW, T.MEL_HIGH),
            (piece.bass, T.BASS_LOW, T.BASS_HIGH),
        ):
            for s, p in enumerate(track):
                if p >= 0 and rng.random() < 0.35 * severity:
                    options = [q for q in (p - 1, p + 1) if q % 12 not in scale and lo <= q < hi]
                    if options:
                        track[s] = options[rng.integers(len(options))]
                        n += 1
        if n:
            flaws["wrong_notes"] = n
    onset_steps = [
        s
        for s in range(T.N_STEPS)
        if piece.melody[s] >= 0 or piece.bass[s] >= 0 or piece.chord[s] >= 0
    ]
    if "timing" in kinds:
        n = 0
        for s in onset_steps:
            if rng.random() < 0.4 * severity:
                piece.perf[s] = 1 if rng.random() < 0.5 else 2
                n += 1
        if n:
            flaws["timing"] = n
    if "detune" in kinds:
        n = 0
        for s in mel_on:
            if piece.perf[s] == 0 and rng.random() < 0.4 * severity:
                piece.perf[s] = 4
                n += 1
        if n:
            flaws["detune"] = n
    if "dropout" in kinds or not flaws:
        n = 0
        for _ in range(1 + int(rng.integers(1 + round(2 * severity)))):
            start, length = int(rng.integers(T.N_STEPS - 2)), int(rng.integers(2, 6))
            for s in range(start, min(T.N_STEPS, start + length)):
                n += piece.perf[s] != 3
                piece.perf[s] = 3
        flaws["dropout"] = n
    if rng.random() < 0.6:
        piece.attrs["recording"] = A.RECORDINGS[1 + rng.integers(len(A.RECORDINGS) - 1)]
        flaws["recording"] = 1
    return flaws


def compose(
    rng: np.random.Generator, attrs: dict[str, str] | None = None, flawed: bool | None = None
) -> Composition:
    """Compose one piece: random attributes unless given, flawed with FLAWED_SHARE odds."""
    attrs = dict(attrs) if attrs is not None else sample_attributes(rng)
    attrs.setdefault("recording", "clean")
    if flawed is None:
        flawed = bool(rng.random() < FLAWED_SHARE)
    piece = compose_clean(rng, attrs)
    flaws = add_flaws(rng, piece) if flawed else {}
    return Composition(piece=piece, flaws=flaws)
