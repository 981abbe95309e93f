"""broker/memory.py: each connection's 256 KiB TLS read buffer goes apart from the heap, and only it."""

from __future__ import annotations

import subprocess
import sys

import pytest

# In a fresh interpreter: free one buffer of that size (which raises glibc's dynamic threshold), then
# take one as the loop creates a connection's TLS layer (after before_tls(), as the acceptor does) and
# one a turn of the loop later; print how glibc placed each: "apart" when the chunk is mapped on its own
# (the IS_MMAPPED bit, 2, of the size word just before it), "heap" otherwise.
PROBE = """
import asyncio, ctypes, sys
from batchtunnel.broker.memory import TLS_READ_BUFFER, TlsBuffers
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def where():
    address = libc.malloc(TLS_READ_BUFFER)
    size_word = ctypes.c_size_t.from_address(address - ctypes.sizeof(ctypes.c_size_t)).value
    return "apart" if size_word & 2 else "heap"

async def main():
    libc.free(libc.malloc(TLS_READ_BUFFER))
    buffers = TlsBuffers()
    if sys.argv[1] == "before_tls":
        buffers.before_tls()
    first = where()
    await asyncio.sleep(0)
    print(first, where())

asyncio.run(main())
"""


def placements(step: str) -> str:
    return subprocess.run([sys.executable, "-c", PROBE, step], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_tls_read_buffer_gets_a_mapping_of_its_own_and_nothing_after_it() -> None:
    assert placements("none") == "heap heap"  # what glibc does by itself once one such buffer was freed
    assert placements("before_tls") == "apart heap"
