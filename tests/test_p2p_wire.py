"""Bitcoin's peer-to-peer messages as `miner.primitives.p2p` writes and reads them, checked
against an independent implementation (python-bitcoinlib's `bitcoin.messages`, with Core's
regtest magic) in both directions, and the strict parser's refusals; the block locator and the
headers-only tree; the regtest-core preset against Core's published genesis."""

from __future__ import annotations

import hashlib
import io
import random
import struct

import bitcoin
import bitcoin.core
import bitcoin.messages as bm
import pytest
from bitcoin.core.serialize import VectorSerializer

from miner.chain.locator import locator_heights
from miner.consensus.params import PRESETS, ChainParams, preset
from miner.node.p2p.headers import Anchor, HeadersFull, HeaderTree
from miner.primitives import p2p
from miner.primitives.block import Block
from miner.primitives.compact import bits_to_target, work
from miner.primitives.hashes import display_hex
from miner.primitives.header import BlockHeader
from miner.primitives.serialize import DecodeError

REGTEST_MAGIC = bytes.fromhex("fabfb5da")  # Core's regtest pchMessageStart


@pytest.fixture
def regtest_lib():
    """python-bitcoinlib speaking regtest (its global parameters put back afterwards)."""
    before = bitcoin.core.coreparams.NAME
    bitcoin.SelectParams("regtest")
    try:
        yield
    finally:
        bitcoin.SelectParams(before)


def _header(prev: bytes, i: int, bits: int = 0x207FFFFF) -> BlockHeader:
    h = BlockHeader(0x20000000, prev, hashlib.sha256(b"%d" % i).digest(), 1_700_000_000 + i, bits, 0)
    target = bits_to_target(bits)
    nonce = 0
    while not h.with_nonce(nonce).meets_target(target):
        nonce += 1
    return h.with_nonce(nonce)


def _run(n: int, prev: bytes = bytes(32)) -> list[BlockHeader]:
    out = []
    for i in range(n):
        h = _header(prev, i + 1000 * len(prev.lstrip(b"\0")))
        out.append(h)
        prev = h.hash()
    return out


# --------------------------------------------------------------------------- frames

def test_our_messages_parse_with_python_bitcoinlib(regtest_lib):
    version = p2p.Version(p2p.PROTOCOL_VERSION, p2p.OUR_SERVICES, 1_700_000_123, 0xDEADBEEF12345678,
                          "/pow-miner:0.1.0/", 321, relay=False, port=18444)
    theirs = bm.MsgSerializable.from_bytes(p2p.frame(REGTEST_MAGIC, "version", version.serialize()))
    assert isinstance(theirs, bm.msg_version)
    assert (theirs.nVersion, theirs.nServices, theirs.nTime, theirs.nNonce, theirs.strSubVer,
            theirs.nStartingHeight, theirs.fRelay) == (70016, 9, 1_700_000_123, 0xDEADBEEF12345678,
                                                       b"/pow-miner:0.1.0/", 321, 0)
    assert theirs.addrFrom.port == 18444

    # python-bitcoinlib's msg_headers leaves out the transaction count Core writes after each
    # header (Core sends its headers as blocks with no transactions), so the payload is read
    # as what Core means by it: a vector of CBlock.
    headers = _run(3)
    got = VectorSerializer.stream_deserialize(bitcoin.core.CBlock, io.BytesIO(p2p.headers_payload(headers)))
    assert [h.GetHash() for h in got] == [h.hash() for h in headers] and all(not b.vtx for b in got)

    ask = p2p.GetHeaders((headers[2].hash(), headers[0].hash()), headers[1].hash())
    got = bm.MsgSerializable.from_bytes(p2p.frame(REGTEST_MAGIC, "getheaders", ask.serialize()))
    assert list(got.locator.vHave) == [headers[2].hash(), headers[0].hash()]
    assert got.hashstop == headers[1].hash()

    inv = [p2p.Inventory(p2p.MSG_WITNESS_BLOCK, headers[0].hash()), p2p.Inventory(p2p.MSG_BLOCK, bytes(32))]
    got = bm.MsgSerializable.from_bytes(p2p.frame(REGTEST_MAGIC, "getdata", p2p.inv_payload(inv)))
    assert [(i.type, i.hash) for i in got.inv] == [(p2p.MSG_WITNESS_BLOCK, headers[0].hash()), (2, bytes(32))]

    got = bm.MsgSerializable.from_bytes(p2p.frame(REGTEST_MAGIC, "ping", p2p.ping_payload(77)))
    assert isinstance(got, bm.msg_ping) and got.nonce == 77


