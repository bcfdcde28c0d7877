"""Batched torch synthesiser: tokens -> 16 kHz mono audio (DESIGN.md section 5).

The paper's diversity reward and quality metrics are computed on rendered AUDIO (section
2.2, eq. 3: the embedder E sees the waveform). The embedded world therefore turns every
token sequence into a waveform with the same quality cues the tokens carry: out-of-key and
detuned notes, late / early notes, dropouts, and recording effects (noise, distortion,
lo-fi) selected step by step by the recording part of each step's perf token.

Design, all vectorised over [B, T] (no Python loop over notes or samples):

- Time: a piece is 32 sixteenth-note steps at the header tempo's BPM (`attributes.TEMPOS`);
  it loops to fill `AUDIO_SAMPLES` = 6 s (the slowest tempo, 80 BPM, lasts exactly 6 s).
- Melodic tracks (melody, 4 chord voices, bass): per step the sounding pitch, its onset
  time and its end time are tabulated ([B, S, F]); one gather per sample gives the note
  under the sample; the timbre is a band-limited wavetable per instrument read at the
  note's phase, shaped by an attack / decay / sustain / release envelope per instrument.
- Early / late steps move the boundary of the melodic tracks by a third of a step around
  that step (drums stay on the grid, so the band audibly flams); detuned steps play the
  note a quarter-tone sharp; dropout steps are silent.
- Drums: one-shots per kit (one kit per drum style) pre-mixed for all 32 hit sets, read
  at the time since the last hit.
- Recording: peak-normalised mix, then, on the samples of each step whose recording is
  flawed, noise + hum, tanh distortion with clipping, or lo-fi (sample-and-hold to 4 kHz,
  coarse quantisation, hiss); output in [-1, 1].

Everything runs on the tokens' device. Rendering is deterministic for given tokens. The
timbres, chord tables and drum kits are built in render_tables.py; this module mixes them.
"""

from __future__ import annotations

import math

import torch

from suite.music import attributes as A
from suite.music import tokens as T
from suite.music.render_tables import (  # noqa: F401 (re-exported: render.SAMPLE_RATE, ...)
    AUDIO_SAMPLES,
    AUDIO_SECONDS,
    DRUM_LEN,
    INSTRUMENT_INDEX,
    JUST_RATIOS,
    SAMPLE_RATE,
    TABLE_SIZE,
    synth_tables,
)

TIMING_SHIFT = 1.0 / 3.0  # early / late displacement, in steps
DETUNE = 2.0 ** (0.5 / 12.0)  # a quarter-tone sharp
_TRACK_GAIN = {"melody": 0.45, "chord": 0.35, "bass": 0.45, "drums": 0.55}


