"""Attribute vocabularies of the embedded music world (DESIGN.md section 5).

The paper's MusicLM is conditioned on free text describing genre, mood, instruments and
recording quality (paper section 3.1, appendix B: the negative prompt "Bad audio quality.").
The embedded world makes those attributes explicit: every piece is composed from one value
per attribute below, its header tokens carry them (the recording quality is carried per step), and captions
describe them in words.

Attributes (each a tuple of canonical names; index = token offset in `tokens.py`):

- GENRES: 10 genres that differ in harmony, rhythm, drums, instruments and tempo;
- MOODS: 6 moods (they choose the mode family, register and note density);
- TEMPOS: 6 tempo buckets with their BPM range and the BPM the renderer plays;
- KEYS x MODES: tonic pitch class and one of four diatonic modes;
- LEAD / CHORD / BASS instruments (12 distinct timbres + drums) and DRUM_STYLES;
- RECORDINGS: the recording quality; anything but "clean" is a flaw. It is a caption word
  for the piece; the tokens carry it per step (`HEADER_NAMES` leaves it out).

`check_value` is the single place that turns an unknown attribute value into a clear error.
"""

from __future__ import annotations

GENRES: tuple[str, ...] = (
    "jazz",
    "rock",
    "classical",
    "ambient",
    "electronic",
    "folk",
    "blues",
    "bossa nova",
    "hip hop",
    "metal",
)

MOODS: tuple[str, ...] = ("happy", "sad", "calm", "energetic", "dark", "romantic")

# (name, low BPM, high BPM, BPM the renderer plays). Played BPMs are chosen so that a
# sixteenth note lasts a whole number of samples at 16 kHz (240000 / BPM) and the 32 steps
# of a piece last 6.0 s at the slowest tempo; faster pieces loop to fill the fixed audio
# length (see render.py).
TEMPOS: tuple[tuple[str, int, int, int], ...] = (
    ("slow", 76, 88, 80),
    ("relaxed", 89, 105, 96),
    ("moderate", 106, 123, 120),
    ("upbeat", 124, 139, 128),
    ("fast", 140, 155, 150),
    ("very fast", 156, 175, 160),
)
TEMPO_NAMES: tuple[str, ...] = tuple(t[0] for t in TEMPOS)
TEMPO_BPM: tuple[int, ...] = tuple(t[3] for t in TEMPOS)

KEYS: tuple[str, ...] = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# Diatonic modes as semitone offsets from the tonic. Major family: major, mixolydian;
# minor family: minor (aeolian), dorian.
MODES: tuple[str, ...] = ("major", "minor", "dorian", "mixolydian")
MODE_SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}
MAJOR_FAMILY = ("major", "mixolydian")
MINOR_FAMILY = ("minor", "dorian")

# Every melodic timbre the renderer knows (index = timbre id in render.py and GM program
# in midi.py).
INSTRUMENTS: tuple[str, ...] = (
    "piano",
    "electric piano",
    "organ",
    "acoustic guitar",
    "electric guitar",
    "distorted guitar",
    "violin",
    "strings",
    "flute",
    "saxophone",
    "trumpet",
    "synth lead",
    "synth pad",
    "voice",
    "choir",
    "acoustic bass",
    "electric bass",
    "synth bass",
)
# General MIDI programs (0-based) for MIDI export / import.
GM_PROGRAMS: dict[str, int] = {
    "piano": 0,
    "electric piano": 4,
    "organ": 16,
    "acoustic guitar": 24,
    "electric guitar": 27,
    "distorted guitar": 30,
    "violin": 40,
    "strings": 48,
    "flute": 73,
    "saxophone": 65,
    "trumpet": 56,
    "synth lead": 81,
    "synth pad": 89,
    "voice": 53,
    "choir": 52,
    "acoustic bass": 32,
    "electric bass": 33,
    "synth bass": 38,
}

LEAD_INSTRUMENTS: tuple[str, ...] = (
    "piano",
    "electric piano",
    "acoustic guitar",
    "electric guitar",
    "distorted guitar",
    "violin",
    "flute",
    "saxophone",
    "trumpet",
    "synth lead",
    "voice",
)
CHORD_INSTRUMENTS: tuple[str, ...] = (
    "none",
    "piano",
    "electric piano",
    "organ",
    "acoustic guitar",
    "electric guitar",
    "distorted guitar",
    "strings",
    "synth pad",
    "choir",
)
BASS_INSTRUMENTS: tuple[str, ...] = ("none", "acoustic bass", "electric bass", "synth bass")

DRUM_STYLES: tuple[str, ...] = (
    "none",
    "rock beat",
    "jazz swing",
    "four on the floor",
    "boom bap",
    "bossa groove",
    "shuffle",
    "brushes",
    "double kick",
    "ambient pulse",
)
# Drum parts, one bit each in a drum token (bit i = DRUM_PARTS[i]) and their GM notes.
DRUM_PARTS: tuple[str, ...] = ("kick", "snare", "hihat", "ride", "percussion")
DRUM_GM_NOTES: tuple[int, ...] = (36, 38, 42, 51, 37)

RECORDINGS: tuple[str, ...] = ("clean", "noisy", "distorted", "lo-fi")

# Per-step performance events. Anything but "ok" is a local flaw.
PERFORMANCE: tuple[str, ...] = ("ok", "early", "late", "dropout", "detuned")

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "genre": GENRES,
    "mood": MOODS,
    "tempo": TEMPO_NAMES,
    "key": KEYS,
    "mode": MODES,
    "lead": LEAD_INSTRUMENTS,
    "chords": CHORD_INSTRUMENTS,
    "bass": BASS_INSTRUMENTS,
    "drums": DRUM_STYLES,
    "recording": RECORDINGS,
}
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(ATTRIBUTES)
# The header's tokens, in this order: every attribute but the recording quality, which is
# a piece-level word of the captions only; in the tokens it varies step by step (the
# per-step performance token carries it, `tokens.py`), so no single token placed before
# the content announces a bad recording (DESIGN.md section 5, fairness rules).
HEADER_NAMES: tuple[str, ...] = tuple(a for a in ATTRIBUTE_NAMES if a != "recording")


def check_value(attribute: str, value: str) -> int:
    """Index of `value` in the vocabulary of `attribute`; a clear error if either is unknown."""
    if attribute not in ATTRIBUTES:
        raise ValueError(
            f"unknown music attribute '{attribute}'; expected one of {list(ATTRIBUTE_NAMES)}"
        )
    values = ATTRIBUTES[attribute]
    if not isinstance(value, str) or value not in values:
        raise ValueError(
            f"unknown value {value!r} for music attribute '{attribute}'; expected one of "
            f"{list(values)}"
        )
    return values.index(value)


def check_attributes(attrs: dict[str, str], complete: bool = False) -> dict[str, str]:
    """Validate a (partial) attribute dict; with `complete`, every attribute must be given."""
    if not isinstance(attrs, dict):
        raise TypeError(f"music attributes must be a dict, got {type(attrs).__name__}")
    for key, value in attrs.items():
        check_value(key, value)
    if complete:
        missing = [a for a in ATTRIBUTE_NAMES if a not in attrs]
        if missing:
            raise ValueError(f"music attributes are missing {missing}")
    return attrs
