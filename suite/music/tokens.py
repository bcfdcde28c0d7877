"""Token grammar of the embedded music world (DESIGN.md section 5).

The paper's generator (MusicLM, section 3.1) is an autoregressive LM over discrete audio
tokens. The embedded world replaces audio codec tokens with a fixed-length symbolic
sequence in the spirit of MusicGen's parallel codebooks, small enough that a ~1M-parameter
transformer learns it on a CPU.

Grammar (every position has exactly one token type, so `allowed_mask()` is exact):

    position 0..8     header, one token per attribute, in `attributes.HEADER_NAMES` order:
                      genre mood tempo key mode lead chords bass drums
    position 9..168   32 steps (sixteenth notes, two 4/4 bars) x 5 tracks, step-major:
                      [melody, chord, bass_note, drum_hits, perf] for step 0, then step 1 ...

Per-step token types:

    melody     REST | HOLD | NOTE(p) p in MIDI 48..95   (HOLD sustains the sounding note)
    chord      REST | HOLD | CHORD(root, quality), 12 roots x 8 qualities (CHORD_QUALITIES)
    bass_note  REST | HOLD | NOTE(p) p in MIDI 28..55
    drum_hits  one of 32 hit sets: bit i set = `attributes.DRUM_PARTS[i]` struck (0 = nothing)
    perf       (performance, recording) of the step: PERFORMANCE ok | early | late | dropout |
               detuned  x  RECORDINGS clean | noisy | distorted | lo-fi; local index
               `perf * N_REC + rec`; anything but (ok, clean) is a flaw at that step

The recording quality lives in the steps, not in the header (world version 2): the first
world announced a bad recording with one header token before the content, and CFG won 83 %
of its quality gain by flipping that one token. Now a recording flaw is a run of steps,
and a piece-level `attrs["recording"]` (the captions' word) is derived from the steps.

Every token id belongs to exactly one type; the type ranges are disjoint and contiguous,
`VOCAB_SIZE` is their total. `decode` maps ANY integer sequence (an untrained model's
output included) to a `Decoded` piece: tokens of the wrong type, out of range or a wrong
length are counted in `n_invalid` and replaced by the type's neutral default, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from suite.music import attributes as A

N_STEPS = 32  # sixteenth notes: two bars of 4/4
STEPS_PER_BEAT = 4
# Track token-type names (distinct from the header attributes "bass" and "drums").
TRACKS: tuple[str, ...] = ("melody", "chord", "bass_note", "drum_hits", "perf")
# Piece field holding each track.
TRACK_FIELDS: dict[str, str] = dict(zip(TRACKS, ("melody", "chord", "bass", "drums", "perf")))
HEADER_LEN = len(A.HEADER_NAMES)
STEP_LEN = len(TRACKS)
SEQ_LEN = HEADER_LEN + N_STEPS * STEP_LEN  # 169
N_REC = len(A.RECORDINGS)  # the perf token's recording component

# Special per-track symbols (local indices inside the melody / chord / bass ranges).
REST = -1
HOLD = -2

MEL_LOW, MEL_HIGH = 48, 96  # MIDI pitches [low, high)
BASS_LOW, BASS_HIGH = 28, 56
CHORD_QUALITIES: tuple[str, ...] = ("maj", "min", "7", "maj7", "m7", "dim", "sus4", "5")
CHORD_INTERVALS: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "m7": (0, 3, 7, 10),
    "dim": (0, 3, 6),
    "sus4": (0, 5, 7),
    "5": (0, 7, 12),
}
N_CHORDS = 12 * len(CHORD_QUALITIES)
N_DRUM_SETS = 1 << len(A.DRUM_PARTS)

# Token types in vocabulary order: (name, size).
_TYPE_SIZES: tuple[tuple[str, int], ...] = (
    *((name, len(A.ATTRIBUTES[name])) for name in A.HEADER_NAMES),
    ("melody", 2 + (MEL_HIGH - MEL_LOW)),
    ("chord", 2 + N_CHORDS),
    ("bass_note", 2 + (BASS_HIGH - BASS_LOW)),
    ("drum_hits", N_DRUM_SETS),
    ("perf", len(A.PERFORMANCE) * N_REC),
)
TOKEN_TYPES: tuple[str, ...] = tuple(name for name, _ in _TYPE_SIZES)
TYPE_RANGES: dict[str, tuple[int, int]] = {}
_start = 0
for _name, _size in _TYPE_SIZES:
    TYPE_RANGES[_name] = (_start, _start + _size)
    _start += _size
VOCAB_SIZE = _start

POSITION_TYPES: tuple[str, ...] = (*A.HEADER_NAMES, *(TRACKS * N_STEPS))
assert len(POSITION_TYPES) == SEQ_LEN

# Neutral local index used where a token is invalid: header defaults to the first value
# except tempo (the middle bucket); tracks default to REST / no hit / ok.
_DEFAULT_LOCAL: dict[str, int] = {name: 0 for name in TOKEN_TYPES}
_DEFAULT_LOCAL["tempo"] = 2


def track_positions(track: str) -> np.ndarray:
    """Sequence positions of one per-step track, [N_STEPS]."""
    if track not in TRACKS:
        raise ValueError(f"track_positions: unknown track {track!r}; expected one of {TRACKS}")
    return HEADER_LEN + np.arange(N_STEPS) * STEP_LEN + TRACKS.index(track)


@lru_cache(maxsize=1)
def _mask() -> torch.Tensor:
    mask = torch.zeros(SEQ_LEN, VOCAB_SIZE, dtype=torch.bool)
    for pos, kind in enumerate(POSITION_TYPES):
        lo, hi = TYPE_RANGES[kind]
        mask[pos, lo:hi] = True
    return mask


def allowed_mask() -> torch.BoolTensor:
    """The grammar as a mask: `[SEQ_LEN, VOCAB_SIZE]`, True where a token may appear."""
    return _mask().clone()


@lru_cache(maxsize=1)
def _position_tables() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    starts = torch.tensor([TYPE_RANGES[k][0] for k in POSITION_TYPES])  # [L]
    sizes = torch.tensor([TYPE_RANGES[k][1] - TYPE_RANGES[k][0] for k in POSITION_TYPES])
    defaults = torch.tensor([_DEFAULT_LOCAL[k] for k in POSITION_TYPES])
    return starts, sizes, defaults


def local_indices(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position index inside the position's type range, vectorised and crash-free.

    tokens: LongTensor [B, SEQ_LEN] (any values). Returns (local [B, L], valid [B, L]) where
    invalid tokens (wrong type / out of range) get the type's neutral default.
    """
    if tokens.dim() != 2 or tokens.shape[1] != SEQ_LEN:
        raise ValueError(f"local_indices: tokens must be [B, {SEQ_LEN}], got {tuple(tokens.shape)}")
    starts, sizes, defaults = (t.to(tokens.device) for t in _position_tables())
    local = tokens.long() - starts  # [B, L]
    valid = (local >= 0) & (local < sizes)
    return torch.where(valid, local, defaults.expand_as(local)), valid


