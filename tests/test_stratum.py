"""The node's Stratum v1 server, over real sockets on 127.0.0.1, against a miner written here from
the protocol's conventions (not from the server's code): notify fields taken apart, the
coinbase, merkle root and header rebuilt, shares hashed with hashlib."""

from __future__ import annotations

import json
import time

import pytest
from support.nodeproc import NodeProcess, make_chain
from support.stratum_miner import Miner, build_header, dsha

from miner.node.stratum.vardiff import VarDiff, VarDiffLimits

DIFF1 = 0xFFFF << 208


def find(job, extranonce1, size, target: int, want_below: bool = True, start: int = 0, version=None,
         above: int = -1):
    """(extranonce2, nonce, hash value) of the first header on the right side of `target` (and
    above `above`: a share that is not also a block)."""
    ntime = int(job[7], 16)
    en2 = (7).to_bytes(size, "big")
    for nonce in range(start, start + (1 << 24)):
        h = int.from_bytes(dsha(build_header(job, extranonce1, en2, ntime, nonce, version)), "little")
        if (h <= target) == want_below and h > above:
            return en2, nonce, h
    raise AssertionError("no nonce found")


SHARE_DIFFICULTY = 1e-5  # a share in about 43,000 hashes; a block here takes 2^18


@pytest.fixture
def pool(tmp_path):
    chain = make_chain(tmp_path / "chain.sqlite", hashes_per_block=1 << 18)
    with NodeProcess(chain, "--stratum-port", "0", "--stratum-difficulty", str(SHARE_DIFFICULTY)) as node:
        node.stratum = node.ready["stratum_port"]
        yield node


def share_target(difficulty: float) -> int:
    return int(DIFF1 / difficulty)


def test_subscribe_authorize_and_work_as_miners_expect(pool):
    miners = [Miner(pool.stratum) for _ in range(3)]
    try:
        starts = [m.start(f"alice.rig{i}") for i, m in enumerate(miners)]
        assert len({s[0] for s in starts}) == 3 and all(len(s[0]) == 8 for s in starts)  # 4 bytes each
        _, size, difficulty, job = starts[0]
        assert size == 4 and difficulty == SHARE_DIFFICULTY
        _, prevhash, _, coinb2, branch, version, nbits, ntime, clean = job
        info = pool.call("getmininginfo")
        assert clean is True and branch == [] and version == "20000000" and nbits == info["next"]["bits"]
        words = bytes.fromhex(prevhash)
        assert b"".join(words[i:i + 4][::-1] for i in range(0, 32, 4))[::-1].hex() == pool.call("getbestblockhash")
        assert abs(int(ntime, 16) - time.time()) < 120
        assert "6a24aa21a9ed" in coinb2  # the witness commitment output
    finally:
        for m in miners:
            m.close()


