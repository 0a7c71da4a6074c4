import os
import tempfile
from pathlib import Path

# Isolation, set before anything imports numba (it reads its cache folder once, at import) and
# inherited by every process a test starts:
# - MINER_CACHE: the CPU kernel choice and the CUDA launch tuning live in a folder of this run's
#   own, so nothing a test measures (on a loaded machine, or on the simulated GPU) reaches the
#   user's runs, and nothing the user's runs chose steers a test;
# - NUMBA_CACHE_DIR: compiled kernels go under pytest's own cache folder in the checkout, not
#   beside the installed package; kept between runs (machine code keyed by CPU and source, it
#   chooses nothing), so a second run does not compile again.
_SESSION_CACHE = tempfile.mkdtemp(prefix="miner-test-cache-")
os.environ["MINER_CACHE"] = _SESSION_CACHE
os.environ["NUMBA_CACHE_DIR"] = str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "numba")

import pytest  # noqa: E402

# One builder for tests and benchmarks: real blocks, mined with hashlib, appended through Chain.
from miner.bench.chain_verify import build_easy_chain  # noqa: E402

# Read after the environment above is set (the compile lane reads NUMBA_CACHE_DIR at import): the
# compile lane, and the floors every test is marked with by what it does.
pytest_plugins = ["support.compile_lane", "support.floors"]


@pytest.fixture
def easy_chain(tmp_path):
    chain = build_easy_chain(tmp_path / "chain.sqlite", 12)
    yield chain
    chain.close()


def pytest_sessionfinish(session, exitstatus):
    import shutil
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
