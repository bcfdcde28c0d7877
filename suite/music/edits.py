"""Token edits of the embedded music world: transposition, tempo shifts and recordings.

Used as augmentations (the embedder's pitch / tempo shifts, `datamodules.audio`) and as
controlled changes in the world's diagnostics (`suite.world_diagnostics`): each edits the
token sequence, so the renderer plays the edited piece without resampling artefacts.
"""

from __future__ import annotations

import torch

from suite.music import attributes as A
from suite.music import tokens as T


def _header_pos(name: str) -> int:
    return A.HEADER_NAMES.index(name)


def with_recording(tokens: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
    """`[B, L]` tokens re-recorded: `rec` ([B] for the whole piece or [B, N_STEPS] per step,
    indices into `attributes.RECORDINGS`) replaces the recording part of every perf token;
    the performance part and every other token stay (invalid perf tokens read as "ok")."""
    out = tokens.clone()
    pos = torch.as_tensor(T.track_positions("perf"), device=tokens.device)
    perf, _ = T.step_flaws(tokens)  # [B, N_STEPS]
    rec = rec.to(tokens.device).long()
    rec = rec[:, None].expand_as(perf) if rec.dim() == 1 else rec
    out[:, pos] = T.TYPE_RANGES["perf"][0] + perf * T.N_REC + rec
    return out


def transpose_tokens(tokens: torch.Tensor, semitones: torch.Tensor) -> torch.Tensor:
    """Transpose `[B, L]` tokens by `[B]` semitones (melody, bass, chord roots, key)."""
    out = tokens.clone()
    k = semitones.to(tokens.device).long()[:, None]  # [B, 1]
    for track, low, high in (
        ("melody", T.MEL_LOW, T.MEL_HIGH),
        ("bass_note", T.BASS_LOW, T.BASS_HIGH),
    ):
        pos = torch.as_tensor(T.track_positions(track), device=tokens.device)
        start = T.TYPE_RANGES[track][0]
        local = tokens[:, pos] - start  # [B, N_STEPS]
        pitch = low + local - 2 + k
        pitch = torch.where(pitch >= high, pitch - 12, pitch)  # fold back into the range
        pitch = torch.where(pitch < low, pitch + 12, pitch)
        is_note = (local >= 2) & (local < 2 + high - low)
        out[:, pos] = torch.where(is_note, start + 2 + pitch - low, tokens[:, pos])
    pos = torch.as_tensor(T.track_positions("chord"), device=tokens.device)
    start = T.TYPE_RANGES["chord"][0]
    code = tokens[:, pos] - start - 2
    nq = len(T.CHORD_QUALITIES)
    root, quality = code // nq, code % nq
    moved = start + 2 + ((root + k) % 12) * nq + quality
    out[:, pos] = torch.where((code >= 0) & (code < T.N_CHORDS), moved, tokens[:, pos])
    kp, (ks, ke) = _header_pos("key"), T.TYPE_RANGES["key"]
    key = tokens[:, kp] - ks
    valid = (key >= 0) & (key < ke - ks)
    out[:, kp] = torch.where(valid, ks + (key + k[:, 0]) % 12, tokens[:, kp])
    return out


def shift_tempo(tokens: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Move the tempo header of `[B, L]` tokens by `[B]` buckets (clamped to the range)."""
    out = tokens.clone()
    tp, (ts, te) = _header_pos("tempo"), T.TYPE_RANGES["tempo"]
    tempo = tokens[:, tp] - ts
    valid = (tempo >= 0) & (tempo < te - ts)
    moved = ts + (tempo + delta.to(tokens.device).long()).clamp(0, te - ts - 1)
    out[:, tp] = torch.where(valid, moved, tokens[:, tp])
    return out
