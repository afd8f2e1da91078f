"""`tune_allocator`: after it, a block of a few MiB comes from the heap instead of a fresh mmap."""

import os
import subprocess
import sys
import textwrap

import pytest

from vlaforge.utils.allocator import tune_allocator

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"),
    reason="mallopt thresholds are glibc's",
)

# In a fresh process: how many blocks glibc maps on its own (mallinfo2().hblks) for one 4 MiB malloc.
PROBE = textwrap.dedent("""
    import ctypes, ctypes.util, os, sys
    from vlaforge.utils.allocator import tune_allocator

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype, libc.malloc.restype = MallInfo2, ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    print(tune_allocator())
    before = libc.mallinfo2().hblks
    block = libc.malloc(4 * 2**20)
    print(libc.mallinfo2().hblks - before)
    libc.free(block)
""")


def probe(**env: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@glibc
def test_tuned_process_serves_a_4_mib_tensor_from_the_heap():
    assert probe(VLAFORGE_MALLOC="") == ["True", "0"]  # no mapping of its own: freed, it stays for reuse


@glibc
def test_opting_out_keeps_glibc_default_which_maps_large_blocks():
    assert probe(VLAFORGE_MALLOC="default") == ["False", "1"]


def test_opt_out_is_a_no_op(monkeypatch):
    monkeypatch.setenv("VLAFORGE_MALLOC", "default")
    assert tune_allocator() is False
