"""Key/value cache of `TokenLM`'s incremental decoding, kept compact for the CPU.

Each decoding step attends its one new query to the keys and values of every earlier
position (DESIGN.md section 3: the policy's logits m(s_n | y_<n, x) of eq. 1), so the step
reads the whole filled cache `[B, H, T, Dh]` per layer. Where that cache lives in a buffer
with room for all `T_max` positions, each (row, head) block of T filled positions is
followed by a gap of `T_max - T` unused ones, and on CPU the gap is what costs: the
hardware stream prefetcher restarts at every block once the gap exceeds a few hundred
bytes. `python benchmarks/bench_kernels.py` (one thread, batch 64, 8 heads, Dh = 32, 6
layers, T = 86): the keys' matmul took 367-465 us per layer with gaps of 0-2 positions and
1,108-1,262 us with gaps of 4-84 (a plain `.sum()` of the keys: 308-418 against 543-664 us).

So the cache keeps the filled part nearly contiguous: it holds two flat buffers and shows a
view `kv [n_layers, 2, B, H, capacity, Dh]` whose capacity is only a few positions beyond
the filled length (`grow`: at most ~512 bytes of gap per block). When a step needs more
room, the filled part is copied into the other buffer at a larger capacity (one
sequential copy every `grow` steps). Nothing about the values changes: the same keys and
values sit at the same positions, and the matmuls see the same operands
(`tests/test_kv_cache.py` checks the tokens against the one-buffer layout).

The price is memory: two buffers of the full size, twice the one-buffer layout (tiny
TokenLM, 128 CFG rows: 2 x 67 MB). `compact=False` (the default on GPUs, whose memory system
has no such cliff) is the one-buffer layout: a single view with room for every position,
written in place.
"""

from __future__ import annotations

import math

import torch

#: Bytes of unused cache between two (row, head) blocks that the prefetcher still streams
#: across (measured: 3 rows of 128 bytes did, 4 did not).
PREFETCH_GAP_BYTES = 512


class KVCache:
    """Key/value cache of one decoding run (module docstring).

    Args: `n_layers, batch, heads, head_dim`; `max_positions`, the most positions a run
    fills (prefix + seq_len - 1); `compact` (default: True on CPU).

    Attributes: `kv`, the current view `[n_layers, 2, B, H, capacity_now, Dh]` (index 0
    keys, 1 values; call `reserve` before writing a position); `length`, the number of
    filled positions.
    """

    def __init__(
        self,
        n_layers: int,
        batch: int,
        heads: int,
        head_dim: int,
        max_positions: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        compact: bool | None = None,
    ):
        device = torch.device(device)
        self.compact = device.type == "cpu" if compact is None else bool(compact)
        self.max_positions = int(max_positions)
        self.length = 0
        self._lead = (n_layers, 2, batch, heads)
        self._head_dim = head_dim
        row_bytes = head_dim * torch.empty((), dtype=dtype).element_size()
        # Positions added per growth: the gap after a growth stays under the prefetcher's.
        self.grow = max(2, PREFETCH_GAP_BYTES // row_bytes) if self.compact else self.max_positions
        size = math.prod(self._lead) * self.max_positions * head_dim
        n_buffers = 2 if self.compact else 1
        self._buffers = [torch.empty(size, dtype=dtype, device=device) for _ in range(n_buffers)]
        self._current = 0
        self.kv = self._view(0, 0 if self.compact else self.max_positions)

    @property
    def batch_size(self) -> int:
        return self._lead[2]

    @property
    def capacity(self) -> int:
        """The most positions this cache can hold (prefix + seq_len - 1)."""
        return self.max_positions

    def _view(self, buffer: int, positions: int) -> torch.Tensor:
        n = math.prod(self._lead) * positions * self._head_dim
        return self._buffers[buffer][:n].view(*self._lead, positions, self._head_dim)

    def reserve(self, positions: int) -> torch.Tensor:
        """Make room for `positions` filled positions; return the (maybe new) view `kv`."""
        if positions > self.max_positions:
            raise ValueError(
                f"KVCache: {positions} positions asked, the cache holds {self.max_positions}"
            )
        if positions <= self.kv.shape[4]:
            return self.kv
        room = min(self.max_positions, positions + self.grow - 1)
        other = 1 - self._current
        view = self._view(other, room)  # [n_layers, 2, B, H, room, Dh]
        n = self.length
        view[:, :, :, :, :n].copy_(self.kv[:, :, :, :, :n])
        self._current, self.kv = other, view
        return view
