"""Batches with hard negatives for the diversity embedder E (paper appendix D.1).

D.1 trains E with the semi-hard triplet loss, whose negatives are mined inside the batch
(`suite.models.triplet`). With uniformly drawn batches most negatives differ from the anchor
in genre and tempo, which the renderer makes easy to hear, so few triplets teach E the
finer musical differences; the held-out pieces E fails to retrieve share genre, tempo and
drums with the piece it retrieves instead (86 % of misses, docs/music_world.md). This
sampler puts a share of each batch in one CELL (pieces of one genre and one tempo), so
every batch offers negatives that differ only in melody, harmony, key and the other
finer attributes; the rest of the batch stays uniform, as before.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler

from suite.music import attributes as A
from suite.music import tokens as T


def genre_tempo_cells(tokens: torch.Tensor) -> np.ndarray:
    """`[N]` int cell id of each piece: its header's (genre, tempo) pair."""
    local, _ = T.local_indices(torch.as_tensor(tokens).long())  # [N, L]
    genre = local[:, A.HEADER_NAMES.index("genre")]
    tempo = local[:, A.HEADER_NAMES.index("tempo")]
    return (genre * len(A.TEMPOS) + tempo).numpy()


class CellBatchSampler(Sampler[list[int]]):
    """Batches of `batch_size` positions into `cells`: `round(share * batch_size)` of them
    from one cell (drawn in proportion to its size, without replacement inside the batch),
    the rest uniformly from the other pieces. `len(cells) // batch_size` batches per epoch;
    each epoch draws anew from a generator seeded by `seed` (reproducible)."""

    def __init__(self, cells: np.ndarray, batch_size: int, share: float, seed: int = 0):
        if not 0 < share <= 1:
            raise ValueError(f"CellBatchSampler: share must be in (0, 1], got {share!r}")
        if batch_size < 2 or len(cells) < batch_size:
            raise ValueError(
                f"CellBatchSampler: need 2 <= batch_size <= {len(cells)} pieces, got {batch_size}"
            )
        self.cells, self.batch_size = np.asarray(cells), batch_size
        # at least 2: the cell's pieces are each other's hard negatives
        self.n_cell = max(2, round(share * batch_size))
        self.members = {c: np.flatnonzero(self.cells == c) for c in np.unique(self.cells)}
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.cells) // self.batch_size

    def __iter__(self):
        n = len(self.cells)
        for _ in range(len(self)):
            anchor = int(self.rng.integers(n))  # a cell in proportion to its size
            pool = self.members[self.cells[anchor]]
            inside = self.rng.choice(pool, size=min(self.n_cell, len(pool)), replace=False)
            rest = np.setdiff1d(np.arange(n), inside, assume_unique=True)
            outside = self.rng.choice(rest, size=self.batch_size - len(inside), replace=False)
            yield np.concatenate([inside, outside]).tolist()
