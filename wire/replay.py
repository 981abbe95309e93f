"""What a stream keeps of what it sent, until the peer confirms it arrived (resume, docs/protocol.md §9)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator


class ReplayBuffer:
    """Bytes sent on one stream and not yet confirmed received: the range [start, start + len).

    Holds references to the sent chunks (no copy)."""

    __slots__ = ("start", "_chunks", "_size")

    def __init__(self) -> None:
        self.start = 0
        self._chunks: deque[memoryview] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, chunk: memoryview) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)

    def trim(self, offset: int) -> int:
        """Forget everything below ``offset`` (clamped to what is held). Returns the bytes freed."""
        drop = min(offset - self.start, self._size)
        if drop <= 0:
            return 0
        left = drop
        chunks = self._chunks
        while left:
            head = chunks[0]
            if len(head) <= left:
                chunks.popleft()
                left -= len(head)
            else:
                chunks[0] = head[left:]
                left = 0
        self.start += drop
        self._size -= drop
        return drop

    def chunks(self, max_size: int) -> Iterator[memoryview]:
        """What is held, in order, in pieces of at most ``max_size`` bytes."""
        for chunk in self._chunks:
            for pos in range(0, len(chunk), max_size):
                yield chunk[pos:pos + max_size]