def test_shares_are_checked_and_refused_with_the_pools_codes(pool):
    m = Miner(pool.stratum)
    try:
        assert m.call("mining.submit", "alice.rig1", "1", "00000000", "00000000", "00000000")["error"][0] == 25
        en1, size, difficulty, job = m.start()
        ntime = job[7]
        block = int(pool.call("getmininginfo")["next"]["target"], 16)
        en2, nonce, _ = find(job, en1, size, share_target(difficulty), above=block)
        params = ["alice.rig1", job[0], en2.hex(), ntime, f"{nonce:08x}"]
        accepted = m.call("mining.submit", *params)
        assert accepted["result"] is True and accepted["error"] is None, accepted
        assert m.call("mining.submit", *params)["error"] == [22, "Duplicate share", None]
        low_en2, low_nonce, _ = find(job, en1, size, share_target(difficulty), want_below=False)
        refused = m.call("mining.submit", "alice.rig1", job[0], low_en2.hex(), ntime, f"{low_nonce:08x}")
        assert refused["error"][0] == 23
        assert m.call("mining.submit", "mallory.rig", job[0], en2.hex(), ntime, "00000001")["error"][0] == 24
        assert m.call("mining.submit", "alice.rig1", "ffff", en2.hex(), ntime, "00000001")["error"][0] == 21
        assert m.call("mining.submit", "alice.rig1", job[0], "00", ntime, "00000001")["error"][0] == 20
        far = f"{int(time.time()) + 3 * 3600:08x}"
        assert m.call("mining.submit", "alice.rig1", job[0], en2.hex(), far, "00000001")["error"][0] == 20
        # version bits: refused before version rolling is negotiated, accepted within the mask after
        assert m.call("mining.submit", "alice.rig1", job[0], en2.hex(), ntime, "00000002",
                      "00002000")["error"][0] == 20
        configured = m.call("mining.configure", ["version-rolling"], {"version-rolling.mask": "ffffffff"})
        assert configured["result"] == {"version-rolling": True, "version-rolling.mask": "1fffe000"}
        rolled = 0x20000000 | 0x00004000
        en2, nonce, _ = find(job, en1, size, share_target(difficulty), version=rolled, above=block)
        ok = m.call("mining.submit", "alice.rig1", job[0], en2.hex(), ntime, f"{nonce:08x}", "00004000")
        assert ok["result"] is True, ok
        assert m.call("mining.submit", "alice.rig1", job[0], en2.hex(), ntime, f"{nonce:08x}",
                      "80000000")["error"][0] == 20  # outside BIP 320's bits
        assert pool.call("getblockcount") == 0  # shares, no block
    finally:
        m.close()


def test_a_share_meeting_the_block_target_is_a_block_and_everyone_gets_new_work(pool):
    a, b = Miner(pool.stratum), Miner(pool.stratum)
    try:
        en1, size, _, job = a.start("alice.rig1")
        b.start("bob.rig1")
        target = int(pool.call("getmininginfo")["next"]["target"], 16)
        en2, nonce, value = find(job, en1, size, target)
        assert a.call("mining.submit", "alice.rig1", job[0], en2.hex(), job[7], f"{nonce:08x}")["result"] is True
        assert pool.call("getblockcount") == 1
        block = pool.call("getblock", pool.call("getbestblockhash"))
        assert int(block["hash"], 16) == value
        for miner in (a, b):
            fresh = miner.wait_for("mining.notify")["params"]
            assert fresh[8] is True and fresh[0] != job[0]  # clean_jobs on the new tip
        stale = a.call("mining.submit", "alice.rig1", job[0], en2.hex(), job[7], f"{nonce + 1:08x}")
        assert stale["error"][0] == 21
    finally:
        a.close()
        b.close()


def test_suggested_difficulty_before_authorize_and_reconnect_on_shutdown(pool):
    m = Miner(pool.stratum)
    try:
        m.call("mining.subscribe")
        assert m.call("mining.suggest_difficulty", 0.000002)["result"] is True
        assert m.call("mining.authorize", "carol.rig", "")["result"] is True
        assert m.wait_for("mining.set_difficulty")["params"] == [0.000002]
        m.wait_for("mining.notify")
        assert pool.stop() == 0
        assert m.wait_for("client.reconnect")["params"] == []
    finally:
        m.close()


@pytest.mark.parametrize("line, code", [
    (b"{not json", 20), (b"[1, 2]", 20), (b'{"id": 1, "method": "mining.fly", "params": []}', 20),
    (b'{"id": 1, "method": "mining.authorize", "params": [7]}', 24),
    (b'{"id": 1, "method": "mining.suggest_difficulty", "params": ["hard"]}', 20),
    (b'{"id": 1, "method": "mining.configure", "params": "x"}', 20)])
def test_bad_lines_get_an_error_and_the_connection_goes_on(pool, line, code):
    m = Miner(pool.stratum)
    try:
        m.send_line(line)
        msg = m.read()
        assert msg["error"][0] == code and msg["result"] is None
        assert m.call("mining.subscribe")["result"][2] == 4  # still served
    finally:
        m.close()


