"""Host side of the CUDA scrypt kernel's contract (kernels/scrypt.cu): the job words it reads,
the scratchpad it needs, and the compile options. Shared by the tests' host build and, when it
exists, the CuPy backend, so both feed the kernel the same bytes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("scrypt.cu")
HOST_LAUNCH = Path(__file__).with_name("scrypt_host_launch.cpp")
KERNEL_NAME = "scrypt_search"
JOB_WORDS = 27
N = 1024
ROW_BYTES = 128  # one ROMix state: 32 words


def nvrtc_options(lookup_gap: int = 1) -> tuple[str, ...]:
    """What NVRTC compiles the kernel with; the lookup gap is a compile-time constant."""
    if lookup_gap not in (1, 2, 4, 8):
        raise ValueError(f"lookup gap must be 1, 2, 4 or 8, got {lookup_gap}")
    return ("-std=c++17", f"-DLOOKUP_GAP={lookup_gap}")


def job_words(header_prefix: bytes, target_words: Sequence[int]) -> np.ndarray:
    """The 76-byte header prefix as 19 big-endian words, then the target's eight limbs."""
    words = list(np.frombuffer(header_prefix, dtype=">u4").astype(np.uint32)) + list(target_words)
    assert len(words) == JOB_WORDS
    return np.array(words, dtype=np.uint32)


def pad_words(threads: int, lookup_gap: int = 1) -> int:
    """Scratchpad words for `threads` threads: N / gap rows of 32 words each."""
    return threads * (N // lookup_gap) * 32
