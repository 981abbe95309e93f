"""Per-stream flow-control arithmetic (docs/protocol.md §5.3). Nothing else.

The receiver grants credit; the sender spends it. The receiver acknowledges
data only once it was delivered to the local socket, so a stream whose reader
stops stops receiving after one window, without slowing any other stream.

Auto-tuning: each time a stream's reader consumes a whole window, the window
doubles, up to ``max_size``. Bulk streams reach the ceiling after a few
windows; interactive streams keep the initial window.
"""

from __future__ import annotations

from .exceptions import FlowControlError
from .frames import MAX_WINDOW


class SendWindow:
    """Credit we may still spend sending on one stream."""

    __slots__ = ("credit",)

    def __init__(self, initial: int) -> None:
        self.credit = initial

    def grant(self, increment: int) -> None:
        """Apply a WINDOW_UPDATE from the peer.

        Raises:
            FlowControlError: the window would exceed MAX_WINDOW (2**31-1).
        """
        if self.credit + increment > MAX_WINDOW:
            raise FlowControlError("WINDOW_UPDATE grows the window past 2**31-1")
        self.credit += increment


class ReceiveWindow:
    """Credit the peer still holds on one stream, and what we owe it."""

    __slots__ = ("size", "max_size", "credit", "unacked", "consumed")

    def __init__(self, initial: int, max_size: int) -> None:
        self.size = initial
        self.max_size = max_size
        self.credit = initial
        self.unacked = 0
        self.consumed = 0  # since the window last grew

    def receive(self, length: int) -> None:
        """Account for ``length`` bytes of DATA from the peer.

        Raises:
            FlowControlError: the peer sent beyond the credit it was granted.
        """
        if length > self.credit:
            raise FlowControlError(f"{length} bytes of DATA exceed the window's remaining {self.credit}")
        self.credit -= length

    def acknowledge(self, length: int, headroom: int) -> int:
        """Record ``length`` bytes delivered locally. The window may grow by ``headroom`` at most
        (what the session's budget has left).

        Returns:
            The increment to send in a WINDOW_UPDATE now, or 0 to wait: updates
            go out once half a window has been consumed.
        """
        self.unacked += length
        self.consumed += length
        if self.unacked < self.size // 2:
            return 0
        extra = 0
        if self.consumed >= self.size and self.size < self.max_size and headroom > 0:
            grown = min(self.size * 2, self.max_size, self.size + headroom)
            extra = grown - self.size
            self.size = grown
            self.consumed = 0
        increment = self.unacked + extra
        self.unacked = 0
        self.credit += increment
        return increment