def test_a_line_too_long_or_a_flood_of_garbage_ends_only_that_connection(pool):
    honest = Miner(pool.stratum)
    long_line, garbage = Miner(pool.stratum), Miner(pool.stratum)
    try:
        honest.start()
        long_line.sock.sendall(b'{"id": 1, "method": "mining.subscribe", "params": ["' + b"a" * (1 << 20))
        assert long_line.read()["error"][0] == 20
        assert long_line.read() is None  # dropped
        sent = 0
        try:
            for _ in range(25):
                garbage.send_line(b"\x00garbage")
                sent += 1
        except OSError:
            pass  # the server already ended it
        assert sent >= 20
        while garbage.read() is not None:
            pass  # errors, then the end of the connection
        assert honest.call("mining.subscribe")["result"][2] == 4
        assert pool.call("getblockcount") == 0
    finally:
        for m in (honest, long_line, garbage):
            m.close()


def test_vardiff_moves_toward_18_shares_a_minute():
    """A miner hashing 2^32 * 0.3 difficulty a second (a difficulty-1 share every 3.3 s) and sent
    shares at difficulty 0.001: after 72 shares the difficulty becomes about 1, and then holds."""
    limits = VarDiffLimits(minimum=1e-9, maximum=1e9)
    vd = VarDiff(limits, now=0.0)
    difficulty, now, changes = 0.001, 0.0, []
    for _ in range(2000):
        now += difficulty / 0.3  # the time this miner takes for one share at this difficulty
        new = vd.record(difficulty, difficulty, network=1e6, now=now)
        if new is not None:
            changes.append(new)
            difficulty = new
    assert 0.7 < difficulty < 1.4, changes
    assert len(changes) <= 3, changes
    capped = VarDiff(limits, now=0.0)
    late = [capped.record(0.001, 0.001, network=0.002, now=t * 0.0001) for t in range(1, 100)]
    assert [d for d in late if d is not None] == [0.002]  # never above the network's difficulty


def test_the_load_benchmark_runs_200_miners_and_every_share_is_answered():
    from miner.bench import stratum_load
    result = stratum_load.run(miners=200, seconds=2.0, runs=1)
    assert result["accepted"] > 200 and result["refused"] == 0 and result["unanswered"] == 0, result
    assert result["accepted_total"] == result["server_accepted_total"] == result["accepted"], result
    assert result["blocks"] == 0  # shares only: the chain is untouched
    assert 0 < result["kib_per_miner"] < 256, result


def test_random_lines_never_hurt_the_server(pool):
    """Bounded (400 lines, fixed seed): valid requests with random parts replaced, and random
    bytes, from connections that come and go; an honest miner is answered throughout, nothing
    reaches the chain, and no traceback reaches standard error."""
    import random
    rng = random.Random(2026)
    honest = Miner(pool.stratum)
    en1, size, difficulty, job = honest.start("honest.rig")
    valid = [
        {"id": 1, "method": "mining.subscribe", "params": ["fuzz/1.0"]},
        {"id": 2, "method": "mining.authorize", "params": ["fuzz.rig", "x"]},
        {"id": 3, "method": "mining.submit", "params": ["fuzz.rig", job[0], "00000000", job[7], "00000000"]},
        {"id": 4, "method": "mining.configure", "params": [["version-rolling"], {"version-rolling.mask": "ffffffff"}]},
        {"id": 5, "method": "mining.suggest_difficulty", "params": [0.5]},
    ]
    oddities = [None, True, -1, 2**70, 1e308, "", "zz", "0" * 9, [], {}, [[]], {"a": []}, "\u0000", -0.0]
    try:
        for batch in range(8):
            m = Miner(pool.stratum)
            if batch % 2:  # half the connections get past subscribe and authorize first
                m.call("mining.subscribe")
                m.call("mining.authorize", "fuzz.rig", "x")
            for _ in range(50):
                if rng.random() < 0.2:
                    m.sock.sendall(rng.randbytes(rng.randrange(1, 200)).replace(b"\n", b" ") + b"\n")
                    continue
                msg = json.loads(json.dumps(rng.choice(valid)))
                if msg["params"] and rng.random() < 0.8:
                    msg["params"][rng.randrange(len(msg["params"]))] = rng.choice(oddities)
                elif rng.random() < 0.5:
                    msg["params"] = rng.choice(oddities)
                try:
                    m.send_line(json.dumps(msg).encode())
                except OSError:
                    break  # dropped for its garbage: the next batch opens a new connection
            m.close()
            assert honest.call("mining.subscribe")["result"][2] == 4, batch
        assert pool.call("getblockcount") == 0
    finally:
        honest.close()
    assert pool.stop() == 0
    stderr = pool.proc.stderr.read()
    assert "Traceback" not in stderr and "error" not in stderr, stderr  # every line was answered as planned