def test_their_messages_parse_with_ours(regtest_lib):
    v = bm.msg_version()
    v.nVersion, v.nServices, v.nStartingHeight, v.strSubVer, v.nNonce = 70016, 1033, 99, b"/Satoshi:29.0.0/", 5
    raw = v.to_bytes()
    assert raw[:4] == REGTEST_MAGIC
    head = p2p.parse_frame_header(raw[:24], REGTEST_MAGIC)
    assert head.command == "version" and head.length == len(raw) - 24
    assert head.checksum == p2p.checksum(raw[24:])
    ours = p2p.Version.parse(raw[24:])
    assert (ours.version, ours.services, ours.start_height, ours.user_agent, ours.nonce) == \
        (70016, 1033, 99, "/Satoshi:29.0.0/", 5)

    headers = _run(4)
    out = io.BytesIO()
    VectorSerializer.stream_serialize(bitcoin.core.CBlock, [
        bitcoin.core.CBlock(h.version, h.prev_hash, h.merkle_root, h.time, h.bits, h.nonce) for h in headers], out)
    assert p2p.parse_headers(out.getvalue()) == headers

    gh = bm.msg_getheaders()
    gh.locator.vHave = [headers[3].hash(), headers[0].hash()]
    parsed = p2p.GetHeaders.parse(gh.to_bytes()[24:])
    assert parsed.locator == (headers[3].hash(), headers[0].hash()) and parsed.stop == bytes(32)

    inv = bm.msg_inv()
    inv.inv = [bm.CInv() for _ in range(2)]
    inv.inv[0].type, inv.inv[0].hash = 2, headers[1].hash()
    inv.inv[1].type, inv.inv[1].hash = 1, headers[2].hash()
    assert p2p.parse_inv(inv.to_bytes()[24:]) == [p2p.Inventory(2, headers[1].hash()),
                                                 p2p.Inventory(1, headers[2].hash())]


def test_a_block_message_round_trips_with_python_bitcoinlib(regtest_lib):
    # Bitcoin's genesis block (Core's regtest genesis differs only in time, nonce and bits).
    params = preset("regtest-core", 0)
    genesis = Block(params.genesis_header(), tuple())
    raw = genesis.header.serialize() + b"\x01" + params.genesis_txs()[0]
    theirs = bitcoin.core.CBlock.deserialize(raw)
    assert theirs.GetHash() == genesis.header.hash()
    assert Block.parse(theirs.serialize()).serialize() == raw


@pytest.mark.parametrize("raw, why", [
    (b"\xf9\xbe\xb4\xd9" + b"version".ljust(12, b"\0") + bytes(8), "magic"),  # mainnet's magic
    (REGTEST_MAGIC + b"ver\0sion".ljust(12, b"\0") + bytes(8), "command"),  # NUL inside the name
    (REGTEST_MAGIC + b"\x01bad".ljust(12, b"\0") + bytes(8), "command"),  # not printable
    (REGTEST_MAGIC + bytes(12) + bytes(8), "command"),  # empty
    (REGTEST_MAGIC + b"block".ljust(12, b"\0") + struct.pack("<I", 33_000_000) + bytes(4), "limit"),
])
def test_frame_headers_that_end_a_connection(raw, why):
    with pytest.raises(DecodeError, match=why):
        p2p.parse_frame_header(raw, REGTEST_MAGIC)


def test_the_largest_message_is_allowed_and_one_byte_more_is_not():
    head = REGTEST_MAGIC + b"block".ljust(12, b"\0")
    assert p2p.parse_frame_header(head + struct.pack("<I", p2p.MAX_MESSAGE) + bytes(4), REGTEST_MAGIC).length \
        == 4_000_000
    with pytest.raises(DecodeError):
        p2p.parse_frame_header(head + struct.pack("<I", p2p.MAX_MESSAGE + 1) + bytes(4), REGTEST_MAGIC)


