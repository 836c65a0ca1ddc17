"""The finished offsets above a partition's commit point, as commit metadata.

A commit says "everything before C is done"; work finishing out of order leaves finished
offsets above C that a restart would otherwise redo. They ride along in the commit's metadata
string (Kafka keeps it with the offset, atomically), so the next owner skips them.
parallel-consumer's idea; this encoding is our own:

    wc1<mode>:<C>:<base64 of zlib of the payload>

mode `r`: the run lengths above C, alternating unfinished and finished (C itself is always
unfinished), as unsigned LEB128 varints; mode `b`: a bitmap, bit i for offset C+1+i. The
shorter one is written. When even that exceeds the broker's `offset.metadata.max.bytes`, the
lowest offsets are kept (they are the ones a restart would reach first) and the rest dropped:
those are redone after a crash, which is a duplicate, never a loss.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable
from typing import Final

PREFIX: Final = "wc1"


def encode(base: int, finished: Iterable[int], limit: int) -> tuple[str, bool]:
    """Metadata for a commit at `base` (the lowest unfinished offset) and whether offsets had
    to be dropped to fit in `limit` bytes. Offsets at or below `base` are ignored."""
    above = sorted(o for o in finished if o > base)
    if not above:
        return "", False
    text = _shortest(base, above)
    if len(text) <= limit:
        return text, False
    # Keep the longest prefix that fits. The run-length bytes of a prefix of whole runs are a
    # prefix of the bytes of all runs, so the search only slices and compresses, in C.
    raw, ends = _runs(base, above)
    low, high = 0, len(ends)
    while low < high:
        middle = (low + high + 1) // 2
        if len(_text("r", base, raw[: ends[middle - 1]])) <= limit:
            low = middle
        else:
            high = middle - 1
    return (_text("r", base, raw[: ends[low - 1]]) if low else ""), True


def decode(metadata: str | None, base: int) -> set[int]:
    """The finished offsets a commit at `base` carried; empty for anything not ours or not for
    this base (say, metadata written by another tool)."""
    if not metadata or not metadata.startswith(PREFIX) or len(metadata) < len(PREFIX) + 2:
        return set()
    mode = metadata[len(PREFIX)]
    try:
        written_base, payload = metadata[len(PREFIX) + 2 :].split(":", 1)
        if int(written_base) != base:
            return set()
        raw = zlib.decompress(base64.b64decode(payload, validate=True))
    except (ValueError, zlib.error):
        return set()
    if mode == "r":
        return _from_runs(base, raw)
    if mode == "b":
        return {base + 1 + i for i in range(len(raw) * 8) if raw[i // 8] >> (i % 8) & 1}
    return set()


_MAX_BITMAP_BITS: Final = 1 << 16  # past this span a bitmap is never the shorter one


def _shortest(base: int, above: list[int]) -> str:
    mode, raw = "r", _runs(base, above)[0]
    if above[-1] - base <= _MAX_BITMAP_BITS:
        bitmap = _bitmap(base, above)
        if len(bitmap) < len(raw):
            mode, raw = "b", bitmap
    return _text(mode, base, raw)


def _text(mode: str, base: int, raw: bytes) -> str:
    return f"{PREFIX}{mode}:{base}:{base64.b64encode(zlib.compress(raw)).decode('ascii')}"


def _runs(base: int, above: list[int]) -> tuple[bytes, list[int]]:
    """The run-length bytes, and where each (unfinished, finished) pair of runs ends."""
    out = bytearray()
    ends: list[int] = []
    position = base  # the last offset accounted for
    index = 0
    while index < len(above):
        start = above[index]
        end = start
        while index + 1 < len(above) and above[index + 1] == end + 1:
            index += 1
            end += 1
        _varint(out, start - position - 1)  # unfinished run before it (0 only at the start)
        _varint(out, end - start + 1)  # the finished run
        ends.append(len(out))
        position = end
        index += 1
    return bytes(out), ends


def _from_runs(base: int, raw: bytes) -> set[int]:
    numbers = _varints(raw)
    finished: set[int] = set()
    position = base
    for gap, run in zip(numbers[::2], numbers[1::2], strict=False):
        start = position + gap + 1
        finished.update(range(start, start + run))
        position = start + run - 1
    return finished


def _bitmap(base: int, above: list[int]) -> bytes:
    bits = bytearray((above[-1] - base + 7) // 8)
    for offset in above:
        i = offset - base - 1
        bits[i // 8] |= 1 << (i % 8)
    return bytes(bits)


def _varint(out: bytearray, value: int) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _varints(raw: bytes) -> list[int]:
    numbers, value, shift = [], 0, 0
    for byte in raw:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
        else:
            numbers.append(value)
            value, shift = 0, 0
    return numbers