def test_a_submit_with_a_worker_that_is_not_a_string(pool):
    m = Miner(pool.stratum)
    try:
        m.start("dave.rig")
        for worker in ([], {}, None, 7):
            reply = m.call("mining.submit", worker, "1", "00000000", "00000000", "00000000")
            assert reply["error"][0] == 24, reply
        assert m.call("mining.subscribe")["result"][2] == 4
    finally:
        m.close()


def test_numbers_and_hex_that_python_would_bend_are_refused(pool):
    """int(x, 16) takes signs, spaces and underscores and bytes.fromhex skips spaces; a float of a
    400-digit integer overflows: each is a clear refusal, and the session goes on."""
    m = Miner(pool.stratum)
    try:
        en1, size, difficulty, job = m.start("erin.rig")
        ntime = job[7]
        for en2, nonce in (("00000000", "-0000001"), ("00000000", " 000001 "), ("00000000", "0000_001"),
                           ("00 00 00", "00000001"), ("+0000000", "00000001")):
            reply = m.call("mining.submit", "erin.rig", job[0], en2, ntime, nonce)
            assert reply["error"][0] == 20, (en2, nonce, reply)
        assert m.call("mining.suggest_difficulty", 10**400)["error"][0] == 20
        configured = m.call("mining.configure", ["minimum-difficulty"], {"minimum-difficulty.value": 10**400})
        assert configured["result"] == {"minimum-difficulty": False}
        assert m.call("mining.subscribe")["result"][2] == 4
    finally:
        m.close()
    assert "error" not in _stop_and_read_stderr(pool)


def test_authorizing_again_does_not_make_an_accepted_share_new(pool):
    m = Miner(pool.stratum)
    try:
        en1, size, difficulty, job = m.start("frank.rig")
        block = int(pool.call("getmininginfo")["next"]["target"], 16)
        en2, nonce, _ = find(job, en1, size, share_target(difficulty), above=block)
        share = ["frank.rig", job[0], en2.hex(), job[7], f"{nonce:08x}"]
        assert m.call("mining.submit", *share)["result"] is True
        assert m.call("mining.authorize", "frank.rig", "x")["result"] is True  # work is sent again
        m.wait_for("mining.notify")
        assert m.call("mining.submit", *share)["error"][0] == 22
    finally:
        m.close()


def _stop_and_read_stderr(node: NodeProcess) -> str:
    assert node.stop() == 0
    return node.proc.stderr.read()


def test_a_submit_with_too_few_parameters_is_refused_with_20_naming_the_count(pool):
    m = Miner(pool.stratum)
    try:
        job = m.start("gina.rig")[3]
        for params in ([], ["gina.rig"], ["gina.rig", job[0], "00000000", job[7]]):
            reply = m.call("mining.submit", *params)
            assert reply["result"] is None and reply["error"][0] == 20, (params, reply)
            assert "takes 5 parameters" in reply["error"][1] and f"not {len(params)}" in reply["error"][1], reply
        assert m.call("mining.subscribe")["result"][2] == 4  # still served
    finally:
        m.close()


