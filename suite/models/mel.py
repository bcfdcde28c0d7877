"""Log-mel front-end shared by the audio models (paper appendix D.1).

Appendix D.1: the embedder reads 4-s clips at 16 kHz through a mel spectrogram with a window
of 512 samples, a hop of 256 samples and 156 frequency bins. This module computes exactly
that with nnAudio (`nnAudio.features.MelSpectrogram`, an STFT as a 1-D convolution, so it
runs batched on the audio's device), then compresses it as `log(mel + eps)`.

A constant-Q alternative (`frequency_scale="cqt"`, nnAudio's `CQT2010v2`): `n_mels` log-spaced
bins, `bins_per_octave` per octave from `fmin` up, each bin's window spanning the same number
of periods of its frequency (constant Q: long windows low, short ones high), so a semitone
is resolved in every register at the same hop (an STFT resolves it only where its
fixed bin width is narrower than a semitone). Used as `log(|CQT|^2 + eps)` with the same
hop, centring and short-clip rule; `n_fft` and `win_length` then only set that rule.

Frame count (a discrepancy with the paper, documented rather than faked): with centred
frames (nnAudio's and librosa's default, which we keep) a clip of S samples gives
`1 + S // hop` frames, so 4 s at 16 kHz (64000 samples) gives 1 + 250 = 251 frames; with
uncentred frames it gives `1 + (S - n_fft) // hop` = 249. The paper's "376 time frames" is
what 6 s would give (1 + 96000 // 256 = 376), or 4 s with a hop of about 171; it cannot come
from 4 s with hop 256. We follow the stated window/hop/clip length and get 251 frames.

Input rules (issue 6, "Bad input"):
- audio must be float `[B, S]` (or `[S]`) and finite, otherwise ValueError;
- audio is taken to be at the front-end's rate (16 kHz, the renderer's rate) unless the
  caller names its rate with `sample_rate=`; another rate is then resampled (or refused
  with a ValueError when `resample_input=False`); it is never silently mis-read. Resampling
  uses a polyphase filter (scipy.signal.resample_poly, on CPU: an input conversion, never
  trained through);
- a clip shorter than one window (`win_length` samples) is zero-padded AT THE END to exactly
  one window, so it yields the frames of one window's worth of audio plus silence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np
import torch
from nnAudio.features import CQT2010v2, MelSpectrogram
from scipy.signal import resample_poly
from torch import nn


@dataclass(frozen=True)
class MelConfig:
    """Mel front-end hyper-parameters (defaults: paper appendix D.1)."""

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 512
    hop_length: int = 256
    n_mels: int = 156
    fmin: float = 0.0
    fmax: float | None = None  # None: the Nyquist frequency
    center: bool = True
    eps: float = 1e-5  # log floor: log(1e-5) = -11.5 is "silence"
    trainable: bool = False  # nnAudio can learn the mel filters / STFT kernels; off by default
    # "conv": nnAudio's STFT as a 1-D convolution (the reference; every committed model uses
    # it); "fft": torch.stft with the same Hann window, reflect padding and mel matrix. The
    # same log-mel up to float rounding (tests/test_audio_models_frontend.py) at a fraction
    # of the cost, which grows with n_fft for the convolution (x n_fft per frame) and barely
    # for the FFT (x log n_fft): what makes long, pitch-resolving windows affordable.
    stft: str = "conv"
    # "mel" (D.1) or "cqt": then `n_mels` counts constant-Q bins, `bins_per_octave` of them
    # per octave from `fmin` (> 0) up; the top bin must lie below the Nyquist frequency.
    frequency_scale: str = "mel"
    bins_per_octave: int = 12

    def __post_init__(self):
        for key in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MelConfig.{key} must be a positive int, got {value!r}")
        if self.win_length > self.n_fft:
            raise ValueError(
                f"MelConfig.win_length ({self.win_length}) must be <= n_fft ({self.n_fft})"
            )
        nyquist = self.sample_rate / 2
        top = nyquist if self.fmax is None else self.fmax
        if not 0 <= self.fmin < top <= nyquist:
            raise ValueError(
                f"MelConfig: need 0 <= fmin < fmax <= sample_rate/2 = {nyquist}, "
                f"got fmin={self.fmin}, fmax={self.fmax}"
            )
        if not self.eps > 0:
            raise ValueError(f"MelConfig.eps must be > 0, got {self.eps!r}")
        if self.stft not in ("conv", "fft"):
            raise ValueError(f"MelConfig.stft must be 'conv' or 'fft', got {self.stft!r}")
        if self.stft == "fft" and self.trainable:
            raise ValueError("MelConfig: trainable STFT kernels need stft='conv' (nnAudio's)")
        if self.frequency_scale not in ("mel", "cqt"):
            raise ValueError(
                f"MelConfig.frequency_scale must be 'mel' or 'cqt', got {self.frequency_scale!r}"
            )
        if self.frequency_scale == "cqt":
            self._check_cqt(nyquist)

    def _check_cqt(self, nyquist: float) -> None:
        bpo = self.bins_per_octave
        if not isinstance(bpo, int) or isinstance(bpo, bool) or bpo < 1:
            raise ValueError(f"MelConfig.bins_per_octave must be a positive int, got {bpo!r}")
        if not self.fmin > 0:
            raise ValueError(
                f"MelConfig: a CQT needs fmin > 0 Hz (its lowest bin), got {self.fmin}"
            )
        top = self.fmin * 2 ** ((self.n_mels - 1) / bpo)
        if top >= nyquist:
            raise ValueError(
                f"MelConfig: the top CQT bin, fmin * 2**((n_mels - 1) / bins_per_octave) = "
                f"{top:.0f} Hz, must lie below sample_rate/2 = {nyquist:.0f} Hz"
            )
        if self.trainable:
            raise ValueError("MelConfig: trainable kernels are for the mel scale only")
        if not self.center:
            raise ValueError(
                "MelConfig: nnAudio's CQT always centres its frames; center=False is mel-only"
            )

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a clip of `num_samples` samples (after short-clip padding)."""
        n = max(num_samples, self.win_length)
        if self.center:
            return 1 + n // self.hop_length
        return 1 + (max(n, self.n_fft) - self.n_fft) // self.hop_length

    def to_dict(self) -> dict:
        return config_dict(self)


