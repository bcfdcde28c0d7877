"""Instrument timbres, chord tables and drum kits of the renderer (DESIGN.md section 5).

The renderer (render.py) reads every sound from tables built once per device:

- a band-limited wavetable per instrument (`_TIMBRES`: harmonic amplitudes), and per
  (instrument, chord quality) a whole chord in one period, its voices in just intonation
  (`JUST_RATIOS`), so a chord costs one table read, not one per voice;
- an attack / decay / sustain envelope per instrument;
- one-shots per kit (one kit per drum style) pre-mixed for all 32 hit sets;
- a seeded noise bed for the recording effects.

The paper's embedder and scorers see the waveform (section 2.2, eq. 3), so the timbres
are distinct: plucked / struck instruments decay, bowed / blown / electronic ones sustain.
Building the tables is deterministic (fixed seeds).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from suite.music import attributes as A
from suite.music import tokens as T

SAMPLE_RATE = 16000
AUDIO_SECONDS = 6.0
AUDIO_SAMPLES = int(SAMPLE_RATE * AUDIO_SECONDS)  # 96000
TABLE_SIZE = 2048
DRUM_LEN = 3000  # samples of a drum one-shot (one step at the slowest tempo)

# Per-instrument harmonic amplitudes (1st..12th) and envelope:
# (attack s, decay rate 1/s, sustain level, release s; the release is a fixed 6 ms fade
# in render.py, the last value is kept for the MIDI export's note tails). The tables make
# the timbres distinct: plucked / struck instruments decay, bowed / blown / electronic ones
# sustain.
_TIMBRES: dict[str, tuple[tuple[float, ...], tuple[float, float, float, float]]] = {
    "piano": ((1, 0.5, 0.33, 0.25, 0.18, 0.12, 0.08, 0.05), (0.004, 5.0, 0.15, 0.05)),
    "electric piano": ((1, 0.3, 0.05, 0.02, 0, 0, 0.15, 0, 0, 0.05), (0.004, 3.5, 0.25, 0.08)),
    "organ": ((1, 0.8, 0.6, 0.5, 0, 0.4, 0, 0.3), (0.01, 0.0, 1.0, 0.03)),
    "acoustic guitar": ((1, 0.7, 0.45, 0.35, 0.2, 0.15, 0.1, 0.08, 0.05), (0.003, 7.0, 0.05, 0.04)),
    "electric guitar": ((1, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1), (0.004, 3.0, 0.35, 0.05)),
    "distorted guitar": ((), (0.004, 1.0, 0.7, 0.05)),  # tanh-shaped saw, built below
    "violin": (tuple(1.0 / n for n in range(1, 13)), (0.06, 0.5, 0.8, 0.08)),
    "strings": (tuple(1.0 / n**1.4 for n in range(1, 13)), (0.18, 0.3, 0.85, 0.2)),
    "flute": ((1, 0.25, 0.1, 0.04), (0.05, 0.5, 0.8, 0.06)),
    "saxophone": ((1, 0.6, 0.8, 0.7, 0.5, 0.3, 0.2, 0.12, 0.08), (0.03, 1.0, 0.7, 0.06)),
    "trumpet": ((0.6, 0.9, 1.0, 0.85, 0.6, 0.4, 0.25, 0.15, 0.1), (0.025, 1.5, 0.7, 0.05)),
    "synth lead": (
        tuple((1.0 / n if n % 2 else 0.0) for n in range(1, 13)),
        (0.005, 0.0, 1.0, 0.02),
    ),
    "synth pad": (tuple(0.7 / n for n in range(1, 9)), (0.3, 0.2, 0.9, 0.3)),
    "voice": ((1, 0.9, 0.7, 0.2, 0.1, 0.05, 0.3, 0.2, 0.05), (0.06, 0.4, 0.85, 0.1)),
    "choir": ((1, 0.7, 0.5, 0.15, 0.05, 0.2, 0.15), (0.2, 0.2, 0.9, 0.25)),
    "acoustic bass": ((1, 0.5, 0.2, 0.1), (0.006, 4.0, 0.2, 0.05)),
    "electric bass": ((1, 0.6, 0.4, 0.25, 0.15, 0.1), (0.004, 2.0, 0.5, 0.04)),
    "synth bass": (tuple(1.0 / n for n in range(1, 9)), (0.004, 1.5, 0.6, 0.03)),
}
INSTRUMENT_INDEX = {name: i for i, name in enumerate(A.INSTRUMENTS)}
# Just-intonation voice ratios of each chord quality (first entry = the root).
JUST_RATIOS: dict[str, tuple[int, ...]] = {
    "maj": (4, 5, 6),
    "min": (10, 12, 15),
    "7": (4, 5, 6, 7),
    "maj7": (8, 10, 12, 15),
    "m7": (10, 12, 15, 18),
    "dim": (5, 6, 7),
    "sus4": (6, 8, 9),
    "5": (2, 3, 4),
}


@lru_cache(maxsize=8)
def synth_tables(device: str) -> dict:
    """Wavetables (instruments, then instrument x chord quality), envelopes, drums, noise."""
    phase = torch.arange(TABLE_SIZE, dtype=torch.float64) / TABLE_SIZE * 2 * math.pi
    tables, envs = [], []

    def tone(name: str, ratio: int) -> torch.Tensor:
        harmonics = _TIMBRES[name][0]
        if name == "distorted guitar":
            saw = sum(torch.sin(n * ratio * phase) / n for n in range(1, 9))
            return torch.tanh(4.0 * saw)
        return sum(a * torch.sin((n + 1) * ratio * phase) for n, a in enumerate(harmonics))

    for name in A.INSTRUMENTS:
        wave = tone(name, 1)
        tables.append(wave / wave.abs().max())
        envs.append(_TIMBRES[name][1])
    # Chord tables: a whole chord in one period, voices in just intonation over a common
    # base frequency (root / first ratio), so a chord costs one table read, not one per voice.
    for name in A.INSTRUMENTS:
        for quality in T.CHORD_QUALITIES:
            wave = sum(tone(name, n) for n in JUST_RATIOS[quality])
            tables.append(wave / wave.abs().max())
    out = {
        "wave": torch.stack(tables).float().reshape(-1).to(device),  # [n_tables * TABLE_SIZE]
        # (attack s, decay 1/s, sustain) per instrument, [n_inst, 3]
        "env": torch.tensor([e[:3] for e in envs], dtype=torch.float32, device=device),
        "drums": _drum_kits().reshape(-1).to(device),  # [n_styles * 32 * DRUM_LEN]
    }
    gen = torch.Generator().manual_seed(20240917)
    out["noise"] = (torch.rand(AUDIO_SAMPLES, generator=gen) * 2 - 1).to(device)  # [T]
    return out


def _drum_kits() -> torch.Tensor:
    """Pre-mixed one-shots for every (drum style, hit set): [n_styles, 32, DRUM_LEN]."""
    gen = torch.Generator().manual_seed(7)
    t = torch.arange(DRUM_LEN, dtype=torch.float64) / SAMPLE_RATE
    noise = torch.rand(DRUM_LEN, generator=gen, dtype=torch.float64) * 2 - 1
    # a crude high-pass for cymbals: first difference of white noise
    bright = torch.cat([noise[:1], noise[1:] - noise[:-1]]) / 2

    def kick(f0: float, f1: float, decay: float) -> torch.Tensor:
        freq = f1 + (f0 - f1) * torch.exp(-t * 30)
        ph = 2 * math.pi * torch.cumsum(freq, 0) / SAMPLE_RATE
        return torch.sin(ph) * torch.exp(-t * decay)

    def snare(tone: float, noise_amt: float, decay: float) -> torch.Tensor:
        body = torch.sin(2 * math.pi * tone * t) * torch.exp(-t * 30)
        return (0.5 * body + noise_amt * noise) * torch.exp(-t * decay)

    def metal(decay: float, amt: float) -> torch.Tensor:
        ring = torch.sin(2 * math.pi * 5400 * t) * 0.2 + torch.sin(2 * math.pi * 7300 * t) * 0.15
        return amt * (bright + ring) * torch.exp(-t * decay)

    def click(freq: float, decay: float) -> torch.Tensor:
        return torch.sin(2 * math.pi * freq * t) * torch.exp(-t * decay)

    kits = []
    for style in A.DRUM_STYLES:
        # (kick, snare, hihat, ride, percussion) one-shots per style
        if style == "four on the floor":
            parts = [
                kick(160, 45, 9),
                snare(900, 1.0, 18),
                metal(45, 0.6),
                metal(9, 0.4),
                (noise * torch.exp(-t * 25)) * 0.8,
            ]  # clap
        elif style == "boom bap":
            parts = [
                kick(120, 50, 12),
                snare(200, 0.9, 14),
                metal(60, 0.4),
                metal(10, 0.3),
                click(800, 60),
            ]
        elif style in ("jazz swing", "brushes"):
            parts = [
                kick(90, 55, 18),
                snare(220, 0.35, 10) * 0.6,
                metal(50, 0.3),
                metal(6, 0.55),
                click(1200, 50) * 0.5,
            ]
        elif style == "bossa groove":
            parts = [
                kick(100, 55, 16),
                snare(250, 0.5, 20),
                metal(55, 0.35),
                metal(8, 0.4),
                click(1700, 90),
            ]  # rim click
        elif style == "double kick":
            parts = [
                kick(140, 60, 25),
                snare(240, 1.0, 16),
                metal(40, 0.5),
                metal(7, 0.6),
                click(600, 40),
            ]
        elif style == "ambient pulse":
            parts = [
                kick(70, 40, 6) * 0.6,
                snare(300, 0.2, 8) * 0.5,
                metal(20, 0.2),
                metal(3, 0.3),
                click(440, 8) * 0.5,
            ]
        else:  # rock beat, shuffle, none (a generic kit for stray hits)
            parts = [
                kick(130, 50, 14),
                snare(190, 0.8, 13),
                metal(45, 0.45),
                metal(7, 0.45),
                click(900, 50),
            ]
        parts_t = torch.stack(parts)  # [5, DRUM_LEN]
        bits = torch.tensor(
            [[(h >> b) & 1 for b in range(len(A.DRUM_PARTS))] for h in range(T.N_DRUM_SETS)],
            dtype=torch.float64,
        )  # [32, 5]
        kits.append(bits @ parts_t)  # [32, DRUM_LEN]
    kit = torch.stack(kits)
    kit[..., -16:] *= torch.linspace(1, 0, 16, dtype=torch.float64)  # no click at the end
    kit[..., -1] = 0.0  # reads past the one-shot land on silence
    return kit.float()