def test_payloads_are_parsed_strictly():
    headers = _run(2)
    good = p2p.headers_payload(headers)
    with pytest.raises(DecodeError):
        p2p.parse_headers(good + b"\0")  # trailing byte
    with pytest.raises(DecodeError):
        p2p.parse_headers(good[:-1])  # cut short
    with pytest.raises(DecodeError, match="non-zero transaction count"):
        p2p.parse_headers(b"\x01" + headers[0].serialize() + b"\x01")
    over = b"\xfd" + struct.pack("<H", 2001) + (headers[0].serialize() + b"\0") * 2001
    with pytest.raises(DecodeError, match="over 2000"):
        p2p.parse_headers(over)
    assert len(p2p.parse_headers(b"\xfd" + struct.pack("<H", 2000) + (headers[0].serialize() + b"\0") * 2000)) == 2000
    with pytest.raises(DecodeError, match="over 50000"):
        p2p.parse_inv(b"\xfd" + struct.pack("<H", 50_001) + bytes(36 * 50_001))
    with pytest.raises(DecodeError, match="larger than the data"):
        p2p.parse_inv(b"\xfd" + struct.pack("<H", 40_000) + bytes(36))  # a count the bytes cannot hold
    with pytest.raises(DecodeError, match="over 101"):
        p2p.GetHeaders.parse(struct.pack("<I", 70016) + b"\x66" + bytes(32 * 102 + 32))
    with pytest.raises(DecodeError):
        p2p.parse_ping(bytes(7))
    with pytest.raises(DecodeError):
        p2p.Version.parse(bytes(50))
    with pytest.raises(DecodeError, match="user agent"):
        p2p.Version.parse(p2p.Version(70016, 0, 0, 0, "x" * 257, 0).serialize())


def test_random_bytes_never_escape_the_parsers_as_anything_but_decode_errors():
    rng = random.Random(4)
    version = p2p.Version(70016, 9, 1, 2, "/x/", 3).serialize()
    samples = [p2p.headers_payload(_run(2)), version, p2p.GetHeaders((bytes(32),)).serialize(),
               p2p.inv_payload([p2p.Inventory(2, bytes(32))])]
    parsers = [p2p.parse_headers, p2p.Version.parse, p2p.GetHeaders.parse, p2p.parse_inv, p2p.parse_ping,
               p2p.SendCmpct.parse, p2p.parse_feefilter, Block.parse]
    for _ in range(3000):
        base = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(3)
            if op == 0 and base:
                base[rng.randrange(len(base))] = rng.randrange(256)
            elif op == 1 and base:
                del base[rng.randrange(len(base)):]
            else:
                base += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        for parse in parsers:
            try:
                parse(bytes(base))
            except DecodeError:
                pass


# --------------------------------------------------------------------------- locator and held headers

def test_locator_heights_follow_cores_shape():
    # Core's CChain::GetLocator: ten single steps, then doubling, genesis last.
    assert locator_heights(0) == [0]
    assert locator_heights(5) == [5, 4, 3, 2, 1, 0]
    assert locator_heights(100) == [100, 99, 98, 97, 96, 95, 94, 93, 92, 91, 89, 85, 77, 61, 29, 0]
    assert len(locator_heights(10**7)) < 40


def test_held_headers_track_the_most_work_branch_and_the_path_to_fetch():
    tree = HeaderTree()
    genesis_work = work(bits_to_target(0x207FFFFF))
    root = b"\x11" * 32
    main = _run(5, root)
    tree.add(main, [h.hash() for h in main], Anchor(0, genesis_work))
    assert tree.best().hash == main[-1].hash() and tree.best().height == 5
    assert [e.hash for e in tree.path_to(tree.best())] == [h.hash() for h in main]
    fork = _run(6, main[1].hash())
    tree.add(fork, [h.hash() for h in fork], None)
    assert tree.best().hash == fork[-1].hash() and tree.best().height == 8
    assert [e.hash for e in tree.path_to(tree.best())] == [h.hash() for h in main[:2] + fork]
    tree.mark_invalid(fork[0].hash())  # everything on the fork falls back to the main branch
    assert tree.best().hash == main[-1].hash()
    assert all(tree.entries[h.hash()].invalid for h in fork)
    more = _run(2, fork[-1].hash())  # built later on the invalid branch: invalid at once
    tree.add(more, [h.hash() for h in more], None)
    assert all(tree.entries[h.hash()].invalid for h in more) and tree.best().hash == main[-1].hash()
    for h in main:
        tree.stored(h.hash())
    assert main[-1].hash() not in tree and len(tree) == 8
    rows = tree.tips()
    assert [(e.hash, root_hash, held) for e, root_hash, held in rows] == [(more[-1].hash(), main[1].hash(), 8)]
    small = HeaderTree(limit=3)
    with pytest.raises(HeadersFull):
        small.add(main, [h.hash() for h in main], Anchor(0, genesis_work))
    with pytest.raises(KeyError):  # a run on a parent neither stored nor held
        HeaderTree().add(fork, [h.hash() for h in fork], None)