# Fields added after configs were first written, with the value every older config meant:
# left out of a config's dict at that value, so that the dicts of older checkpoints, specs
# and records compare equal to today's (suite.models.audio_checkpoint.config_diff).
_IMPLICIT = {"stft": "conv", "frequency_scale": "mel", "bins_per_octave": 12}


def config_dict(config) -> dict:
    """`dataclasses.asdict(config)` without the `_IMPLICIT` fields at their implicit value,
    at any depth (a front end's `mel` sits inside the audio models' configs)."""

    def strip(d):
        if not isinstance(d, dict):
            return d
        return {k: strip(v) for k, v in d.items() if not (k in _IMPLICIT and v == _IMPLICIT[k])}

    return strip(asdict(config))


def resample(audio: torch.Tensor, source_rate: int, target_rate: int) -> torch.Tensor:
    """Polyphase resampling of `[..., S]` audio from `source_rate` to `target_rate` Hz."""
    if source_rate == target_rate:
        return audio
    ratio = Fraction(target_rate, source_rate)
    data = audio.detach().to("cpu", torch.float64).numpy()
    out = resample_poly(data, ratio.numerator, ratio.denominator, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(out)).to(audio.device, audio.dtype)


def check_audio(audio: torch.Tensor, where: str) -> torch.Tensor:
    """Validate a waveform batch -> `[B, S]` float; clear errors name `where`."""
    if not isinstance(audio, torch.Tensor):
        raise TypeError(f"{where}: audio must be a torch.Tensor, got {type(audio).__name__}")
    if not audio.is_floating_point():
        raise TypeError(f"{where}: audio must be floating point, got dtype {audio.dtype}")
    if audio.dim() == 1:
        audio = audio.unsqueeze(0)
    if audio.dim() != 2:
        raise ValueError(f"{where}: audio must be [B, S] or [S], got shape {tuple(audio.shape)}")
    if audio.shape[-1] == 0:
        raise ValueError(f"{where}: audio has zero samples")
    if not torch.isfinite(audio).all():
        bad = (~torch.isfinite(audio)).sum().item()
        raise ValueError(f"{where}: audio contains {bad} non-finite samples (NaN or inf)")
    return audio


