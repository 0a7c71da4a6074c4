"""The failing side of the rules the product's safety rests on: each rule is handed the input it
exists to refuse, on a chain easy enough that it is the first rule to fail, and must answer as
Bitcoin Core answers (the BIP 22 reason, the 401, the overflow).

An audit planted one bug at a time (the witness commitment check off, BIP 34 off, the host
re-check accepting everything, a missing Authorization header let through, the most-work check
on open off, ASERT's division floored, nBits size 33 not overflowing) and found the suite green
each time; every one of those plants fails a test here.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import urllib.request

import pytest
from support.block_bodies import CASES, coinbase, mined
from support.nodeproc import NodeProcess, make_chain

from miner.backends.base import Backend
from miner.backends.work import KernelWork

# --------------------------------------------------------------------------- block-body rules


@pytest.fixture(scope="module")
def easy_node(tmp_path_factory):
    chain = make_chain(tmp_path_factory.mktemp("body") / "chain.sqlite", hashes_per_block=2)
    with NodeProcess(chain) as node:
        yield node


@pytest.mark.parametrize("reason", list(CASES))
def test_each_body_rule_refuses_what_it_exists_to_refuse(easy_node, reason):
    template = easy_node.call("getblocktemplate", {"rules": ["segwit"]})
    height = template["height"]
    block = mined(template, CASES[reason](height))
    # A BIP 23 proposal is judged by every rule but proof of work, as Core's TestBlockValidity.
    assert easy_node.call("getblocktemplate", {"mode": "proposal", "data": block, "rules": ["segwit"]}) == reason
    if reason == "bad-cb-missing":
        # Core's submitblock refuses it before validation, with this error (rpc/mining.cpp)
        assert easy_node.call("submitblock", block)["error"] == {
            "code": -22, "message": "Block does not start with a coinbase"}
    else:
        assert easy_node.call("submitblock", block) == reason
    assert easy_node.call("getblockcount") == height - 1  # nothing stored
    # the same block with the fault mended is accepted: the refusal was the rule's, not another's
    if reason == "bad-cb-height":
        assert easy_node.call("submitblock", mined(template, [coinbase(height)])) is None


# --------------------------------------------------------------------------- the host re-check


class _LyingKernel(Backend):
    """A kernel that proposes every nonce of its range: the host re-check must refuse all but the
    real hits."""

    kind = "ref"

    def _search(self, work: KernelWork, nonce_start: int, count: int) -> tuple[list[int], int]:
        return list(range(nonce_start, nonce_start + min(count, self.max_hits))), count


def test_the_host_recheck_refuses_a_kernels_false_candidates():
    from miner.backends.ref import reference_hits
    work = KernelWork(bytes(range(76)), 1 << 250)  # about one hit in 64
    liar = _LyingKernel("liar", "a test device", max_hits=64)
    assert (liar.name, liar.device, liar.measured_rate) == ("liar", "a test device", 0.0)
    result = liar.search(work, 0, 64)
    real = reference_hits(work, 0, 64)
    assert result.nonces == real
    assert result.rejected == 64 - len(real) > 0


def test_the_recheck_counts_every_piece_and_the_search_ends_at_its_range():
    """With a rate measured the range is searched in pieces (2^16 nonces here), each proposing
    64 candidates: the refusals of all pieces add up, and the last, shorter piece stops at the
    end of the range."""
    import threading

    from miner.backends.ref import reference_hits
    work = KernelWork(bytes(range(76)), 1 << 250)
    liar = _LyingKernel("liar", "test", max_hits=64)
    liar.measured_rate = 1e6
    count = 3 * (1 << 16) - 5
    result = liar.search(work, 0, count, threading.Event())
    proposed = [n for start in range(0, count, 1 << 16) for n in range(start, start + 64)]
    hits = set(reference_hits(work, 0, count))
    real = [n for n in proposed if n in hits]
    assert result.count == count and result.nonces == real
    assert result.rejected == len(proposed) - len(real)


# --------------------------------------------------------------------------- RPC authentication


@pytest.mark.parametrize("header", [None, "Bearer abc", "Basic !!!not-base64!!!", "Basic " + base64.b64encode(
    b"__cookie__:wrong").decode(), "Basic " + base64.b64encode(b"no-colon").decode()])
def test_a_request_without_good_credentials_gets_401(easy_node, header):
    body = json.dumps({"method": "getblockcount", "params": [], "id": 1}).encode()
    request = urllib.request.Request(easy_node.url + "/", data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": header} if header else {})})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 401
    assert info.value.headers["WWW-Authenticate"] == 'Basic realm="jsonrpc"'


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def test_credentials_accept_exactly_the_pairs_they_hold():
    """The check itself, in this process (the node above runs it in another): every pair it was
    given, each alone, and nothing else: no header, another scheme, bad base64, a prefix or an
    extension of a good pair, another user, a case change."""
    from miner.node.rpc.auth import Credentials
    creds = Credentials(["__cookie__:" + "ab" * 32, "alice:s3cret"])
    assert creds.check(_basic(b"__cookie__:" + b"ab" * 32)) and creds.check(_basic(b"alice:s3cret"))
    assert creds.check("Basic  " + base64.b64encode(b"alice:s3cret").decode() + " ")  # spaces around
    refused = [None, "", "Basic", "Basic ", "Bearer " + base64.b64encode(b"alice:s3cret").decode(),
               "basic " + base64.b64encode(b"alice:s3cret").decode(), "Basic !!!not-base64!!!",
               _basic(b"alice:s3cre"), _basic(b"alice:s3cret!"), _basic(b"bob:s3cret"), _basic(b"ALICE:s3cret"),
               _basic(b"alice"), _basic(b""), _basic(b"__cookie__:" + b"ab" * 31),
               # a good pair with a character outside base64 in it: refused, not skipped over
               "Basic " + base64.b64encode(b"alice:s3cret").decode()[:4] + "!"
               + base64.b64encode(b"alice:s3cret").decode()[4:]]
    assert [h for h in refused if creds.check(h)] == []
    assert not Credentials([]).check(_basic(b":"))  # a node with no pairs lets nobody in


def test_a_cookie_is_removed_only_while_it_is_still_ours(tmp_path):
    from miner.node.rpc.auth import read_cookie, remove_cookie, write_cookie
    cookie = tmp_path / ".cookie"
    import subprocess
    import sys
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid whose process has ended
    (tmp_path / f"..cookie.tmp-{dead.pid}").write_text("left by a node killed while writing its cookie")
    ours = write_cookie(cookie)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cookie"]  # the leftover went, nothing else stayed
    assert read_cookie(cookie) == ours and ours.startswith("__cookie__:") and len(ours) == 11 + 64
    assert cookie.stat().st_mode & 0o777 == 0o600
    theirs = write_cookie(cookie)  # a second node started on the same folder
    assert theirs != ours
    remove_cookie(cookie, ours)
    assert read_cookie(cookie) == theirs  # not ours any more: left alone
    remove_cookie(cookie, theirs)
    assert not cookie.exists()
    remove_cookie(cookie, theirs)  # already gone: no error


# --------------------------------------------------------------------------- the most-work chain on open


def test_a_file_whose_active_chain_is_not_the_most_work_chain_is_refused(tmp_path):
    from support.blockmaker import make_block, params

    from miner.chain.chain import Chain
    from miner.errors import ChainError, InvalidBlock
    path = tmp_path / "tree.sqlite"
    with Chain.create(path, params("flat")) as chain:
        genesis = chain.tip_hash
        a1 = make_block(chain, genesis, 10, b"a1")
        chain.add_block(a1)
        b1 = make_block(chain, genesis, 10, b"b1")
        chain.add_block(b1)
        b2 = make_block(chain, b1.hash, 10, b"b2")
        chain.add_block(b2)  # branch b has more work: it is active
        assert chain.tip_hash == b2.hash
    # Tamper: make branch a the stored active chain, as a bug in a reorganisation would leave it.
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE active SET hash = ? WHERE height = 1", (a1.hash,))
        conn.execute("DELETE FROM active WHERE height = 2")
    conn.close()
    with pytest.raises((ChainError, InvalidBlock), match="has more work"):
        Chain.open(path)


def test_a_backend_with_no_measured_rate_searches_its_range_in_one_piece():
    """Until a rate is measured there is no telling how long a piece takes: the whole range is
    one piece (a zero rate included); once measured, pieces of about 50 ms, at least 2^16."""
    from miner.backends.ref import ReferenceBackend
    backend = ReferenceBackend()
    assert backend.measured_rate == 0.0 and backend._piece(1 << 30) == 1 << 30  # as made
    backend.measured_rate = 0.0
    assert backend._piece(1 << 30) == 1 << 30
    backend.measured_rate = 1e6
    assert backend._piece(1 << 30) == 1 << 16
    backend.measured_rate = 1e9
    assert backend._piece(1 << 30) == 50_000_000
