"""Inputs that used to end in a traceback or an unreadable answer (issue 21, item 9): each now
gets one clear line, or a valid JSON-RPC error. Each test failed before its fix."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from conftest import mine_easy_chain

from miner.node.rpc.protocol import handle_body


def _one_line(proc: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("miner: error:") and fragment in lines[0], proc.stderr


def _miner(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "miner", *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_a_5000_digit_height(tmp_path):
    path = tmp_path / "c.sqlite"
    mine_easy_chain(path, 2).close()
    _one_line(_miner("chain", "show", "9" * 5000, "--chain", str(path)), 2, "no block at height")


def test_an_unclosed_ipv6_url():
    _one_line(_miner("mine", "--url", "http://[::1", "--blocks", "1"), 2, "--url is not a URL")


def test_nan_and_infinity_are_not_json():
    async def dispatch(method, params):
        return 1

    for body in (b'{"method": "getblockcount", "id": NaN}', b'{"method": "x", "params": [Infinity], "id": 1}',
                 b'[{"method": "x", "id": -Infinity}]'):
        reply = asyncio.run(handle_body(body, dispatch))
        text = json.dumps(reply.body, allow_nan=False)  # what the server sends must be JSON
        assert json.loads(text)["error"]["code"] == -32700, text