def test_a_flood_of_refused_shares_is_dropped_and_an_honest_miner_goes_on(pool):
    """50 refused shares in a row (duplicate, stale, too easy), none accepted between, end that
    connection, counted and logged; a miner whose refused shares (49 stale in a row, twice) are
    broken by an accepted one keeps its connection, and is answered throughout."""
    honest, flood = Miner(pool.stratum), Miner(pool.stratum)
    try:
        en1, size, difficulty, job = honest.start("honest.rig")
        fen1, fsize, fdifficulty, fjob = flood.start("flood.rig")
        block = int(pool.call("getmininginfo")["next"]["target"], 16)
        nonce = -1
        for _ in range(2):
            for _ in range(49):
                stale = honest.call("mining.submit", "honest.rig", "ffff", "00000000", job[7], "00000000")
                assert stale["error"][0] == 21, stale
            en2, nonce, _ = find(job, en1, size, share_target(difficulty), above=block, start=nonce + 1)
            assert honest.call("mining.submit", "honest.rig", job[0], en2.hex(), job[7], f"{nonce:08x}")["result"]
        en2, fnonce, _ = find(fjob, fen1, fsize, share_target(fdifficulty), above=block)
        share = ["flood.rig", fjob[0], en2.hex(), fjob[7], f"{fnonce:08x}"]
        assert flood.call("mining.submit", *share)["result"] is True
        low_en2, low_nonce, _ = find(fjob, fen1, fsize, share_target(fdifficulty), want_below=False)
        kinds = [(share, 22), (["flood.rig", "ffff", *share[2:]], 21),
                 (["flood.rig", fjob[0], low_en2.hex(), fjob[7], f"{low_nonce:08x}"], 23)]
        for i in range(50):
            params, code = kinds[i % 3]
            assert flood.call("mining.submit", *params)["error"][0] == code, i  # answered until the 50th
            if i % 10 == 9:
                assert honest.call("mining.subscribe")["result"][2] == 4  # the honest miner is answered
        assert flood.read() is None  # then dropped
        en2, nonce, _ = find(job, en1, size, share_target(difficulty), above=block, start=nonce + 1)
        assert honest.call("mining.submit", "honest.rig", job[0], en2.hex(), job[7], f"{nonce:08x}")["result"]
        info = pool.call("getstratuminfo")
        assert info["dropped"] == {"refused shares": 1} and info["workers_connected"] == 1, info
    finally:
        honest.close()
        flood.close()
    assert "dropped: 50 refused shares in a row, none accepted" in _stop_and_read_stderr(pool)


def _between(job, en1, size, easier: float, harder: float, start: int = 0) -> tuple[bytes, int]:
    """A share that meets difficulty `easier` but not `harder` (nor the block target)."""
    en2, nonce, _ = find(job, en1, size, share_target(easier), above=share_target(harder), start=start)
    return en2, nonce


def test_after_a_raise_a_share_at_the_previous_difficulty_counts_until_the_next_job(pool):
    m = Miner(pool.stratum)
    try:
        en1, size, old, job = m.start("hana.rig")
        new = 4 * old
        assert m.call("mining.suggest_difficulty", new)["result"] is True
        assert m.wait_for("mining.set_difficulty")["params"] == [new]
        en2, first = _between(job, en1, size, old, new)
        en2, second = _between(job, en1, size, old, new, start=first + 1)
        accepted = m.call("mining.submit", "hana.rig", job[0], en2.hex(), job[7], f"{first:08x}")
        assert accepted["result"] is True, accepted  # found before the miner could know: still counts
        assert m.call("mining.authorize", "hana.rig", "x")["result"] is True  # work is sent again
        again = m.wait_for("mining.notify")["params"]
        assert again[0] == job[0]  # the same job: only the difficulty in force has changed
        refused = m.call("mining.submit", "hana.rig", job[0], en2.hex(), job[7], f"{second:08x}")
        assert refused["error"] == [23, "Low difficulty share", None], refused
        block_target = int(pool.call("getmininginfo")["next"]["target"], 16)
        en2, nonce, _ = find(job, en1, size, share_target(new), above=block_target, start=second + 1)
        assert m.call("mining.submit", "hana.rig", job[0], en2.hex(), job[7], f"{nonce:08x}")["result"] is True
    finally:
        m.close()


