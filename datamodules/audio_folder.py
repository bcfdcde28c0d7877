"""Audio-folder DataModule: the diversity embedder E trained on a user's own recordings.

Paper appendix D.1 trains E with the semi-hard triplet loss on fixed-length clips where
the positives are non-overlapping chunks of the same recording and the negatives come
from other recordings, augmented with noise, tempo and pitch shifts. For a real model
(MusicGen) the recordings are a folder of the user's audio files, read here:

- files: `*.wav`, `*.flac`, `*.ogg` under `folder` (recursively, sorted), read with
  soundfile, mixed to mono and resampled to `sample_rate` (the embedder's, 16 kHz);
  files too short for two chunks are left out (the count is logged);
- a pair: two non-overlapping `clip_seconds` chunks of one file, at random offsets in
  training and at fixed ones (start, and one clip later) in validation;
- augmentations (training): a speed change shared by the pair (resampling by a factor in
  [1 - max_speed, 1 + max_speed]: tempo and pitch move together, as on a turntable) and
  white noise per chunk at an SNR drawn from `snr_db`;
- a seeded split holds out `val_files` files (at most a fifth).

Batches are those of `AudioDataModule(task="embedder")`: training
`{"audio": [2P, clip], "label": [2P]}`, validation `{"audio_a", "audio_b", "label"}`, so
`lightning_modules.embedder.EmbedderJob` trains on either unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.pieces import add_noise

log = logging.getLogger(__name__)
EXTENSIONS = (".wav", ".flac", ".ogg")


def list_audio(folder: str | Path) -> list[Path]:
    """Audio files under `folder` (sorted); a clear error if there is no such folder or none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"AudioFolderDataModule: folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"AudioFolderDataModule: no {'/'.join(EXTENSIONS)} files under {root}")
    return files


def read_window(path: Path, start_s: float, seconds: float, rate: int) -> torch.Tensor:
    """`seconds` of mono audio of `path` from `start_s`, at `rate` Hz -> `[S]` float32."""
    import soundfile as sf

    from suite.models.mel import resample

    info = sf.info(str(path))
    start = int(start_s * info.samplerate)
    frames = int(np.ceil(seconds * info.samplerate)) + 1
    data, sr = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    audio = torch.from_numpy(data.mean(axis=1))  # [S_src] mono
    audio = resample(audio, sr, rate)
    want = int(round(seconds * rate))
    return torch.nn.functional.pad(audio, (0, max(0, want - audio.shape[0])))[:want]


class _Pairs(Dataset):
    """Two non-overlapping chunks of one file per item: `{"a": [clip], "b": [clip], "label"}`."""

    def __init__(self, files, durations, clip_s, rate, training, max_speed):
        self.files, self.durations = files, durations
        self.clip_s, self.rate, self.training, self.max_speed = clip_s, rate, training, max_speed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        clip = int(round(self.clip_s * self.rate))
        speed = 1.0
        if self.training and self.max_speed > 0:
            speed = 1.0 + self.max_speed * (2 * float(torch.rand(())) - 1)
        need = 2 * self.clip_s * speed  # seconds of the file that become two clips
        spare = max(0.0, self.durations[i] - need)
        start = float(torch.rand(())) * spare if self.training else 0.0
        window = read_window(self.files[i], start, need, self.rate)  # [need * rate]
        if speed != 1.0:  # play the window faster / slower: 2 clips at the target rate
            from suite.models.mel import resample

            window = resample(window, int(round(self.rate * speed)), self.rate)
        window = torch.nn.functional.pad(window, (0, max(0, 2 * clip - window.shape[0])))
        return {"a": window[:clip], "b": window[clip : 2 * clip], "label": i}


def _collate(items: list[dict]) -> dict:
    return {"a": torch.stack([it["a"] for it in items]), "b": torch.stack([it["b"] for it in items]),
            "label": torch.tensor([it["label"] for it in items])}  # fmt: skip


