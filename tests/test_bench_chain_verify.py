"""The chain-verification benchmark runs end to end, alone and against a baseline, so the figures
in docs/benchmarks/chain.md can be taken again (its numbers are not checked here: speed lives in bench/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from miner.bench import chain_verify

ROOT = Path(__file__).resolve().parent.parent


def test_the_verify_bench_times_this_version_and_a_baseline(tmp_path, capsys):
    chain = tmp_path / "bench.sqlite"
    assert chain_verify.main(["--blocks", "5", "--runs", "2", "--chain", str(chain), "--baseline",
                              str(ROOT), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["blocks"] == 5 and report["build_seconds"] is not None
    for name in ("baseline", "this"):
        assert len(report[name]["verify"]["runs"]) == 2 and len(report[name]["writer_open"]["runs"]) == 2
        assert report[name]["verify"]["min"] <= report[name]["verify"]["median"] <= report[name]["verify"]["max"]


def test_a_baseline_without_the_package_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        chain_verify.main(["--blocks", "1", "--baseline", str(tmp_path)])
    assert exc.value.code == 2
    assert "no miner package there" in capsys.readouterr().err