def test_a_minimum_difficulty_from_configure_is_announced_and_applied(pool):
    m = Miner(pool.stratum)
    try:
        en1, size, old, job = m.start("ivan.rig")
        minimum = 3 * old
        configured = m.call("mining.configure", ["minimum-difficulty"], {"minimum-difficulty.value": minimum})
        assert configured["result"] == {"minimum-difficulty": True}
        assert m.wait_for("mining.set_difficulty")["params"] == [minimum]
        assert m.call("mining.suggest_difficulty", old)["result"] is True  # below the minimum: held at it
        assert m.call("mining.authorize", "ivan.rig", "x")["result"] is True
        assert m.wait_for("mining.notify")["params"][0] == job[0]
        assert not [n for n in m.notes if n["method"] == "mining.set_difficulty"]  # nothing lower was sent
        en2, nonce = _between(job, en1, size, old, minimum)
        refused = m.call("mining.submit", "ivan.rig", job[0], en2.hex(), job[7], f"{nonce:08x}")
        assert refused["error"][0] == 23, refused
    finally:
        m.close()


def _productive(m: Miner, worker: str, block_target: int) -> None:
    """`m` starts as `worker` and has one share accepted (found here with hashlib)."""
    en1, size, difficulty, job = m.start(worker)
    en2, nonce, _ = find(job, en1, size, share_target(difficulty), above=block_target)
    assert m.call("mining.submit", worker, job[0], en2.hex(), job[7], f"{nonce:08x}")["result"] is True


def test_a_miner_that_does_not_authorize_in_time_is_dropped_and_a_full_server_says_so(tmp_path):
    """`--rpc-timeout 1`: a connection has 1 s to authorize; `--stratum-max-miners 3`: with three
    miners whose shares were accepted, a fourth is told the server is full (none of them may be
    pushed out for it), and one that comes after a miner leaves gets in. `--max-connections`
    (JSON-RPC's own slots) is 8 and counts no miner."""
    chain = make_chain(tmp_path / "chain.sqlite", hashes_per_block=1 << 18)
    node = NodeProcess(chain, "--stratum-port", "0", "--stratum-difficulty", str(SHARE_DIFFICULTY),
                       "--rpc-timeout", "1", "--stratum-max-miners", "3", "--max-connections", "8")
    miners: list[Miner] = []
    try:
        assert node.ready["stratum_max_miners"] == 3 and node.ready["max_connections"] == 8
        port = node.ready["stratum_port"]
        block = int(node.call("getmininginfo")["next"]["target"], 16)
        miners.append(Miner(port))
        _productive(miners[0], "early.rig", block)
        slow = Miner(port)
        miners.append(slow)
        began = time.monotonic()
        assert slow.call("mining.subscribe")["result"][2] == 4
        assert slow.read() is None  # dropped without an answer to wait for
        assert time.monotonic() - began >= 0.9
        assert miners[0].call("mining.subscribe")["result"][2] == 4  # an authorized miner stays
        slow.close()
        miners.remove(slow)
        for i in range(2):
            miners.append(Miner(port))
            _productive(miners[-1], f"full.rig{i}", block)
        fourth = Miner(port)
        miners.append(fourth)
        fourth.call("mining.subscribe")
        assert fourth.call("mining.authorize", "late.rig", "x")["error"] == [20, "Server full: too many miners", None]
        for m in (miners.pop(0), miners.pop()):
            m.close()
        deadline = time.monotonic() + 30
        while node.call("getstratuminfo")["workers_connected"] != 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        miners.append(Miner(port))
        miners[-1].start("next.rig")
    finally:
        for m in miners:
            m.close()
        node.stop()