class _MelBasis(nn.Module):
    """The mel filterbank `mel_basis [n_mels, n_fft // 2 + 1]` of nnAudio's MelSpectrogram,
    under the same state-dict key, for the FFT path, which needs nothing else of it."""

    def __init__(self, mel_basis: torch.Tensor):
        super().__init__()
        self.register_buffer("mel_basis", mel_basis.detach().clone())


class LogMel(nn.Module):
    """Waveform `[B, S]` at `config.sample_rate` -> log-mel (or log-CQT) `[B, n_mels, T]`."""

    def __init__(self, config: MelConfig | None = None):
        super().__init__()
        self.config = config or MelConfig()
        c = self.config
        if c.frequency_scale == "cqt":
            self.cqt = CQT2010v2(
                sr=c.sample_rate, hop_length=c.hop_length, fmin=c.fmin, n_bins=c.n_mels,
                bins_per_octave=c.bins_per_octave, output_format="Magnitude", verbose=False,
            )  # fmt: skip
            return
        self.mel = MelSpectrogram(
            sr=c.sample_rate,
            n_fft=c.n_fft,
            win_length=c.win_length,
            n_mels=c.n_mels,
            hop_length=c.hop_length,
            center=c.center,
            fmin=c.fmin,
            fmax=c.fmax,
            trainable_mel=c.trainable,
            trainable_STFT=c.trainable,
            verbose=False,
        )
        if c.stft == "fft":  # keep nnAudio's filterbank only: its STFT kernels [F, 1, n_fft]
            self.mel = _MelBasis(self.mel.mel_basis)  # x 2 would be ~17 MB of unused state at n_fft 2048

    def num_frames(self, num_samples: int) -> int:
        return self.config.num_frames(num_samples)

    def prepare(
        self, audio: torch.Tensor, sample_rate: int | None = None, resample_input: bool = True
    ) -> torch.Tensor:
        """Validate, resample if the caller named another rate, pad short clips -> [B, S'].

        `sample_rate=None` means "already at config.sample_rate" (the renderer's contract);
        a different rate is resampled, or refused when `resample_input=False`.
        """
        c = self.config
        audio = check_audio(audio, "LogMel")
        if sample_rate is not None and sample_rate != c.sample_rate:
            if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate < 1:
                raise ValueError(f"LogMel: sample_rate must be a positive int, got {sample_rate!r}")
            if not resample_input:
                raise ValueError(
                    f"LogMel: audio is at {sample_rate} Hz but the front-end expects "
                    f"{c.sample_rate} Hz; pass resample_input=True to resample it"
                )
            audio = resample(audio, sample_rate, c.sample_rate)
        short = c.win_length - audio.shape[-1]
        if short > 0:  # documented rule: zero-pad at the end to one full window
            audio = nn.functional.pad(audio, (0, short))
        return audio

    def forward(
        self, audio: torch.Tensor, sample_rate: int | None = None, resample_input: bool = True
    ) -> torch.Tensor:
        return self.spectrogram(self.prepare(audio, sample_rate, resample_input))

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """Log-mel of audio `[B, S]` that `prepare` already gave (validated, at our rate, at
        least one window long): callers that cut prepared audio into clips skip a second
        validation pass over every sample."""
        c = self.config
        if c.frequency_scale == "cqt":
            power = self.cqt(audio.float()) ** 2  # [B, n_bins, T]
        elif c.stft == "conv":
            power = self.mel(audio.float())  # [B, n_mels, T]
        else:
            window = torch.hann_window(c.win_length, periodic=True, device=audio.device)
            spec = torch.stft(audio.float(), c.n_fft, c.hop_length, c.win_length, window,
                              center=c.center, pad_mode="reflect", return_complex=True)  # [B, F, T]
            power = torch.matmul(self.mel.mel_basis, spec.real**2 + spec.imag**2)  # [B, n_mels, T]
        return torch.log(power + c.eps)
