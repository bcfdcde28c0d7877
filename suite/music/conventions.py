"""Genre and mood conventions of the embedded music world (DESIGN.md section 5).

The paper's data is captioned music whose genres and moods are recognisable (section 3.1);
these tables say what makes each one so: one-bar drum patterns per drum style, a
`GenreProfile` per genre (tempos, instruments, drum styles, modes, progressions, chord
colour, comping, bass pattern, melody rhythm and density), the (genre, mood) pairs held out
of the corpus for the eval prompts, and the mood conventions (major / minor family, melody
register, density, tempo shift).

The composer (composer.py) writes pieces from them; the oracle (oracle_features.py) reads
the same tables, as a human rater knows genre conventions. Data only: no randomness here.
"""

from __future__ import annotations

from dataclasses import dataclass

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