class AudioFolderDataModule(L.LightningDataModule):
    """Embedder pairs from a folder of audio files (module docstring)."""

    def __init__(
        self,
        folder: str,
        task: str = "embedder",
        batch_size: int = 32,
        clip_seconds: float = 3.0,
        sample_rate: int = 16000,
        val_files: int = 100,
        augment: bool = True,
        max_speed: float = 0.06,
        snr_db: Sequence[float] = (10.0, 40.0),
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        if task != "embedder":
            raise ValueError(f"AudioFolderDataModule: only the embedder task reads a folder, got {task!r}")
        if batch_size < 2:
            raise ValueError(f"AudioFolderDataModule: batch_size must be >= 2, got {batch_size}")
        if not clip_seconds > 0 or not 0 <= max_speed < 0.5:
            raise ValueError(
                f"AudioFolderDataModule: clip_seconds must be > 0 and max_speed in [0, 0.5), got "
                f"{clip_seconds}, {max_speed}"
            )
        if len(snr_db) != 2 or snr_db[0] > snr_db[1]:
            raise ValueError(f"AudioFolderDataModule: snr_db must be (low, high), got {snr_db!r}")
        self.folder, self.batch_size, self.clip_seconds = folder, batch_size, float(clip_seconds)
        self.sample_rate, self.val_files, self.augment = int(sample_rate), val_files, augment
        self.max_speed, self.snr_db, self.seed = float(max_speed), tuple(snr_db), seed
        self.num_workers = num_workers
        self._gen = torch.Generator().manual_seed(seed)

    def setup(self, stage: str | None = None) -> None:
        import soundfile as sf

        files = list_audio(self.folder)
        durations = []
        for f in files:
            try:
                info = sf.info(str(f))
            except RuntimeError as err:
                raise ValueError(f"AudioFolderDataModule: cannot read {f}: {err}") from err
            durations.append(info.frames / info.samplerate)
        need = 2 * self.clip_seconds * (1 + self.max_speed)
        keep = [i for i, d in enumerate(durations) if d >= need]
        if len(files) - len(keep):
            log.info("AudioFolderDataModule: %d of %d files are shorter than %.1f s and left out",
                     len(files) - len(keep), len(files), need)  # fmt: skip
        n_val = min(self.val_files, len(keep) // 5)
        if len(keep) - n_val < 2 or n_val < 2:
            raise ValueError(
                f"AudioFolderDataModule: {len(keep)} usable files under {self.folder} (each >= "
                f"{need:.1f} s); at least 10 are needed for a train / validation split"
            )
        perm = np.random.default_rng(self.seed).permutation(keep)
        self.splits = {"train": sorted(perm[:-n_val]), "val": sorted(perm[-n_val:])}
        self._files, self._durations = files, durations

    def _loader(self, split: str) -> DataLoader:
        idx = self.splits[split]
        training = split == "train"
        data = _Pairs([self._files[i] for i in idx], [self._durations[i] for i in idx],
                      self.clip_seconds, self.sample_rate, training and self.augment,
                      self.max_speed if training and self.augment else 0.0)  # fmt: skip
        return DataLoader(data, batch_size=self.batch_size, shuffle=training, drop_last=training,
                          collate_fn=_collate, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed) if training else None)  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    @torch.no_grad()
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        a, b, label = batch["a"], batch["b"], batch["label"]
        training = self.trainer is not None and self.trainer.training
        if not training:
            return {"audio_a": a, "audio_b": b, "label": label}
        if self.augment:
            lo, hi = self.snr_db
            a = add_noise(a, lo + (hi - lo) * torch.rand(a.shape[0], generator=self._gen), self._gen)
            b = add_noise(b, lo + (hi - lo) * torch.rand(b.shape[0], generator=self._gen), self._gen)
        return {"audio": torch.cat([a, b]), "label": torch.cat([label, label])}
