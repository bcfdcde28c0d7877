"""The music world's measurements including the text tower (docs/music_world.md).

    python -m suite.world_report [--figure PATH] [--corpus-n N] [--threads T] [--skip-text]

The same command as `python -m suite.music.report` (corpus determinism, oracle AUC and
attribute recognition, renderer checks, the spectrogram figure; DESIGN.md section 5), plus
the text tower's paraphrase-versus-cross-genre cosine gap. It lives outside suite/music
because the music world imports no network module: the tower (`suite.models.text_tower`,
the MuLan-style text side of section 3.1) is handed in as an `encode` function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from suite.music import report as music_report


def tower_encode() -> Callable[[list[str]], torch.Tensor]:
    """The text tower's `encode` (texts -> [n, D] embeddings), built when first needed."""
    from suite.models.text_tower import TextTower

    return TextTower(progress=False).encode


def main(argv: list[str] | None = None) -> None:
    music_report.main(argv, text_encoder=tower_encode, prog="python -m suite.world_report")


if __name__ == "__main__":
    main()
