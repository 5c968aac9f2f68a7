"""`ReadSize`: how much a session's next blocking read asks for, small while the session is idle.

`os.read(fd, n)` and `sock.recv(n)` allocate their n-byte result before they
block, and each of an idle session's two threads blocks in such a read for
as long as the session lasts. A read of IDLE_READ_BYTES comes from Python's
small-object pools instead of malloc, which hands out touched memory that
stays resident. A read that fills IDLE_READ_BYTES means data is flowing: the
reads ask for `busy` bytes until SHORT_READS_BEFORE_IDLE reads in a row
return less, so a busy stream is not cut into small reads
(docs/performance.md, "idle-rss", has the figures).
"""

#: The result of such a read, 33 bytes more, still fits in Python's own allocator
#: (objects up to 512 bytes).
IDLE_READ_BYTES = 512 - 33
#: After this many short reads in a row, a session's reads are small again.
SHORT_READS_BEFORE_IDLE = 32


class ReadSize:
    """The size of the next read: `now`, updated by `after(bytes the last read returned)`."""

    __slots__ = ("now", "_busy", "_short_reads_left")

    def __init__(self, busy):
        self.now = IDLE_READ_BYTES
        self._busy = busy
        self._short_reads_left = 0

    def after(self, got):
        """Note a read that returned `got` bytes; the size of the next one."""
        if got >= IDLE_READ_BYTES:
            self.now = self._busy
            self._short_reads_left = SHORT_READS_BEFORE_IDLE
        elif self._short_reads_left:
            self._short_reads_left -= 1
        else:
            self.now = IDLE_READ_BYTES
        return self.now