def test_extranonce2_size_and_idle_timeout_options(tmp_path):
    """`--stratum-extranonce2-size 8` is what subscribe gives and submit checks; with
    `--stratum-idle-timeout 2` a miner silent that long is dropped while one that speaks every
    0.2 s stays. Shares are at difficulty 1e-8 (about 43 hashes) so finding one takes no time a
    silent miner could be dropped in."""
    from miner.primitives.compact import bits_to_target
    chain = make_chain(tmp_path / "chain.sqlite", hashes_per_block=1 << 18)
    node = NodeProcess(chain, "--stratum-port", "0", "--stratum-difficulty", "1e-8",
                       "--stratum-extranonce2-size", "8", "--stratum-idle-timeout", "2")
    silent = chatty = None
    try:
        silent, chatty = Miner(node.ready["stratum_port"]), Miner(node.ready["stratum_port"])
        en1, size, difficulty, job = silent.start("silent.rig")
        assert size == 8
        en2, nonce, _ = find(job, en1, size, share_target(difficulty), above=bits_to_target(int(job[6], 16)))
        assert len(en2) == 8
        assert silent.call("mining.submit", "silent.rig", job[0], en2.hex(), job[7], f"{nonce:08x}")["result"] is True
        assert silent.call("mining.submit", "silent.rig", job[0], "00000000", job[7], "00000000")["error"][0] == 20
        chatty.start("chatty.rig")
        for _ in range(20):  # 4 s of a line every 0.2 s: never idle for 2 s
            time.sleep(0.2)
            assert chatty.call("mining.subscribe")["result"][2] == 8
        assert silent.read() is None  # silent for over 2 s: dropped
    finally:
        for m in (silent, chatty):
            if m is not None:
                m.close()
        node.stop()


@pytest.mark.parametrize("option, value, fragment", [
    ("--stratum-extranonce2-size", "0", "must be between 1 and 16"),
    ("--stratum-extranonce2-size", "17", "must be between 1 and 16"),
    ("--stratum-extranonce2-size", "four", "not a whole number"),
    ("--stratum-idle-timeout", "0", "must be between 0.1 and 86400"),
    ("--stratum-idle-timeout", "soon", "not a number of seconds"),
    ("--stratum-shares-per-minute", "0", "must be a positive number"),
    ("--stratum-retarget-seconds", "-1", "must be between 0.1 and 86400"),
    ("--stratum-max-miners", "0", "must be between 1 and 100,000"),
    ("--max-peers", "x", "not a whole number"),  # the other faces' budgets, checked the same way
    ("--metrics-top-workers", "-1", "must be between 1 and 100,000")])
def test_bad_stratum_option_values_are_one_line_and_exit_2(option, value, fragment):
    from support.cliproc import assert_one_line_error, run
    assert_one_line_error(run("node", "--stratum-port", "0", option, value), 2, f"{option}: {fragment}")


