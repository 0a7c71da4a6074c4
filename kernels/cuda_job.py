"""Host side of the CUDA kernel's contract: the job words it reads and the launch arithmetic.

Shared by the CuPy backend and the CPU host build used in tests, so both feed the kernel the
same bytes. See the layout comment at the top of sha256d.cu.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from miner.primitives.sha256 import MASK32, expand, rounds

SOURCE = Path(__file__).with_name("sha256d.cu")
SHIM = Path(__file__).with_name("cuda_host_shim.h")
HOST_LAUNCH = Path(__file__).with_name("cuda_host_launch.cpp")
KERNEL_NAME = "sha256d_search"
JOB_WORDS = 29
# What CudaBackend hands CuPy's RawModule; the NVRTC test compiles with exactly these.
NVRTC_OPTIONS = ("-std=c++17",)
PRECOMPUTED_ROUNDS = 3  # rounds 0-2 of the second block read only W0..W2


def _ror(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & MASK32


class KernelInputs(Protocol):
    """What the kernel reads of a unit of work: plain words, computed once on the host."""

    midstate: Sequence[int]  # SHA-256 state after the header's first 64 bytes
    tail: Sequence[int]  # merkle-root tail, time, bits (big-endian message words)
    target_words: Sequence[int]  # eight limbs, least significant first


def job_words(work: KernelInputs) -> np.ndarray:
    """The kernel's job array for one header prefix and target."""
    mid = list(work.midstate)
    w0, w1, w2 = work.tail
    # Schedule with a zero nonce word: W16 and W17 do not read W3, so they are exact for any nonce.
    sched = expand([w0, w1, w2, 0, 0x80000000] + [0] * 10 + [640])
    state3 = rounds(mid, sched, 0, PRECOMPUTED_ROUNDS)
    words = mid + [w0, w1, w2] + state3 + [sched[16], sched[17]] + list(work.target_words)
    assert len(words) == JOB_WORDS
    return np.array(words, dtype=np.uint32)


def source_text() -> str:
    return SOURCE.read_text()
