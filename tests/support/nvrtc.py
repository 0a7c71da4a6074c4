"""NVRTC through CuPy's binding, which needs no GPU: the compile tests skip where the test extra did
not install it and fail where it did and NVRTC still does not load."""

from __future__ import annotations

import pytest

# The test extra installs these on Linux x86-64 (pyproject.toml): once they are there, an NVRTC
# that does not load is a broken install, and the compile tests fail instead of skipping.
NVRTC_DISTRIBUTIONS = ("cupy-cuda13x", "nvidia-cuda-nvrtc")


def installed(distribution: str) -> bool:
    from importlib import metadata
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def load_nvrtc():
    """CuPy's NVRTC binding (it needs no GPU). Skips where the test extra did not install it
    (another platform, a bare `pytest`); fails where it did and NVRTC still cannot load."""
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as exc:  # not installed, or no NVRTC library found
        why = f"NVRTC through CuPy unavailable ({type(exc).__name__}: {exc})"
        present = [d for d in NVRTC_DISTRIBUTIONS if installed(d)]
        if present:
            pytest.fail(f"{why}, although the test extra installed {', '.join(present)}: a broken install")
        pytest.skip(f"{why}; pip install -e '.[test]'")
    return nvrtc


# What CuPy's RawModule appends to the caller's options before NVRTC sees them (cupy/cuda/
# compiler.py: '-ftz=true' in _compile_with_cache_cuda; '-arch=sm_XX' and
# '--device-as-default-execution-space' in _compile_using_nvrtc when jitify is off).
CUPY_ADDED_OPTIONS = ("-ftz=true", "--device-as-default-execution-space")