def test_a_jobs_accepted_shares_are_given_back_when_the_job_retires(tmp_path):
    """Issue 33: the duplicate check's record of accepted shares (44,500 shares at a tiny
    difficulty: 15 MiB) was kept while the tip stayed. A server in this process, a miner over a
    real socket: after 30 accepted shares of one job, the server makes JOBS_KEPT newer jobs on
    the same tip (as new transactions would), and the session no longer holds any of them, while
    a share of a job still kept is still a duplicate."""
    import asyncio

    from miner.consensus.params import preset
    from miner.node.guard import Guard
    from miner.node.limits import GuardLimits
    from miner.node.service import NodeService
    from miner.node.stratum.config import JOBS_KEPT, StratumConfig
    from miner.node.stratum.server import StratumServer

    def remembered(server) -> int:
        (session,) = server.sessions
        return sum(len(shares) for shares in session.seen.values())

    async def scenario() -> None:
        service = NodeService(make_chain(tmp_path / "chain.sqlite", hashes_per_block=1 << 18))
        await service.open(preset("local", 0))
        guard = Guard(GuardLimits(stratum_miners=4))
        server = StratumServer(service, guard, StratumConfig(difficulty=1e-8))
        port = await server.start("127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        miner = await loop.run_in_executor(None, Miner, port)
        try:
            en1, size, difficulty, job = await loop.run_in_executor(None, miner.start, "dup.rig")
            block = service.tip.next_target
            found, nonce = [], 0
            while len(found) < 30:  # shares that are not blocks, found with hashlib
                en2, nonce, _ = find(job, en1, size, share_target(difficulty), start=nonce + 1, above=block)
                found.append((en2, nonce))
            for en2, n in found:
                reply = await loop.run_in_executor(None, miner.call, "mining.submit", "dup.rig", job[0], en2.hex(),
                                                   job[7], f"{n:08x}")
                assert reply["result"] is True, reply
            assert remembered(server) == 30
            for _ in range(JOBS_KEPT):
                await server.broadcast(*await server._new_job())
            await asyncio.sleep(0.2)  # the pushes are written by tasks of their own
            assert job[0] not in server.jobs and remembered(server) == 0
            newer = server.current.notify_params(False)
            en2, n, _ = find(newer, en1, size, share_target(difficulty), above=block)
            params = ("dup.rig", newer[0], en2.hex(), newer[7], f"{n:08x}")
            assert (await loop.run_in_executor(None, miner.call, "mining.submit", *params))["result"] is True
            duplicate = await loop.run_in_executor(None, miner.call, "mining.submit", *params)
            assert duplicate["error"] == [22, "Duplicate share", None]
        finally:
            miner.close()
            await server.close()
            await guard.close()
            await service.close()
    asyncio.run(scenario())


@pytest.mark.parametrize("line", [b'{"id": NaN, "method": "mining.subscribe", "params": []}',
                                  b'{"id": Infinity, "method": "mining.subscribe", "params": []}',
                                  b'{"id": 1e400, "method": "mining.subscribe", "params": []}'])
def test_an_id_that_is_not_json_is_never_echoed(pool, line):
    """Issue 33: Python reads NaN, Infinity (and 1e400, as infinity) though JSON has none of them,
    and the reply echoed the id back as NaN: a line no miner's JSON parser reads. Such a request
    is a parse error, answered with the id null, in strict JSON."""
    def strict(constant):
        raise AssertionError(f"{constant} in a reply")
    m = Miner(pool.stratum)
    try:
        m.send_line(line)
        while b"\n" not in m.buf:
            m.buf += m.sock.recv(65536)
        raw, m.buf = m.buf.split(b"\n", 1)
        reply = json.loads(raw, parse_constant=strict)
        assert reply["id"] is None and reply["error"][0] == 20, reply
        assert m.call("mining.subscribe")["result"][2] == 4  # still served
    finally:
        m.close()


def test_an_idle_miner_is_dropped_logged_and_counted(tmp_path):
    """Issue 33: a miner dropped for saying nothing for `--stratum-idle-timeout` was neither
    logged nor counted, where every other drop is (getstratuminfo's `dropped`, the metrics)."""
    node = NodeProcess(make_chain(tmp_path / "chain.sqlite", hashes_per_block=1 << 18), "--stratum-port", "0",
                       "--stratum-difficulty", str(SHARE_DIFFICULTY), "--stratum-idle-timeout", "0.5")
    m = Miner(node.ready["stratum_port"])
    try:
        m.start("quiet.rig")
        while m.read() is not None:  # the notifications, then the end of the connection
            pass
        assert node.call("getstratuminfo")["dropped"] == {"idle": 1}
    finally:
        m.close()
    stderr = _stop_and_read_stderr(node)
    assert "(quiet.rig) dropped: nothing sent for 0.5 s" in stderr, stderr
