"""MIDI and WAV export / import for the embedded music world (DESIGN.md section 5).

The paper's listeners judge audio (section 3.1, appendix F); the suite also lets a person
open any generation in a DAW: `to_midi` turns ANY token sequence (a generation included;
invalid tokens read as rests) into a `pretty_midi.PrettyMIDI` with one track per part and
General MIDI programs, `write_midi` / `write_wav` write files atomically.

`from_midi` maps a user's .mid file onto the grammar (first two bars of sixteenth notes,
monophonic melody and bass, one chord per onset) and returns an `ImportReport` of what it
had to drop or guess; `build_midi_corpus` turns a folder of .mid files plus a CSV of
captions into a corpus cached like the composed one.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf
from tqdm.auto import tqdm

from suite.music import attributes as A
from suite.music import tokens as T

RESOLUTION = 480  # ticks per beat: a sixteenth note is exactly 120 ticks
TIMING_SHIFT = 1.0 / 3.0  # early / late displacement in steps (as the renderer)
VELOCITY = {"melody": 96, "chord": 70, "bass": 92, "drums": 100}
_PROGRAM_TO_INSTRUMENT = {prog: name for name, prog in A.GM_PROGRAMS.items()}


def step_seconds(tempo: str) -> float:
    bpm = A.TEMPO_BPM[A.TEMPO_NAMES.index(tempo)]
    return 60.0 / (bpm * T.STEPS_PER_BEAT)


def to_midi(tokens) -> pretty_midi.PrettyMIDI:
    """A PrettyMIDI of one token sequence (any integers; decoding never fails).

    One pass of the 32 steps (the renderer loops it). Early / late steps move the melodic
    onsets as in the renderer, detuned notes get a quarter-tone pitch bend, notes starting
    in a dropout step are left out (the renderer silences them).
    """
    dec = T.decode(tokens)
    bpm = A.TEMPO_BPM[A.TEMPO_NAMES.index(dec.attrs["tempo"])]
    pm = pretty_midi.PrettyMIDI(initial_tempo=float(bpm), resolution=RESOLUTION)
    dt = step_seconds(dec.attrs["tempo"])
    shift = {1: -TIMING_SHIFT * dt, 2: TIMING_SHIFT * dt}

    def onset(step: int) -> float:
        return max(0.0, step * dt + shift.get(dec.perf[step], 0.0))

    def add_part(name: str, program: int, spans, pitches_of, velocity: int) -> None:
        inst = pretty_midi.Instrument(program=program, name=name)
        for start, end, value in spans:
            if dec.perf[start] == 3:
                continue
            t0, t1 = onset(start), end * dt
            if dec.perf[start] == 4:  # detuned: +1/4 tone with the default +-2 semitone range
                inst.pitch_bends.append(pretty_midi.PitchBend(2048, t0))
                inst.pitch_bends.append(pretty_midi.PitchBend(0, t1))
            for pitch in pitches_of(value):
                inst.notes.append(pretty_midi.Note(velocity, int(pitch), t0, max(t1, t0 + dt / 4)))
        pm.instruments.append(inst)

    add_part(
        "lead: " + dec.attrs["lead"],
        A.GM_PROGRAMS[dec.attrs["lead"]],
        T.note_spans(dec.melody),
        lambda p: [p],
        VELOCITY["melody"],
    )
    if dec.attrs["chords"] != "none":
        add_part(
            "chords: " + dec.attrs["chords"],
            A.GM_PROGRAMS[dec.attrs["chords"]],
            T.note_spans(dec.chord),
            T.chord_pitches,
            VELOCITY["chord"],
        )
    if dec.attrs["bass"] != "none":
        add_part(
            "bass: " + dec.attrs["bass"],
            A.GM_PROGRAMS[dec.attrs["bass"]],
            T.note_spans(dec.bass),
            lambda p: [p],
            VELOCITY["bass"],
        )
    if dec.attrs["drums"] != "none":
        drums = pretty_midi.Instrument(program=0, is_drum=True, name="drums: " + dec.attrs["drums"])
        for step, hits in enumerate(dec.drums):
            if dec.perf[step] == 3:
                continue
            for bit, note in enumerate(A.DRUM_GM_NOTES):
                if hits >> bit & 1:
                    drums.notes.append(
                        pretty_midi.Note(VELOCITY["drums"], note, step * dt, step * dt + dt / 2)
                    )
        pm.instruments.append(drums)
    return pm


def _atomic_write(path: str | Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_midi(tokens, path: str | Path) -> Path:
    """Write the MIDI file of a token sequence atomically; returns the path."""
    pm = to_midi(tokens)
    return _atomic_write(path, pm.write)


def write_wav(audio, path: str | Path, sample_rate: int = 16000) -> Path:
    """Write mono float audio ([S] tensor or array, in [-1, 1]) as 16-bit PCM WAV."""
    data = np.asarray(
        audio.detach().cpu() if hasattr(audio, "detach") else audio, dtype=np.float32
    ).reshape(-1)
    if not np.isfinite(data).all():
        raise ValueError(f"write_wav: audio for {path} contains NaN or inf")
    return _atomic_write(
        path,
        lambda p: sf.write(p, np.clip(data, -1, 1), sample_rate, subtype="PCM_16", format="WAV"),
    )


# --------------------------------------------------------------------------- import


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
    from suite.music import oracle  # the oracle's key / drum readers (no import cycle)

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
    return T.encode(piece), report


def build_midi_corpus(
    folder: str | Path,
    captions_csv: str | Path | None = None,
    root: str | Path | None = None,
    progress: bool = True,
):
    """A corpus from a folder of .mid files, captions from a CSV (columns file, caption).

    Header attributes are parsed from each caption where it names them. Returns (Corpus,
    ImportReport); the corpus is cached under `<root>/artifacts/music_corpus/midi-<hash>`.
    """
    from suite.music import corpus as corpus_mod
    from suite.music import oracle

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"build_midi_corpus: MIDI folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".mid", ".midi"))
    if not files:
        raise ValueError(f"build_midi_corpus: no .mid files in {folder}")
    caption_of: dict[str, str] = {}
    if captions_csv is not None:
        captions_csv = Path(captions_csv)
        if not captions_csv.is_file():
            raise FileNotFoundError(f"build_midi_corpus: captions CSV {captions_csv} not found")
        with captions_csv.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
                raise ValueError(
                    f"build_midi_corpus: {captions_csv} needs 'file' and 'caption' "
                    f"columns, found {reader.fieldnames}"
                )
            for row in reader:
                caption_of[Path(row["file"]).name] = row["caption"] or ""
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode())
        digest.update(p.read_bytes())
    digest.update(repr(sorted(caption_of.items())).encode())
    report = ImportReport()
    toks, caps, attrs = [], [], []
    for p in tqdm(files, desc="importing MIDI", disable=not progress):
        caption = caption_of.get(p.name, "")
        parsed = {k: v for k, v in oracle.parse_prompt(caption).items() if k in A.ATTRIBUTES}
        row, rep = from_midi(p, parsed)
        report.merge(rep)
        toks.append(row)
        caps.append(caption)
        attrs.append(T.decode(row).attrs)
    corpus = corpus_mod.Corpus(np.stack(toks), caps, attrs, [{} for _ in files])
    directory = corpus_mod.artifacts_dir(root) / "music_corpus" / f"midi-{digest.hexdigest()[:12]}"
    corpus_mod.save(corpus, directory, {"source": str(folder), "import": report.summary()})
    corpus.path = directory
    return corpus, report
