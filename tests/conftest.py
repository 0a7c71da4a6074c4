import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402

from miner.backends.ref import reference_hits  # noqa: E402
from miner.chain import Chain  # noqa: E402
from miner.params import preset  # noqa: E402
from miner.sources.local import LocalChainSource  # noqa: E402
from miner.work import Solution  # noqa: E402

GENESIS_TIME = 1_700_000_000


def mine_easy_chain(path, blocks, preset_name="regtest", spacing=1):
    """A real chain mined with the hashlib reference at an easy target, on a simulated clock."""
    chain = Chain.create(path, preset(preset_name, GENESIS_TIME))
    clock = [GENESIS_TIME]
    source = LocalChainSource(chain, clock=lambda: clock[0])
    for _ in range(blocks):
        clock[0] += spacing
        job = source.job()
        start = 0
        while True:
            hits = reference_hits(job.work(0), start, 256)
            if hits:
                break
            start += 256
        source.submit(Solution(job, 0, hits[0]))
    return chain


@pytest.fixture
def easy_chain(tmp_path):
    chain = mine_easy_chain(tmp_path / "chain.sqlite", 12)
    yield chain
    chain.close()
