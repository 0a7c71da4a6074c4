"""Inputs that used to end in a traceback or an unreadable answer (issue 21, item 9): each now
gets one clear line, or a valid JSON-RPC error. Each test failed before its fix."""

from __future__ import annotations

import asyncio
import json
import sqlite3

from miner.bench.chain_verify import build_easy_chain
from support.cliproc import assert_one_line_error, run

from miner.node.rpc.protocol import handle_body


def test_a_5000_digit_height(tmp_path):
    path = tmp_path / "c.sqlite"
    build_easy_chain(path, 2).close()
    assert_one_line_error(run("chain", "show", "9" * 5000, "--chain", str(path)), 2, "no block at height")


def test_an_unclosed_ipv6_url():
    assert_one_line_error(run("mine", "--url", "http://[::1", "--blocks", "1"), 2, "--url is not a URL")


def test_nan_and_infinity_are_not_json():
    async def dispatch(method, params):
        return 1

    for body in (b'{"method": "getblockcount", "id": NaN}', b'{"method": "x", "params": [Infinity], "id": 1}',
                 b'[{"method": "x", "id": -Infinity}]'):
        reply = asyncio.run(handle_body(body, dispatch))
        text = json.dumps(reply.body, allow_nan=False)  # what the server sends must be JSON
        assert json.loads(text)["error"]["code"] == -32700, text


def test_a_name_too_long_for_its_lock_file(tmp_path):
    name = "b" * 250 + ".sqlite"
    for args in (["mine", "--backend", "ref", "--blocks", "1"], ["node", "--rpc-port", "0"], ["chain", "info"]):
        assert_one_line_error(run(*args, "--chain", str(tmp_path / name)), 2, "at most 250 bytes")


def test_a_block_number_at_sqlites_limit(tmp_path):
    """An edited `seq` of 2^63 - 1: the next block cannot be numbered. One line, and the file
    keeps what it had."""
    path = tmp_path / "c.sqlite"
    build_easy_chain(path, 3).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE blocks SET seq = 9223372036854775807 WHERE seq = 3")
    conn.commit()
    conn.close()
    proc = run("mine", "--backend", "ref", "--blocks", "1", "--chain", str(path), "--quiet")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "the largest the file can hold" in proc.stderr.strip().splitlines()[-1]
    verify = run("chain", "verify", "--chain", str(path), "--json")
    assert json.loads(verify.stdout)["height"] == 3


def test_a_hash_column_holding_another_sqlite_type(tmp_path):
    """An edited file whose active chain names a block by TEXT (or a short BLOB): `chain verify`
    ended in a traceback; every command now names the damage in one line."""
    pristine = tmp_path / "pristine.sqlite"
    build_easy_chain(pristine, 3).close()
    for i, (edit, fragment) in enumerate((
            ("UPDATE active SET hash = hex(hash) WHERE height = 2", "<TEXT, not a hash>"),
            ("UPDATE active SET hash = x'00' WHERE height = 1", "<BLOB, not a hash>"),
            ("UPDATE active SET hash = 7 WHERE height = 3", "<INTEGER, not a hash>"))):
        path = tmp_path / f"edited{i}.sqlite"
        path.write_bytes(pristine.read_bytes())
        with sqlite3.connect(path) as conn:
            conn.execute(edit)
        conn.close()
        before = path.read_bytes()
        verify = run("chain", "verify", "--chain", str(path))
        assert verify.returncode == 1 and verify.stderr.splitlines() == [
            line for line in verify.stderr.splitlines() if line.startswith("miner: chain INVALID:")]
        assert fragment in verify.stderr and len(verify.stderr.splitlines()) == 1
        assert_one_line_error(run("mine", "--backend", "ref", "--blocks", "1", "--chain", str(path)), 1, fragment)
        info = run("chain", "info", "--chain", str(path))
        assert info.returncode == 1 and "Traceback" not in info.stderr and fragment in info.stderr
        assert path.read_bytes() == before


def test_an_empty_chain_name():
    """`--chain ""` used to be read as '.', the current folder ('.: not a regular file')."""
    for args in (["mine", "--backend", "ref", "--blocks", "1"], ["node", "--rpc-port", "0"], ["chain", "info"],
                 ["chain", "show", "1"]):
        assert_one_line_error(run(*args, "--chain", ""), 2, "--chain: must not be empty")


def test_params_nested_100000_deep():
    """Nesting deep enough to exhaust the parser's recursion, and deeper than the value cap: a
    JSON-RPC error each, as valid JSON."""
    async def dispatch(method, params):
        return 1

    for depth, code in ((50_000, -32700), (100_001, -32600)):
        for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
            body = b'{"method": "getblockcount", "params": [' + opener * depth + b"1" * (opener == b'{"a":') \
                + closer * depth + b'], "id": 1}'
            reply = asyncio.run(handle_body(body, dispatch))
            assert json.loads(json.dumps(reply.body))["error"]["code"] == code, (depth, opener)
