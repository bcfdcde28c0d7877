"""MIDI import: a user's .mid file mapped onto the music world's grammar (DESIGN.md section 5).

The paper trains on captioned music (section 3.1); a user can bring their own as MIDI
files. `from_midi` maps one file onto the token grammar: the first two bars of sixteenth
notes, a monophonic melody (the most monophonic part, the highest among equals) and bass
(GM bass programs or the lowest part), one chord per onset (best pitch-class match), GM
drum notes folded onto the five drum parts. The header takes the attributes given (e.g.
parsed from a caption), then estimates from the content (the oracle's key and drum
readers, oracle_features.py), then defaults. An `ImportReport` says what was dropped,
changed or guessed. `corpus.build_midi_corpus` turns a folder of files into a corpus.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pretty_midi

from suite.music import attributes as A
from suite.music import oracle_features as oracle
from suite.music import tokens as T


@dataclass
class ImportReport:
    """What `from_midi` kept, dropped and guessed for one or more files."""

    files: list[str] = field(default_factory=list)
    notes_in: int = 0
    notes_kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> notes
    changed: Counter = field(default_factory=Counter)  # reason -> notes kept but altered
    guessed: Counter = field(default_factory=Counter)  # attribute -> files defaulted

    def merge(self, other: ImportReport) -> None:
        self.files += other.files
        self.notes_in += other.notes_in
        self.notes_kept += other.notes_kept
        self.dropped.update(other.dropped)
        self.changed.update(other.changed)
        self.guessed.update(other.guessed)

    def summary(self) -> str:
        dropped = ", ".join(f"{k}: {v}" for k, v in sorted(self.dropped.items())) or "none"
        changed = ", ".join(f"{k}: {v}" for k, v in sorted(self.changed.items())) or "none"
        guessed = ", ".join(f"{k}: {v}" for k, v in sorted(self.guessed.items())) or "none"
        return (
            f"MIDI import: {len(self.files)} file(s), {self.notes_in} notes in, "
            f"{self.notes_kept} kept; dropped ({dropped}); changed ({changed}); "
            f"attributes defaulted ({guessed})"
        )


_DRUM_MAP = {
    35: 0,
    36: 0,
    37: 4,
    38: 1,
    39: 4,
    40: 1,
    42: 2,
    44: 2,
    46: 2,
    49: 3,
    51: 3,
    52: 3,
    53: 3,
    55: 3,
    57: 3,
    59: 3,
    54: 4,
    56: 4,
    69: 4,
    70: 4,
    75: 4,
    76: 4,
}


def _nearest_instrument(program: int, allowed: tuple[str, ...]) -> str:
    """The allowed instrument whose GM program is closest (same GM family first)."""
    options = [n for n in allowed if n != "none"]
    return min(
        options,
        key=lambda n: (A.GM_PROGRAMS[n] // 8 != program // 8, abs(A.GM_PROGRAMS[n] - program)),
    )


def _fold(pitch: int, low: int, high: int) -> tuple[int, bool]:
    folded = pitch
    while folded < low:
        folded += 12
    while folded >= high:
        folded -= 12
    return folded, folded != pitch


def _best_chord(pcs: set[int]) -> int | None:
    """Chord code whose pitch classes best match a set (None if nothing fits)."""
    best, best_score = None, 0.0
    for root in range(12):
        for q, name in enumerate(T.CHORD_QUALITIES):
            chord = {(root + i) % 12 for i in T.CHORD_INTERVALS[name]}
            score = len(chord & pcs) / len(chord | pcs) + 0.01 * (root in pcs)
            if score > best_score:
                best, best_score = root * len(T.CHORD_QUALITIES) + q, score
    return best if best_score >= 0.5 else None


def from_midi(
    path: str | Path, attrs: dict[str, str] | None = None
) -> tuple[np.ndarray, ImportReport]:
    """Map a .mid file onto tokens [SEQ_LEN]; attrs (e.g. parsed from a caption) fill the
    header where given, the rest is estimated or defaulted and reported."""
    path = Path(path)
    attrs = dict(attrs or {})
    A.check_attributes(attrs)
    if not path.is_file():
        raise FileNotFoundError(f"from_midi: MIDI file {path} does not exist")
    try:
        pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as err:  # pretty_midi / mido raise many types on corrupt files
        raise ValueError(f"from_midi: cannot parse MIDI file {path}: {err}") from err
    report = ImportReport(files=[str(path)])
    _, tempi = pm.get_tempo_changes()
    bpm = float(tempi[0]) if len(tempi) else 120.0
    tempo = attrs.get("tempo") or next(
        (name for name, lo, hi, _ in A.TEMPOS if lo <= bpm <= hi),
        "slow" if bpm < A.TEMPOS[0][1] else "very fast",
    )
    dt = 60.0 / (bpm * T.STEPS_PER_BEAT)  # the file's own sixteenth note
    piece = T.Piece(attrs={})
    melodic = [i for i in pm.instruments if not i.is_drum and i.notes]
    report.notes_in = sum(len(i.notes) for i in pm.instruments)

    def quantise(note) -> tuple[int, int] | None:
        start = int(round(note.start / dt))
        end = max(start + 1, int(round(note.end / dt)))
        if start >= T.N_STEPS:
            report.dropped["after two bars"] += 1
            return None
        return start, min(end, T.N_STEPS)

    # roles: bass = GM bass programs or the lowest part; lead = highest remaining part
    def mean_pitch(inst) -> float:
        return float(np.mean([n.pitch for n in inst.notes]))

    bass_parts = [i for i in melodic if 32 <= i.program <= 39]
    if not bass_parts and len(melodic) > 1 and min(mean_pitch(i) for i in melodic) < 52:
        bass_parts = [min(melodic, key=mean_pitch)]

    def polyphony(inst) -> float:  # share of notes starting together with another one
        starts = Counter(int(round(n.start / dt)) for n in inst.notes)
        return sum(c for c in starts.values() if c > 1) / len(inst.notes)

    rest = [i for i in melodic if i not in bass_parts]
    # lead: the most monophonic remaining part, the highest one among equals
    lead_part = min(rest, key=lambda i: (round(polyphony(i), 2), -mean_pitch(i))) if rest else None
    chord_parts = [i for i in rest if i is not lead_part]

    def monophonic(parts, low, high, track, role: str, keep_high: bool) -> None:
        """One note per onset step (the highest for a melody, the lowest for a bass)."""
        chosen: dict[int, tuple[int, int]] = {}  # start step -> (end step, pitch)
        for inst in parts:
            for note in inst.notes:
                q = quantise(note)
                if q is None:
                    continue
                pitch, moved = _fold(note.pitch, low, high)
                if moved:
                    report.changed[f"{role} notes moved by octaves into range"] += 1
                if q[0] in chosen:
                    report.dropped[f"{role} polyphony"] += 1
                    other = chosen[q[0]][1]
                    if (pitch <= other) if keep_high else (pitch >= other):
                        continue
                chosen[q[0]] = (q[1], pitch)
        starts = sorted(chosen)
        for i, start in enumerate(starts):
            end, pitch = chosen[start]
            nxt = starts[i + 1] if i + 1 < len(starts) else T.N_STEPS
            track[start] = pitch
            for step in range(start + 1, min(end, nxt)):
                track[step] = T.HOLD
        report.notes_kept += len(chosen)

    if lead_part is not None:
        monophonic([lead_part], T.MEL_LOW, T.MEL_HIGH, piece.melody, "melody", True)
    monophonic(bass_parts, T.BASS_LOW, T.BASS_HIGH, piece.bass, "bass", False)
    # chords: pitch classes sounding from each onset step
    onsets: dict[int, set[int]] = {}
    ends: dict[int, int] = {}
    for inst in chord_parts:
        for note in inst.notes:
            q = quantise(note)
            if q is None:
                continue
            onsets.setdefault(q[0], set()).add(note.pitch % 12)
            ends[q[0]] = max(ends.get(q[0], 0), q[1])
    for start in sorted(onsets):
        code = _best_chord(onsets[start])
        if code is None:
            report.dropped["chord not recognised"] += len(onsets[start])
            continue
        report.notes_kept += len(onsets[start])
        piece.chord[start] = code
        for s in range(start + 1, ends[start]):
            if s in onsets:
                break
            piece.chord[s] = T.HOLD
    for inst in pm.instruments:
        if not inst.is_drum:
            continue
        for note in inst.notes:
            step = int(round(note.start / dt))
            if step >= T.N_STEPS:
                report.dropped["after two bars"] += 1
            elif note.pitch not in _DRUM_MAP:
                report.dropped["unmapped drum note"] += 1
            else:
                piece.drums[step] |= 1 << _DRUM_MAP[note.pitch]
                report.notes_kept += 1

    # header: given attrs first, then estimates from the content, then defaults
    guess = {"tempo": tempo, "recording": "clean"}
    guess["lead"] = (
        _nearest_instrument(lead_part.program, A.LEAD_INSTRUMENTS) if lead_part else "piano"
    )
    guess["chords"] = (
        _nearest_instrument(chord_parts[0].program, A.CHORD_INSTRUMENTS) if chord_parts else "none"
    )
    guess["bass"] = (
        _nearest_instrument(bass_parts[0].program, A.BASS_INSTRUMENTS) if bass_parts else "none"
    )
    probe = dict(
        A.check_attributes(
            {"genre": "jazz", "mood": "calm", "key": "C", "mode": "major", "drums": "none", **guess}
        )
    )
    piece.attrs = probe
    feats = oracle.features(T.encode(piece))
    guess["drums"] = oracle.detect_drum_style(feats) if any(piece.drums) else "none"
    if any(piece.drums) and guess["drums"] == "none":
        guess["drums"] = "rock beat"
    guess["key"], guess["mode"] = oracle.estimate_key(feats, attrs.get("genre"))
    header = {}
    for name in A.ATTRIBUTE_NAMES:
        if name in attrs:
            header[name] = attrs[name]
        elif name in guess:
            header[name] = guess[name]
        else:
            header[name] = A.ATTRIBUTES[name][0]
            report.guessed[name] += 1
    piece.attrs = header
    # the recording is carried per step: a recording given by name covers the whole piece
    piece.rec = [A.RECORDINGS.index(header["recording"])] * T.N_STEPS
    return T.encode(piece), report