def test_a_full_tree_drops_the_branches_that_cannot_beat_our_tip_first():
    genesis_work = work(bits_to_target(0x207FFFFF))
    one = work(bits_to_target(0x207FFFFF))
    tree = HeaderTree(limit=6)
    weak = _run(4, b"\x22" * 32)  # a branch of 4: chainwork genesis + 4 blocks
    tree.add(weak, [h.hash() for h in weak], Anchor(0, genesis_work))
    strong = _run(4, b"\x33" * 32)
    # our tip has 5 blocks of work: the weak branch cannot beat it, so it makes room
    new = tree.add(strong, [h.hash() for h in strong], Anchor(2, genesis_work + 2 * one),
                   tip_work=genesis_work + 5 * one)
    assert len(new) == 4 and all(h.hash() not in tree for h in weak)
    assert tree.best().hash == strong[-1].hash()
    stronger = _run(3, strong[-1].hash())
    with pytest.raises(HeadersFull):  # nothing left that cannot beat the tip
        tree.add(stronger, [h.hash() for h in stronger], None, tip_work=genesis_work + 5 * one)


def test_an_empty_locator_asks_for_the_stop_header_alone(tmp_path):
    from support.blockmaker import grow

    from miner.chain.chain import Chain
    from miner.chain.locator import headers_after
    with Chain.create(tmp_path / "c.sqlite", preset("regtest-core", 0)) as chain:
        made = grow(chain, chain.tip_hash, 5, 1, b"loc")
        assert headers_after(chain, (), made[2].hash, 2000) == [made[2].header]
        assert headers_after(chain, (), b"\x44" * 32, 2000) == []
        assert [h.hash() for h in headers_after(chain, (made[1].hash,), bytes(32), 2000)] == \
            [m.hash for m in made[2:]]
        assert [h.hash() for h in headers_after(chain, (made[1].hash,), made[3].hash, 2000)] == \
            [m.hash for m in made[2:4]]


# --------------------------------------------------------------------------- chains

def test_regtest_core_is_cores_regtest_chain():
    params = preset("regtest-core", 123)  # its own genesis time, whatever is asked
    genesis = params.genesis_header()
    # Core's regtest genesis (chainparams.cpp): hash and merkle root as published.
    assert display_hex(genesis.hash()) == "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
    assert display_hex(genesis.merkle_root) == "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
    assert params.magic_bytes(genesis.hash()) == REGTEST_MAGIC
    rule = params.retarget_rule()
    assert rule.next_bits(5, [0] * 5, [0x207FFFFF] * 5) == 0x207FFFFF  # no retargeting


def test_other_presets_derive_distinct_magic_and_keep_their_stored_form():
    a, b = preset("local", 1), preset("local", 2)
    ma, mb = a.magic_bytes(a.genesis_header().hash()), b.magic_bytes(b.genesis_header().hash())
    assert len(ma) == 4 and ma != mb and REGTEST_MAGIC not in (ma, mb)
    # Fields added for fixed genesis blocks stay out of the stored JSON at their defaults, so
    # genesis (which commits to that JSON's digest) of every earlier chain file still matches.
    for name in PRESETS:
        if name != "regtest-core":
            assert "magic" not in preset(name, 1).to_json() and "genesis_nonce" not in preset(name, 1).to_json()
    stored = ('{"genesis_bits": 545259519, "genesis_time": 1700000000, "halflife": 3600, "max_future": 7200, '
              '"message": "", "name": "regtest", "off_by_one": true, "pow_limit_bits": 545259519, '
              '"rule": "asert", "spacing": 1, "window": 2016}')
    assert ChainParams.from_json(stored).to_json() == stored
    with pytest.raises(Exception, match="hex"):
        ChainParams.from_json(stored[:-1] + ', "magic": "zz"}')


