"""`MiningRun`, which every `miner mine` is (the CLI only configures it): what it holds is released
once whatever ends the run, and the summary is always printed, also before a failure is raised."""

from __future__ import annotations

import io
import json
import time

import pytest

from miner.backends.ref import ReferenceBackend
from miner.chain.chain import Chain
from miner.consensus.params import preset
from miner.errors import ChainError
from miner.mining.run import MiningRun, RunOptions
from miner.mining.sources.local import LocalChainSource
from miner.ui.reporting import JsonReporter


class FullDisk(LocalChainSource):
    """The local chain, whose file refuses every append (a full disk)."""

    def submit(self, solution):
        raise ChainError("the disk is full")


def _run(tmp_path, source_kind, blocks: int):
    chain = Chain.create(tmp_path / "c.sqlite", preset("regtest", int(time.time())))
    out = io.StringIO()
    released = []
    run = MiningRun(source_kind(chain), [ReferenceBackend()], JsonReporter(out), {"path": "c.sqlite"},
                    RunOptions(blocks=blocks, unit_seconds=0.1), release=lambda: released.append(chain.close()))
    return run, out, released


def test_a_run_mines_its_blocks_releases_once_and_ends_with_the_summary(tmp_path):
    run, out, released = _run(tmp_path, LocalChainSource, blocks=2)
    assert run.run() == 0
    assert len(released) == 1
    summary = [json.loads(line) for line in out.getvalue().splitlines()][-1]
    assert summary["event"] == "summary" and summary["blocks"] == 2 and summary["hashes"] > 0
    assert run.total_rate() >= 0.0


def test_a_failure_is_raised_after_the_summary_and_the_release(tmp_path):
    run, out, released = _run(tmp_path, FullDisk, blocks=1)
    with pytest.raises(ChainError, match="the disk is full"):
        run.run()
    assert len(released) == 1
    summary = [json.loads(line) for line in out.getvalue().splitlines()][-1]
    assert summary["event"] == "summary" and summary["blocks"] == 0
