import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


# One builder for tests and benchmarks: real blocks, mined with hashlib, appended through Chain.
from miner.bench.chain_verify import GENESIS_TIME, build_easy_chain as mine_easy_chain  # noqa: E402,F401


@pytest.fixture
def easy_chain(tmp_path):
    chain = mine_easy_chain(tmp_path / "chain.sqlite", 12)
    yield chain
    chain.close()