def test_read_exactly_what_the_frame_says():
    payload = p2p.ping_payload(9)
    raw = p2p.frame(REGTEST_MAGIC, "ping", payload)
    f = io.BytesIO(raw)
    head = p2p.parse_frame_header(f.read(24), REGTEST_MAGIC)
    assert p2p.parse_ping(f.read(head.length)) == 9 and head.checksum == hashlib.sha256(
        hashlib.sha256(payload).digest()).digest()[:4]


def test_ancestors_by_skip_pointer_match_a_walk_and_stop_where_the_held_part_ends():
    """The skip list answers `ancestor(entry, h)` as a plain walk down the parents would, for
    every height, on a branch and a fork off it; below the held part (blocks stored since) the
    answer is None, and `first_held` finds where the held part starts."""
    genesis_work = work(bits_to_target(0x207FFFFF))
    tree = HeaderTree()
    main = _run(300, b"\x55" * 32)
    tree.add(main, [h.hash() for h in main], Anchor(0, genesis_work))
    fork = _run(40, main[199].hash())
    tree.add(fork, [h.hash() for h in fork], None)
    rng = random.Random(7)
    for tip in (tree.entries[main[-1].hash()], tree.entries[fork[-1].hash()]):
        path = {e.height: e for e in tree.path_to(tip)}
        for height in list(range(0, tip.height + 3)) + [rng.randrange(1, tip.height) for _ in range(50)]:
            assert tree.ancestor(tip, height) is path.get(height), height
    for h in main[:120]:  # stored, parents first
        tree.stored(h.hash())
    tip = tree.entries[fork[-1].hash()]
    assert tree.ancestor(tip, 120) is None and tree.ancestor(tip, 121).hash == main[120].hash()
    assert tree.first_held(tip).height == 121 and tree.first_held(tip, hint=3).height == 121
    assert [e.height for e in tree.run(tip, 100, 125)] == [121, 122, 123, 124, 125]


def test_a_full_tree_evicts_the_least_work_leaves_but_never_what_is_protected():
    genesis_work = work(bits_to_target(0x207FFFFF))
    tree = HeaderTree(limit=44)
    long = _run(30, b"\x66" * 32)
    tree.add(long, [h.hash() for h in long], Anchor(0, genesis_work))
    short = _run(10, b"\x77" * 32)
    tree.add(short, [h.hash() for h in short], Anchor(0, genesis_work))
    new = _run(12, b"\x88" * 32)
    # a run may push out only branches with less work than itself, from their leaves down
    tree.add(new, [h.hash() for h in new], Anchor(0, genesis_work))
    assert all(h.hash() in tree for h in long) and [h.hash() in tree for h in short] == [True] * 2 + [False] * 8
    weak = _run(20, b"\xaa" * 32)
    with pytest.raises(HeadersFull):  # 20 headers: more work than the short branch, not enough room
        tree.add(weak, [h.hash() for h in weak], Anchor(0, genesis_work))
    searches = []
    tree.evict = lambda *a, **k: searches.append(a) or 0  # a pass over the whole tree each
    with pytest.raises(HeadersFull):  # nothing left since: refused without searching again
        tree.add(weak[:15], [h.hash() for h in weak[:15]], Anchor(0, genesis_work))
    assert searches == []
    del tree.evict
    # a run from a peer that delivers blocks makes room from the least-work leaves up, past
    # branches with more work, but never through a protected branch
    more = _run(20, b"\x99" * 32)
    with pytest.raises(HeadersFull):
        tree.add(more, [h.hash() for h in more], Anchor(0, genesis_work), any_work=True,
                 protect=[long[-1].hash(), new[-1].hash()])
    tree.add(more, [h.hash() for h in more], Anchor(0, genesis_work), any_work=True, protect=[new[-1].hash()])
    assert all(h.hash() in tree for h in more + new) and len(tree) <= 44
    assert long[0].hash() in tree and long[-1].hash() not in tree  # trimmed from its leaf down