def _note_tables(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-step (sounding, onset step, last step of the note) of one melodic track.

    values: [B, S] local token indices (0 REST, 1 HOLD, >= 2 onset). A HOLD continues the
    sounding note; a HOLD after a rest is silence. Returns sounding [B, S] bool, onset
    [B, S] long (the step where the sounding note began) and is_last [B, S] bool (the
    note ends after this step, so its release happens here).
    """
    B, S = values.shape
    steps = torch.arange(S, device=values.device).expand(B, S)
    brk = values != 1  # every non-HOLD token ends the previous note
    last_brk = torch.cummax(torch.where(brk, steps, torch.full_like(steps, -1)), dim=1).values
    onset = last_brk.clamp(min=0)
    sounding = (last_brk >= 0) & (torch.gather(values, 1, onset) >= 2)
    nxt_brk = torch.cat([brk[:, 1:], torch.ones_like(brk[:, :1])], dim=1)
    return sounding, onset, sounding & nxt_brk


def _midi_hz(p: torch.Tensor) -> torch.Tensor:
    return 440.0 * torch.pow(2.0, (p.float() - 69.0) / 12.0)


class _Group:
    """One tempo group laid out as [Bg, S, spb]: per-step values broadcast over samples.

    All per-sample arithmetic is float32 (several times cheaper than int64 on CPU); only
    the final table indices are converted to long.
    """

    def __init__(self, spb: int, device: torch.device, tabs: dict[str, torch.Tensor]):
        self.spb, self.tabs = spb, tabs
        self.r = torch.arange(spb, device=device, dtype=torch.float32)[None, None, :]
        self.n_fade = int(0.006 * SAMPLE_RATE)  # 6 ms release at a note's end
        self.fade = torch.linspace(1.0, 0.0, self.n_fade, device=device)

    def voice(self, sounding, onset, is_last, hz, table, inst, gain) -> torch.Tensor:
        """One track (a note or a whole chord per step) -> [Bg, S, spb].

        sounding / onset / is_last: [Bg, S]; hz: [Bg, S] the table frequency of the note
        sounding at each step; table: [Bg, S] its wavetable id; inst: [Bg] instrument id
        (for the envelope); gain: [Bg] track gain.
        """
        S = onset.shape[1]
        steps = torch.arange(S, device=onset.device)[None]
        lag = ((steps - onset) * self.spb).float()[..., None]  # [Bg, S, 1]
        since = lag + self.r  # samples since the note's onset, [Bg, S, spb]
        attack, decay, sustain = (self.tabs["env"][inst, i][:, None, None] for i in range(3))
        env = torch.exp(since * (-decay / SAMPLE_RATE)).mul_(1.0 - sustain).add_(sustain)
        env.mul_(torch.clamp(since * (1.0 / (attack * SAMPLE_RATE)), max=1.0))
        env.mul_((sounding.float() * gain[:, None])[..., None])
        # release: fade the last few ms of a note's final step (a small slice, not [B, T])
        tail = env[..., -self.n_fade :]
        tail.mul_(torch.where(is_last[..., None], self.fade, 1.0))
        # phase in table entries, wrapped, offset to the note's table; float32 keeps about
        # one table entry of precision over a 6 s note
        ph = since * (hz * (TABLE_SIZE / SAMPLE_RATE))[..., None]
        ph = torch.frac_(ph.mul_(1.0 / TABLE_SIZE)).mul_(TABLE_SIZE)
        ph.add_((table * TABLE_SIZE).float()[..., None])
        return self.tabs["wave"][ph.long()].mul_(env)


def render(tokens: torch.Tensor) -> torch.Tensor:
    """Render token sequences to audio.

    tokens: LongTensor [B, SEQ_LEN] (any values; invalid tokens read as rests / defaults).
    Returns FloatTensor [B, AUDIO_SAMPLES] at SAMPLE_RATE, finite, in [-1, 1], on the
    tokens' device.
    """
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"render: tokens must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.dim() != 2 or tokens.shape[1] != T.SEQ_LEN:
        raise ValueError(f"render: tokens must be [B, {T.SEQ_LEN}], got {tuple(tokens.shape)}")
    device = tokens.device
    tabs = synth_tables(str(device))
    local, _ = T.local_indices(tokens)  # [B, L]
    out = torch.empty(tokens.shape[0], AUDIO_SAMPLES, device=device)
    rec_steps = T.step_flaws(tokens)[1].to(torch.uint8)  # [B, S]
    bad = (rec_steps != 0).any(1)  # [B]: only these rows need a per-sample recording map
    rec = torch.zeros(tokens.shape[0], AUDIO_SAMPLES, device=device, dtype=torch.uint8) if bool(bad.any()) else None
    tempo = local[:, A.HEADER_NAMES.index("tempo")]
    for bucket, bpm in enumerate(A.TEMPO_BPM):
        rows = torch.nonzero(tempo == bucket).flatten()
        if rows.numel():
            spb = SAMPLE_RATE * 60 // (bpm * T.STEPS_PER_BEAT)
            period = _render_period(local[rows], _Group(spb, device, tabs))  # [Bg, S * spb]
            reps = -(-AUDIO_SAMPLES // period.shape[1])
            out[rows] = period.repeat(1, reps)[:, :AUDIO_SAMPLES]  # the piece loops
            rows = rows[bad[rows]]
            if rows.numel():
                per_sample = rec_steps[rows].repeat_interleave(spb, dim=1)  # [Bf, S * spb]
                rec[rows] = per_sample.repeat(1, reps)[:, :AUDIO_SAMPLES]
    return _record(out, rec, tabs["noise"], tokens, rec_steps)


def _render_period(local: torch.Tensor, g: _Group) -> torch.Tensor:
    """One loop of a tempo group: local token indices [Bg, L] -> [Bg, S * spb]."""
    device = local.device
    Bg, S, spb = local.shape[0], T.N_STEPS, g.spb
    head = {name: local[:, i] for i, name in enumerate(A.HEADER_NAMES)}  # each [Bg]
    track = {
        name: local[:, torch.as_tensor(T.track_positions(name), device=device)] for name in T.TRACKS
    }  # each [Bg, S]
    perf = track["perf"] // T.N_REC  # the performance part; the recording is _record's
    detune = torch.where(perf == 4, DETUNE, 1.0)  # applies to notes starting at that step

    def pitched(values, low):
        sounding, onset, is_last = _note_tables(values)
        hz = _midi_hz(torch.gather(values, 1, onset) - 2 + low) * torch.gather(detune, 1, onset)
        return sounding, onset, is_last, hz

    lead_inst = torch.tensor([INSTRUMENT_INDEX[n] for n in A.LEAD_INSTRUMENTS], device=device)
    chord_inst = torch.tensor(
        [INSTRUMENT_INDEX.get(n, 0) for n in A.CHORD_INSTRUMENTS], device=device
    )
    bass_inst = torch.tensor(
        [INSTRUMENT_INDEX.get(n, 0) for n in A.BASS_INSTRUMENTS], device=device
    )
    ones = torch.ones(Bg, device=device)

    inst = lead_inst[head["lead"]]  # [Bg]
    sounding, onset, is_last, hz = pitched(track["melody"], T.MEL_LOW)
    table = inst[:, None].expand(Bg, S)
    tonal = g.voice(sounding, onset, is_last, hz, table, inst, _TRACK_GAIN["melody"] * ones)

    inst = bass_inst[head["bass"]]
    sounding, onset, is_last, hz = pitched(track["bass_note"], T.BASS_LOW)
    table = inst[:, None].expand(Bg, S)
    gain = _TRACK_GAIN["bass"] * (head["bass"] > 0).float()  # "none" silences the track
    tonal += g.voice(sounding, onset, is_last, hz, table, inst, gain)

    chord = track["chord"]
    sounding, onset, is_last = _note_tables(chord)
    code = torch.gather((chord - 2).clamp(min=0), 1, onset)  # chord sounding at each step
    n_q = len(T.CHORD_QUALITIES)
    root, quality = code // n_q, code % n_q
    first = torch.tensor([JUST_RATIOS[q][0] for q in T.CHORD_QUALITIES], device=device)
    hz = _midi_hz(48 + root) / first[quality] * torch.gather(detune, 1, onset)
    inst = chord_inst[head["chords"]]
    table = len(A.INSTRUMENTS) + inst[:, None] * n_q + quality
    gain = _TRACK_GAIN["chord"] * (head["chords"] > 0).float()
    tonal += g.voice(sounding, onset, is_last, hz, table, inst, gain)

    # early / late steps displace the tonal tracks by a third of a step (drums stay on
    # the grid, so the band audibly flams): each sample of such rows reads from a shifted
    # source; rows without timing flaws are left alone (most pieces)
    tonal = tonal.reshape(Bg, S * spb)
    sloppy = torch.nonzero(((perf == 1) | (perf == 2)).any(1)).flatten()
    if sloppy.numel():
        p = perf[sloppy]
        shift = spb // 3
        offset = torch.where(p == 2, -shift, 0)[..., None]  # late: the previous note lingers
        early_next = (p.roll(-1, dims=1) == 1)[..., None]  # early: the next note intrudes
        offset = torch.where(early_next & (g.r >= spb - shift), shift, offset)  # [Fs, S, spb]
        src = (torch.arange(S * spb, device=device).reshape(1, S, spb) + offset) % (S * spb)
        tonal[sloppy] = torch.gather(tonal[sloppy], 1, src.reshape(len(sloppy), -1))

    # drums: time since the last hit on the grid, read from the style's pre-mixed kit
    hits = track["drum_hits"]  # [Bg, S]
    steps = torch.arange(S, device=device).expand(Bg, S)
    last = torch.cummax(torch.where(hits > 0, steps, torch.full_like(steps, -1)), 1).values
    hit_set = torch.gather(hits, 1, last.clamp(min=0))
    lag = torch.where(last >= 0, (steps - last) * spb, DRUM_LEN).float()  # [Bg, S]
    kit = ((head["drums"][:, None] * T.N_DRUM_SETS + hit_set) * DRUM_LEN).float()  # [Bg, S]
    since = (lag[..., None] + g.r).clamp_(max=DRUM_LEN - 1).add_(kit[..., None])
    gain = (head["drums"] > 0).float() * _TRACK_GAIN["drums"]
    mix = g.tabs["drums"][since.long()].mul_(gain[:, None, None]).add_(tonal.reshape(Bg, S, spb))
    drop = torch.nonzero((perf == 3).any(1)).flatten()
    if drop.numel():  # dropouts silence whole steps
        mix[drop] = mix[drop] * (perf[drop] != 3)[..., None]
    return mix.reshape(Bg, S * spb)


def _record(
    mix: torch.Tensor,
    recording: torch.Tensor,
    noise: torch.Tensor,
    tokens: torch.Tensor,
    rec_steps: torch.Tensor,
) -> torch.Tensor:
    """Peak-normalise, apply the recording-quality effect, keep the result in [-1, 1].

    mix: [B, T]; recording: [B, T] per sample an index into `attributes.RECORDINGS` (None:
    every sample clean); rec_steps: [B, S] the same per step (which rows use an effect);
    noise: [T] the noise bed; tokens: [B, L] (a per-piece offset into the noise bed, so
    noisy pieces do not all share one noise waveform). Clean samples keep the peak-0.8 mix;
    each effect runs on the rows that use it, from the clean mix, and replaces only the
    samples recorded that way.
    """
    lo, hi = torch.aminmax(mix, dim=1, keepdim=True)
    x = mix.mul_(0.8 / torch.maximum(hi, -lo).clamp(min=1e-6))  # [B, T], peak 0.8
    if recording is None:
        return x
    t = torch.arange(AUDIO_SAMPLES, device=x.device, dtype=torch.float32) / SAMPLE_RATE
    pos = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)

    def noisy(y, n):  # hiss and mains hum over a slightly quieter signal
        hum = 0.06 * torch.sin(2 * math.pi * 60 * t) + 0.03 * torch.sin(2 * math.pi * 180 * t)
        return y * 0.8 + 0.22 * n + hum

    def distorted(y, n):  # overdriven and hard-clipped
        return torch.clamp(torch.tanh(6.0 * y) * 1.1, -0.9, 0.9) + 0.03 * n

    def lofi(y, n):  # sample-and-hold to 4 kHz, 13 quantisation levels, hiss
        held = y.reshape(y.shape[0], -1, 4)[:, :, :1].expand(-1, -1, 4).reshape_as(y)
        return torch.round(held * 6.0) / 6.0 + 0.1 * n

    clean = x.clone()
    # The noise bed twice over: row r's noise is the window starting at its offset (a view
    # per row, gathered once; no [F, T] index arithmetic).
    windows = torch.cat([noise, noise]).unfold(0, AUDIO_SAMPLES, 1)  # [T + 1, T] view
    for code, effect in ((1, noisy), (2, distorted), (3, lofi)):
        # Which rows use the effect, from the per-step map (S entries a row, not T).
        rows = torch.nonzero((rec_steps == code).any(1)).flatten()
        if not rows.numel():
            continue
        every = rows.numel() == x.shape[0]  # common in flawed batches: no row copies then
        offset = (tokens[rows].long() * pos).sum(1) % AUDIO_SAMPLES  # [F]
        y = effect(clean if every else clean[rows], windows[offset])  # [F, T]
        lo, hi = torch.aminmax(y, dim=1, keepdim=True)  # the peak |y| without an abs pass
        y = y / torch.clamp(torch.maximum(hi, -lo) / 0.95, min=1.0)
        where = (recording if every else recording[rows]) == code  # [F, T]
        if every:
            torch.where(where, y.clamp_(-1.0, 1.0), x, out=x)
        else:
            x[rows] = torch.where(where, y.clamp_(-1.0, 1.0), x[rows])
    return x
