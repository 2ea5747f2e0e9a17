"""Deterministic disk content for the lab: where a fresh disk holds data, and what bytes.

Both are pure functions of a seed, so the oracle never needs a copy of a base disk: any range
can be regenerated on demand. Bytes come from ``random.Random(...).randbytes`` per 1 MiB block,
keyed by the seed and the block index, so reading a range costs only the blocks it touches and
two ranges never depend on each other (a 64 MiB disk at 40 % fill takes ~0.1 s to generate).
"""

from __future__ import annotations

import random
from functools import lru_cache

BLOCK = 64 * 1024  # data regions are aligned to this (the CBT block size too)
FILL_BLOCK = 1 << 20  # fill_bytes generates this much per random.Random instance
MEAN_DATA_RUN = 16  # mean run of data blocks (1 MiB): files, not single sectors


def base_extents(capacity: int, seed: int, fill: float = 0.4) -> list[tuple[int, int]]:
    """``(offset, length)`` data regions of a fresh disk, sorted, merged, ``BLOCK`` aligned.

    A realistic mix: the first block always holds data (a partition table lives there), then
    alternating runs of data and of zeros whose mean lengths make about ``fill`` of the disk
    data. Lengths are clipped to ``capacity``.
    """
    if not 0.0 <= fill <= 1.0:
        raise ValueError(f"fill {fill} is not between 0 and 1")
    blocks = -(-capacity // BLOCK)
    if blocks == 0 or fill == 0.0:
        return []
    if fill == 1.0:
        return [(0, capacity)]
    rng = random.Random(f"extents:{seed}")
    mean_zero = MEAN_DATA_RUN * (1.0 - fill) / fill
    out: list[tuple[int, int]] = []
    block = 0
    data = True
    while block < blocks:
        mean = MEAN_DATA_RUN if data else mean_zero
        run = max(1, round(rng.expovariate(1.0 / mean))) if mean >= 0.5 else 0
        if data and run:
            end = min(blocks, block + run)
            out.append((block * BLOCK, min(end * BLOCK, capacity) - block * BLOCK))
            block = end
        else:
            block += run
        data = not data
    return out


@lru_cache(maxsize=16)
def _fill_block(seed: int, index: int) -> bytes:
    return random.Random(f"fill:{seed}:{index}").randbytes(FILL_BLOCK)


def fill_bytes(seed: int, offset: int, length: int) -> bytes:
    """The ``length`` data bytes at disk ``offset`` for ``seed`` (independent of other ranges)."""
    if offset < 0 or length < 0:
        raise ValueError(f"bad range {offset}+{length}")
    parts = []
    pos, end = offset, offset + length
    while pos < end:
        index, within = divmod(pos, FILL_BLOCK)
        n = min(FILL_BLOCK - within, end - pos)
        block = _fill_block(seed, index)
        parts.append(block if n == FILL_BLOCK else block[within : within + n])
        pos += n
    return b"".join(parts)
