"""Renderer: shape / range contract, pitch, dropouts, recording flaws, determinism."""

import numpy as np
import pytest
import torch
from scipy.signal import welch

from suite.music import attributes as A
from suite.music import composer as C
from suite.music import render as R
from suite.music import tokens as T


def _pieces(n, seed=0, flawed=None):
    return [C.compose(np.random.default_rng([seed, i]), flawed=flawed).piece for i in range(n)]


def _tokens(pieces):
    return torch.from_numpy(np.stack([T.encode(p) for p in pieces]))


def test_contract_shape_range_finite():
    assert R.SAMPLE_RATE == 16000
    assert 4 * R.SAMPLE_RATE <= R.AUDIO_SAMPLES <= 8 * R.SAMPLE_RATE
    audio = R.render(_tokens(_pieces(12)))
    assert audio.shape == (12, R.AUDIO_SAMPLES) and audio.dtype == torch.float32
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1.0
    assert (audio.abs().amax(1) > 0.1).all()  # not silent


def test_any_tokens_render():
    garbage = torch.randint(-5, T.VOCAB_SIZE + 5, (6, T.SEQ_LEN))
    audio = R.render(garbage)
    assert audio.shape == (6, R.AUDIO_SAMPLES) and torch.isfinite(audio).all()
    assert audio.abs().max() <= 1.0
    with pytest.raises(ValueError, match="tokens must be"):
        R.render(torch.zeros(2, 7, dtype=torch.long))


def test_batch_equals_single_and_deterministic():
    toks = _tokens(_pieces(6, seed=3))
    batch = R.render(toks)
    for i in range(6):
        assert torch.allclose(batch[i], R.render(toks[i : i + 1])[0], atol=1e-6)
    assert torch.equal(batch, R.render(toks))


def _solo(pitch, lead="flute", tempo="slow", perf=None):
    attrs = C.sample_attributes(np.random.default_rng(0), genre="classical")
    attrs.update(lead=lead, chords="strings", bass="none", drums="none", tempo=tempo)
    piece = T.Piece(
        attrs=attrs, melody=[pitch] + [T.HOLD] * (T.N_STEPS - 1), perf=perf or [0] * T.N_STEPS
    )
    return piece


def test_sustained_note_has_the_right_pitch():
    for pitch in (57, 69, 76):
        audio = R.render(_tokens([_solo(pitch)]))[0].numpy()
        seg = audio[8000:40000] * np.hanning(32000)
        spec = np.abs(np.fft.rfft(seg))
        freqs = np.fft.rfftfreq(len(seg), 1 / R.SAMPLE_RATE)
        peak = freqs[np.argmax(spec)]
        expected = 440.0 * 2 ** ((pitch - 69) / 12)
        assert abs(peak - expected) / expected < 0.01


def test_detuned_note_is_a_quarter_tone_sharp():
    perf = [4] + [0] * (T.N_STEPS - 1)
    audio = R.render(_tokens([_solo(69, perf=perf)]))[0].numpy()
    seg = audio[8000:40000] * np.hanning(32000)
    freqs = np.fft.rfftfreq(len(seg), 1 / R.SAMPLE_RATE)
    peak = freqs[np.argmax(np.abs(np.fft.rfft(seg)))]
    assert abs(peak - 440.0 * 2 ** (0.5 / 12)) < 2.0


def test_dropout_steps_are_silent():
    piece = _pieces(1, seed=4, flawed=False)[0]
    piece.attrs["tempo"] = "slow"  # 80 BPM: 3000 samples per step, no loop
    piece.perf[10:13] = [3, 3, 3]
    audio = R.render(_tokens([piece]))[0]
    spb = 3000
    assert audio[10 * spb : 13 * spb].abs().max() == 0
    assert audio[3 * spb : 8 * spb].abs().max() > 0.05


def _flatness(audio):
    _, power = welch(audio, fs=R.SAMPLE_RATE, nperseg=1024)
    power = power + 1e-12
    return np.exp(np.log(power).mean(-1)) / power.mean(-1)


def test_flawed_recordings_are_noisier():
    pieces = _pieces(8, seed=2, flawed=False)
    rows = []
    for p in pieces:
        for rec in A.RECORDINGS:
            rows.append(
                T.Piece({**p.attrs, "recording": rec}, p.melody, p.chord, p.bass, p.drums, p.perf,
                        [A.RECORDINGS.index(rec)] * T.N_STEPS)  # every step recorded so
            )
    flat = _flatness(R.render(_tokens(rows)).numpy()).reshape(len(pieces), len(A.RECORDINGS))
    clean = flat[:, 0]
    for j, rec in enumerate(A.RECORDINGS[1:], 1):
        assert (flat[:, j] > clean).all(), rec
        assert flat[:, j].mean() > 1.3 * clean.mean(), rec


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_renders_on_the_tokens_device():
    toks = _tokens(_pieces(8, seed=6))
    cpu = R.render(toks)
    gpu = R.render(toks.cuda())
    assert gpu.device.type == "cuda"
    # float rounding may pick a neighbouring wavetable entry here and there: compare energy
    err = (gpu.cpu() - cpu).norm(dim=1) / cpu.norm(dim=1)
    assert (err < 0.02).all()
