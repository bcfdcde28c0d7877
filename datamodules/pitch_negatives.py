"""Pitch-aware extras of the diversity embedder's batches (paper appendix D.1, issue 18).

E is trained with D.1's semi-hard triplet loss on two chunks per piece. On the embedded
world that objective leaves E deaf to the key: its held-out misses share the query's genre,
tempo and drums in ~87 % of cases but its key in 39 % (docs/music_world.md, session 11), and
the slow pieces, whose two chunks replay no common step, are found only by the key and mode
(session 20). Neither a finer front end (2,048-sample window, constant-Q) nor harder
same-genre-and-tempo negatives changed that. Two ways to give the objective a reason to hear
the key, each off by default:

- **Transposed twins** (`transposed_negatives`, self-supervised): a share of the batch's
  pieces appear once more, transposed by 1 to 6 semitones (either way) against their pair
  and rendered in their own recording, as a single chunk under a label of its own. The
  twin has the piece's rhythm, instruments, tempo and mode, so it is the hardest negative
  the batch can hold unless E hears absolute pitch. Transposition is a musical change (the
  issue wants a transposition further than a recording change), so the diversity reward
  should count it.
- **Key and mode labels** (`key_mode_labels`): each training chunk's tonic (after the pair's
  pitch shift) and mode, read from the header the composer wrote the notes in, for an
  auxiliary linear head on E's embedding (`EmbedderJob(key_weight=...)`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from suite.music import tokens as T
from suite.music.edits import _header_pos, transpose_tokens

MAX_TWIN_SHIFT = 6  # 1..6 semitones up or down: every other pitch class of the tonic


def key_mode_labels(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`[B, L]` tokens -> (tonic `[B]` in 0..11, mode `[B]` in 0..3) from their headers."""
    key = tokens[:, _header_pos("key")] - T.TYPE_RANGES["key"][0]
    mode = tokens[:, _header_pos("mode")] - T.TYPE_RANGES["mode"][0]
    n_key = T.TYPE_RANGES["key"][1] - T.TYPE_RANGES["key"][0]
    n_mode = T.TYPE_RANGES["mode"][1] - T.TYPE_RANGES["mode"][0]
    if ((key < 0) | (key >= n_key) | (mode < 0) | (mode >= n_mode)).any():
        raise ValueError("key_mode_labels: a piece's key or mode header is not a key/mode token")
    return key, mode


def twin_shifts(n: int, generator: torch.Generator) -> torch.Tensor:
    """`[n]` transpositions, uniform over +-1..+-MAX_TWIN_SHIFT semitones (never 0)."""
    size = torch.randint(1, MAX_TWIN_SHIFT + 1, (n,), generator=generator)
    sign = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
    return size * sign


def transposed_twins(
    tokens: torch.Tensor,
    index: torch.Tensor,
    share: float,
    generator: torch.Generator,
    render_chunk: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Twins of the first `round(share * B)` pieces of a (shuffled) batch.

    `tokens [B, L]` are the pair's tokens after its own augmentation, `index [B]` the pieces'
    corpus indices; `render_chunk` maps tokens `[M, L]` to one chunk each `[M, clip]` (own
    recording, noise). Returns (chunks `[M, clip]`, labels `[M]`, twin tokens `[M, L]`);
    the labels are `-(index + 1)`, never a corpus index, so a twin is nobody's positive.
    """
    m = round(share * len(tokens))
    if m < 1:
        raise ValueError(f"transposed_twins: share {share} of {len(tokens)} pieces is no piece")
    twins = transpose_tokens(tokens[:m], twin_shifts(m, generator))  # [M, L]
    return render_chunk(twins), -(index[:m] + 1), twins