def step_flaws(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(performance [B, N_STEPS], recording [B, N_STEPS]) codes of `[B, SEQ_LEN]` tokens;
    invalid perf tokens read as (ok, clean)."""
    local, _ = local_indices(tokens)
    perf_rec = local[:, torch.as_tensor(track_positions("perf"), device=tokens.device)]
    return perf_rec // N_REC, perf_rec % N_REC


# ---------------------------------------------------------------------------- pieces


@dataclass
class Piece:
    """A piece in musical terms; `encode` turns it into tokens, `decode` back.

    melody / bass: per step a MIDI pitch, REST or HOLD. chord: per step REST, HOLD or a
    chord code `root * len(CHORD_QUALITIES) + quality`. drums: per step a hit-set bitmask.
    perf: per step an index into `attributes.PERFORMANCE`; rec: per step an index into
    `attributes.RECORDINGS`. attrs["recording"] is the captions' piece-level word; `encode`
    ignores it (the steps carry the recording) and `decode` derives it from `rec`.
    """

    attrs: dict[str, str]
    melody: list[int] = field(default_factory=lambda: [REST] * N_STEPS)
    chord: list[int] = field(default_factory=lambda: [REST] * N_STEPS)
    bass: list[int] = field(default_factory=lambda: [REST] * N_STEPS)
    drums: list[int] = field(default_factory=lambda: [0] * N_STEPS)
    perf: list[int] = field(default_factory=lambda: [0] * N_STEPS)
    rec: list[int] = field(default_factory=lambda: [0] * N_STEPS)


def piece_recording(rec) -> str:
    """The piece-level recording word of per-step recording codes: the most frequent flaw
    (ties to the first in `RECORDINGS` order), "clean" when every step is clean."""
    counts = np.bincount(np.asarray(rec, dtype=np.int64), minlength=N_REC)[1:N_REC]
    return A.RECORDINGS[1 + int(counts.argmax())] if counts.sum() else A.RECORDINGS[0]


@dataclass
class Decoded(Piece):
    """A decoded token sequence: a `Piece` plus what had to be repaired.

    attrs holds every header attribute (an invalid header token reads as its default and
    is listed in `invalid_header`) and the piece-level recording (`piece_recording`). n_invalid counts all invalid tokens.
    """

    n_invalid: int = 0
    invalid_header: list[str] = field(default_factory=list)


def _pitch_token(kind: str, value: int, low: int, high: int) -> int:
    lo, _ = TYPE_RANGES[kind]
    if value == REST:
        return lo
    if value == HOLD:
        return lo + 1
    if not low <= value < high:
        raise ValueError(f"encode: {kind} pitch {value} outside MIDI range [{low}, {high})")
    return lo + 2 + value - low


def encode(piece: Piece) -> np.ndarray:
    """Tokens of a piece, int64 [SEQ_LEN]; unknown attribute values raise ValueError."""
    A.check_attributes(piece.attrs, complete=True)
    for name in (*TRACK_FIELDS.values(), "rec"):
        if len(getattr(piece, name)) != N_STEPS:
            raise ValueError(
                f"encode: track '{name}' has {len(getattr(piece, name))} steps, expected {N_STEPS}"
            )
    out = np.empty(SEQ_LEN, dtype=np.int64)
    for pos, name in enumerate(A.HEADER_NAMES):
        out[pos] = TYPE_RANGES[name][0] + A.check_value(name, piece.attrs[name])
    for step in range(N_STEPS):
        base = HEADER_LEN + step * STEP_LEN
        out[base + 0] = _pitch_token("melody", piece.melody[step], MEL_LOW, MEL_HIGH)
        chord = piece.chord[step]
        lo = TYPE_RANGES["chord"][0]
        if chord in (REST, HOLD):
            out[base + 1] = lo + (0 if chord == REST else 1)
        elif 0 <= chord < N_CHORDS:
            out[base + 1] = lo + 2 + chord
        else:
            raise ValueError(f"encode: chord code {chord} outside [0, {N_CHORDS})")
        out[base + 2] = _pitch_token("bass_note", piece.bass[step], BASS_LOW, BASS_HIGH)
        hits = piece.drums[step]
        if not 0 <= hits < N_DRUM_SETS:
            raise ValueError(f"encode: drum hit set {hits} outside [0, {N_DRUM_SETS})")
        out[base + 3] = TYPE_RANGES["drum_hits"][0] + hits
        perf, rec = piece.perf[step], piece.rec[step]
        if not 0 <= perf < len(A.PERFORMANCE):
            raise ValueError(f"encode: performance code {perf} outside [0, {len(A.PERFORMANCE)})")
        if not 0 <= rec < N_REC:
            raise ValueError(f"encode: recording code {rec} outside [0, {N_REC})")
        out[base + 4] = TYPE_RANGES["perf"][0] + perf * N_REC + rec
    return out


def decode(tokens) -> Decoded:
    """Decode any 1-D integer sequence; never raises on content, counts what was invalid.

    Too short sequences are padded with invalid tokens, too long ones truncated (both
    counted). Non-integer input (e.g. floats) is rounded.
    """
    arr = np.asarray(torch.as_tensor(tokens).detach().cpu().reshape(-1).double().numpy())
    arr = np.where(np.isfinite(arr), arr, -1).round().astype(np.int64)
    n_invalid = abs(len(arr) - SEQ_LEN)
    if len(arr) < SEQ_LEN:
        arr = np.concatenate([arr, np.full(SEQ_LEN - len(arr), -1, dtype=np.int64)])
        n_invalid = 0  # the padding is counted below as invalid tokens
    arr = arr[:SEQ_LEN]
    local, valid = local_indices(torch.from_numpy(arr)[None])
    local, valid = local[0].numpy(), valid[0].numpy()
    n_invalid += int((~valid).sum())
    attrs = {}
    invalid_header = []
    for pos, name in enumerate(A.HEADER_NAMES):
        attrs[name] = A.ATTRIBUTES[name][local[pos]]
        if not valid[pos]:
            invalid_header.append(name)
    perf_rec = local[track_positions("perf")]
    attrs["recording"] = piece_recording(perf_rec % N_REC)

    def pitches(track: str, low: int) -> list[int]:
        vals = local[track_positions(track)]
        return [REST if v == 0 else HOLD if v == 1 else low + v - 2 for v in vals.tolist()]

    chords = local[track_positions("chord")]
    return Decoded(
        attrs=attrs,
        melody=pitches("melody", MEL_LOW),
        chord=[REST if v == 0 else HOLD if v == 1 else v - 2 for v in chords.tolist()],
        bass=pitches("bass_note", BASS_LOW),
        drums=local[track_positions("drum_hits")].tolist(),
        perf=(perf_rec // N_REC).tolist(),
        rec=(perf_rec % N_REC).tolist(),
        n_invalid=n_invalid,
        invalid_header=invalid_header,
    )


def chord_pitches(code: int, base: int = 48) -> list[int]:
    """MIDI pitches of a chord code, root placed in the octave starting at `base`."""
    root, quality = divmod(int(code), len(CHORD_QUALITIES))
    return [base + root + i for i in CHORD_INTERVALS[CHORD_QUALITIES[quality]]]


def chord_code(root: int, quality: str) -> int:
    if quality not in CHORD_QUALITIES:
        raise ValueError(f"chord_code: unknown quality {quality!r}; expected {CHORD_QUALITIES}")
    return (int(root) % 12) * len(CHORD_QUALITIES) + CHORD_QUALITIES.index(quality)


def note_spans(track: list[int]) -> list[tuple[int, int, int]]:
    """(start step, end step exclusive, value) of every sounding event of a track.

    HOLD extends the previous event; a HOLD with nothing sounding is silence.
    """
    spans: list[tuple[int, int, int]] = []
    current: list[int] | None = None
    for step, value in enumerate(track):
        if value == HOLD:
            if current is not None:
                current[1] = step + 1
            continue
        if current is not None:
            spans.append(tuple(current))
            current = None
        if value != REST:
            current = [step, step + 1, value]
    if current is not None:
        spans.append(tuple(current))
    return spans


def token_name(token: int, position: int | None = None) -> str:
    """Human-readable name of a token id (for debugging and docs)."""
    for kind, (lo, hi) in TYPE_RANGES.items():
        if lo <= token < hi:
            i = token - lo
            if kind in A.ATTRIBUTES:
                return f"{kind}:{A.ATTRIBUTES[kind][i]}"
            if kind in ("melody", "bass_note"):
                low = MEL_LOW if kind == "melody" else BASS_LOW
                return f"{kind}:" + ("REST" if i == 0 else "HOLD" if i == 1 else str(low + i - 2))
            if kind == "chord":
                if i < 2:
                    return "chord:" + ("REST" if i == 0 else "HOLD")
                root, q = divmod(i - 2, len(CHORD_QUALITIES))
                return f"chord:{A.KEYS[root]}{CHORD_QUALITIES[q]}"
            if kind == "drum_hits":
                parts = [p for b, p in enumerate(A.DRUM_PARTS) if i >> b & 1]
                return "drums:" + ("+".join(parts) or "-")
            perf, rec = divmod(i, N_REC)
            return f"perf:{A.PERFORMANCE[perf]}/{A.RECORDINGS[rec]}"
    return f"<invalid {token}>"
