"""Audio files written atomically: the WAV of every logged generation.

Listening is the paper's evaluation (section 3.5); every job logs a few generations as WAV
files (16-bit PCM, mono) at the policy's own sample rate. A file is written to a temporary
name and renamed into place, so an interrupted job never leaves half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf


def atomic_write(path: str | Path, write) -> Path:
    """Call `write(tmp_path)`, then rename the temporary file to `path`; returns `path`."""
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


def write_wav(audio, path: str | Path, sample_rate: int = 16000) -> Path:
    """Write mono float audio ([S] tensor or array, in [-1, 1]) as 16-bit PCM WAV."""
    data = np.asarray(
        audio.detach().cpu() if hasattr(audio, "detach") else audio, dtype=np.float32
    ).reshape(-1)
    if not np.isfinite(data).all():
        raise ValueError(f"write_wav: audio for {path} contains NaN or inf")
    return atomic_write(
        path,
        lambda p: sf.write(p, np.clip(data, -1, 1), sample_rate, subtype="PCM_16", format="WAV"),
    )
