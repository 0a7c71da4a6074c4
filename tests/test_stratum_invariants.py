"""What must always hold at the node's Stratum pool, checked over random sequences (a Hypothesis
state machine): the real server and chain in this process, real sockets on 127.0.0.1, two miners
written here from the protocol's conventions, and a third miner outside the pool finding blocks
that move the difficulty up and down and reorganise the chain.

The rules a sequence is made of: new tips a second or minutes after the last (the difficulty
rises or falls), reorganisations, suggested and minimum difficulties, version rolling, and shares
whose hash is chosen relative to the share target in force and the block target: blocks, plain
shares, shares below the difficulty, stale shares (and a stale block), duplicates.

The invariants, each after every step:
- every share that meets the block target is accepted and its block stored (none refused, none lost);
- no share that meets the difficulty in force is refused, and every one below it is refused with 23;
- a stale share is refused with 21 and a duplicate with 22; no refused share is counted;
- a miner is never given a share difficulty above the network difficulty of the job it mines;
- the pool's block counts split into blocks on the active chain and orphaned ones, as the chain says.

The difficulty in force is computed here as pools state the rule (the difficulty announced before
a job's notify, or any lower one announced since), not with the server's code.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import shutil
import socket
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from support.blockmaker import make_block

from miner.consensus.params import REGTEST_BITS, ChainParams
from miner.node.guard import Guard, GuardLimits
from miner.node.service import NodeService
from miner.node.stratum.config import StratumConfig
from miner.node.stratum.server import StratumServer
from miner.node.stratum.vardiff import VarDiffLimits

DIFF1 = 0xFFFF << 208
MASK = 0x1FFFE000
EASY_BITS = 0x2003FFFF  # 2^250: a block in 64 hashes at first; the difficulty moves from there


def dsha(b: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


def share_target(difficulty: float) -> int:
    """The target of a Stratum difficulty, exactly (the float as the rational it is)."""
    return min((1 << 256) - 1, int(Fraction(DIFF1) / Fraction(difficulty)))


def bits_target(nbits: str) -> int:
    bits = int(nbits, 16)
    return (bits & 0xFFFFFF) << (8 * ((bits >> 24) - 3))


class Loop:
    """An asyncio loop in a thread of its own, where the node's service and pool run."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        async def cancel_the_rest():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Miner:
    """One miner's connection, with what it was told: the difficulty announced before each job
    and every lower one since (`floor`), and each job's notify."""

    def __init__(self, port: int, name: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.name = name
        self.buf = b""
        self.ids = 0
        self.sent: float | None = None
        self.jobs: dict[str, dict] = {}  # live jobs (since the last clean notify): params and floor
        self.latest: str | None = None
        self.violations: list[str] = []  # notifies whose difficulty was above the network's
        self.version_mask = 0

    def _line(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"{self.name}: connection closed by the pool"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def _note(self, msg: dict) -> None:
        if msg["method"] == "mining.set_difficulty":
            self.sent = msg["params"][0]
            for job in self.jobs.values():
                job["floor"] = min(job["floor"], self.sent)
        elif msg["method"] == "mining.notify":
            params = msg["params"]
            if params[8]:
                self.jobs.clear()
            network = DIFF1 / bits_target(params[6])
            if self.sent is None or self.sent > network * (1 + 1e-12):
                self.violations.append(f"{self.name}: job {params[0]} at difficulty {self.sent} "
                                       f"above the network's {network}")
            self.jobs[params[0]] = {"params": params, "floor": self.sent}
            self.latest = params[0]

    def call(self, method: str, *params) -> dict:
        self.ids += 1
        rid = self.ids
        self.sock.sendall(json.dumps({"id": rid, "method": method, "params": list(params)}).encode() + b"\n")
        while True:
            msg = self._line()
            if msg.get("method"):
                self._note(msg)
            elif msg.get("id") == rid:
                return msg

    def flush(self) -> None:
        """Everything the pool sent before an answer to a request sent now has been read."""
        assert self.call("mining.extranonce.subscribe")["result"] is True

    def wait_for_prev(self, prevhash: str, within: float = 10) -> None:
        """Read until a job on `prevhash` (Stratum's word order) arrives."""
        deadline = time.monotonic() + within
        while not (self.latest and self.jobs[self.latest]["params"][1] == prevhash):
            assert time.monotonic() < deadline, f"{self.name}: no job on the new tip"
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                msg = self._line()
            finally:
                self.sock.settimeout(10)
            if msg.get("method"):
                self._note(msg)

    def close(self) -> None:
        self.sock.close()


def header(params: list, en1: str, en2: bytes, nonce: int, version: int) -> bytes:
    _, prevhash, coinb1, coinb2, branch, _, nbits, ntime, _ = params
    root = dsha(bytes.fromhex(coinb1) + bytes.fromhex(en1) + en2 + bytes.fromhex(coinb2))
    for h in branch:
        root = dsha(root + bytes.fromhex(h))
    prev = b"".join(bytes.fromhex(prevhash)[i:i + 4][::-1] for i in range(0, 32, 4))
    return (version.to_bytes(4, "little") + prev + root + int(ntime, 16).to_bytes(4, "little")
            + int(nbits, 16).to_bytes(4, "little") + nonce.to_bytes(4, "little"))


def stratum_prev(block_hash: bytes) -> str:
    return b"".join(block_hash[i:i + 4][::-1] for i in range(0, 32, 4)).hex()


class PoolMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.rng = random.Random(0)
        self.loop = Loop()
        self.tmp = tempfile.mkdtemp(prefix="stratum-sm-")
        genesis = int(time.time()) - 100_000
        params = ChainParams(name="sm", spacing=10, rule="asert", halflife=40, genesis_bits=EASY_BITS,
                             pow_limit_bits=REGTEST_BITS, genesis_time=genesis)
        self.service = NodeService(Path(self.tmp) / "chain.sqlite")
        self.loop.run(self.service.open(params))
        # Miners start above the network's difficulty (2^-26 at first): the pool must cap it.
        config = StratumConfig(difficulty=1e-6, vardiff=VarDiffLimits(minimum=1e-12, retarget_shares=3,
                                                                       retarget_seconds=3600))
        self.pool = StratumServer(self.service, Guard(GuardLimits(stratum_miners=16)), config)
        self.port = self.loop.run(self.pool.start("127.0.0.1", 0))
        self.miners: list[Miner] = []
        self.en1: dict[str, tuple[str, int]] = {}
        self.accepted = 0  # shares the miners were told were accepted
        self.refused = 0
        self.blocks: set[bytes] = set()  # block ids a miner was told were taken
        self.retired: list[tuple[Miner, dict]] = []  # jobs of replaced tips, with their miner
        self.taken: list[tuple[Miner, list]] = []  # accepted submits, to send again
        self.nonce = 0

    # ---------------------------------------------------------------- set-up and tear-down

    @initialize()
    def connect(self):
        for name in ("alice.rig", "bob.rig"):
            miner = Miner(self.port, name)
            sub = miner.call("mining.subscribe", "sm-miner/1")["result"]
            self.en1[name] = (sub[1], sub[2])
            assert miner.call("mining.authorize", name, "x")["result"] is True
            miner.flush()
            assert miner.latest is not None
            self.miners.append(miner)

    def teardown(self):
        for miner in self.miners:
            miner.close()
        try:
            self.loop.run(self.pool.close())
            self.loop.run(self.service.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---------------------------------------------------------------- the chain moves

    def _tip(self):
        return self.loop.run(self.service.on_chain(lambda c: (c.tip_hash, c.height)))

    def _deliver(self, blocks) -> None:
        for block in blocks:
            self.loop.run(self.service.submit_block(block))
        self._sync_tip()

    def _sync_tip(self) -> None:
        """Every miner has a job on the chain's tip; the jobs of replaced tips are kept as stale."""
        tip = stratum_prev(self._tip()[0])
        for miner in self.miners:
            if miner.latest and miner.jobs[miner.latest]["params"][1] != tip:
                self.retired.extend((miner, job) for job in miner.jobs.values())
                self.retired = self.retired[-8:]
                miner.wait_for_prev(tip)

    @rule(seconds=st.sampled_from([1, 2, 5, 10, 60, 240]))
    def new_tip(self, seconds):
        """Another miner's block, `seconds` after the tip: a second or two raises the
        difficulty, minutes lower it."""
        tip, _ = self._tip()
        self.nonce += 1
        block = self.loop.run(self.service.on_chain(make_block, tip, seconds, b"other %d" % self.nonce))
        self._deliver([block])

    @rule(depth=st.integers(1, 3))
    def reorg(self, depth):
        """A branch from `depth` blocks back with one block more (blocks a second apart, so it has
        more work whatever the difficulty did): the pool's newest blocks may be orphaned."""
        tip, height = self._tip()
        if height < depth:
            return
        self.nonce += 1
        parent = self.loop.run(self.service.on_chain(lambda c: c.hash_at(c.height - depth)))
        for i in range(depth + 1):  # each made on the last, once the node has stored it
            block = self.loop.run(self.service.on_chain(make_block, parent, 1, b"fork %d %d" % (self.nonce, i)))
            self.loop.run(self.service.submit_block(block))
            parent = block.hash
        assert self._tip()[0] == parent
        self._sync_tip()

    # ---------------------------------------------------------------- what miners ask

    @rule(which=st.integers(0, 1), difficulty=st.floats(1e-11, 1e-5))
    def suggest(self, which, difficulty):
        miner = self.miners[which]
        assert miner.call("mining.suggest_difficulty", difficulty)["result"] is True
        miner.flush()

    @rule(which=st.integers(0, 1), minimum=st.floats(1e-11, 1e-5))
    def minimum(self, which, minimum):
        miner = self.miners[which]
        reply = miner.call("mining.configure", ["minimum-difficulty"], {"minimum-difficulty.value": minimum})
        assert reply["result"]["minimum-difficulty"] is True
        miner.flush()

    @rule(which=st.integers(0, 1))
    def version_rolling(self, which):
        miner = self.miners[which]
        reply = miner.call("mining.configure", ["version-rolling"], {"version-rolling.mask": "ffffffff"})
        miner.version_mask = int(reply["result"]["version-rolling.mask"], 16)
        assert miner.version_mask == MASK

    # ---------------------------------------------------------------- shares

    def _find(self, miner: Miner, params: list, band: str, floor: float):
        """A submit of `params`'s job whose hash is in `band`: "block" (meets the block target),
        "share" (meets the difficulty in force, not the block target), "low" (meets neither),
        "other" (not a block); (None, None) when the band is too thin to find in a moment."""
        en1, size = self.en1[miner.name]
        block = bits_target(params[6])
        share = share_target(floor)
        width = {"block": block, "share": share - block, "low": (1 << 256) - max(share, block),
                 "other": (1 << 256) - block}[band]
        if width < 1 << 242:
            return None, None
        base = int(params[5], 16)
        for _ in range(1 << 20):
            en2 = self.rng.randbytes(size)
            nonce = self.rng.getrandbits(32)
            bits = self.rng.getrandbits(32) & miner.version_mask
            version = (base & ~miner.version_mask) | bits
            value = int.from_bytes(dsha(header(params, en1, en2, nonce, version)), "little")
            if (band == "block" and value <= block) or (band == "share" and block < value <= share) or \
                    (band == "low" and value > max(share, block)) or (band == "other" and value > block):
                submit = [miner.name, params[0], en2.hex(), params[7], f"{nonce:08x}"]
                if miner.version_mask:
                    submit.append(f"{bits:08x}")
                return submit, dsha(header(params, en1, en2, nonce, version))
        return None, None

    @rule(which=st.integers(0, 1), band=st.sampled_from(["block", "share", "share", "low"]))
    def submit(self, which, band):
        miner = self.miners[which]
        job = miner.jobs[miner.latest]
        floor = job["floor"]
        if band == "share" and share_target(floor) <= bits_target(job["params"][6]):
            band = "block"  # no hash meets the share target but not the block target here
        submit, block_hash = self._find(miner, job["params"], band, floor)
        event(f"submit {band}" + (" (none to find)" if submit is None else ""))
        if submit is None:
            return
        reply = miner.call("mining.submit", *submit)
        if band == "low":
            assert reply["error"] == [23, "Low difficulty share", None], (band, floor, reply)
            self.refused += 1
        else:
            assert reply["result"] is True and reply["error"] is None, (band, floor, reply)
            self.accepted += 1
            self.taken.append((miner, submit))
            if band == "block":
                self.blocks.add(block_hash)
                self._sync_tip()
        miner.flush()  # vardiff's answer, if any, is read before the next step

    # Rules draw the same data whatever the state (an index, not a choice among what exists):
    # blocks carry the wall clock, so the state differs from run to run, and Hypothesis can only
    # shrink a failing sequence whose draws do not depend on it.

    @rule(index=st.integers(0, 63))
    def duplicate(self, index):
        if not self.taken:
            return
        miner, submit = self.taken[index % len(self.taken)]
        reply = miner.call("mining.submit", *submit)
        if submit[1] in miner.jobs:  # still a job of the tip: the same share again
            assert reply["error"] is not None and reply["error"][0] == 22, reply
        else:
            assert reply["error"] is not None and reply["error"][0] in (21, 22), reply
        self.refused += 1

    @rule(index=st.integers(0, 7), block=st.booleans())
    def stale(self, index, block):
        """A share of a replaced tip's job: refused as stale, unless it is a block, which the
        chain stores on a side branch (a block is never thrown away)."""
        if not self.retired:
            return
        miner, job = self.retired[index % len(self.retired)]
        submit, block_hash = self._find(miner, job["params"], "block" if block else "other", 1e-12)
        if submit is None:
            return
        reply = miner.call("mining.submit", *submit)
        if block:
            assert reply["result"] is True, reply
            self.accepted += 1
            self.blocks.add(block_hash)
            self._sync_tip()  # a block on a side branch with more work becomes the tip
        else:
            assert reply["error"] is not None and reply["error"][0] == 21, reply
            self.refused += 1
        miner.flush()

    @rule(which=st.integers(0, 1))
    def late_block(self, which):
        """A block found a moment late, on the job of the tip just replaced (whose difficulty may
        be below what the miner is given now): stored, never refused."""
        miner = self.miners[which]
        mine = [job for m, job in self.retired if m is miner]
        if not mine:
            return
        submit, block_hash = self._find(miner, mine[-1]["params"], "block", 1e-12)
        if submit is None:
            return
        reply = miner.call("mining.submit", *submit)
        assert reply["result"] is True, reply
        self.accepted += 1
        self.blocks.add(block_hash)
        self._sync_tip()
        miner.flush()

    # ---------------------------------------------------------------- invariants

    @invariant()
    def no_difficulty_above_the_network(self):
        for miner in self.miners:
            assert miner.violations == []

    @invariant()
    def every_acknowledged_block_is_stored(self):
        stored = self.loop.run(self.service.on_chain(lambda c: {h for h in self.blocks if c.node(h) is not None}))
        assert stored == self.blocks

    @invariant()
    def the_pool_counts_what_it_answered(self):
        stats = self.pool.stats
        assert stats.accepted == self.accepted
        assert sum(stats.refused.values()) == self.refused
        assert stats.blocks == len(self.blocks)

    @invariant()
    def orphaned_blocks_are_the_ones_off_the_active_chain(self):
        self.loop.run(self.pool.recount_blocks())
        active = self.loop.run(self.service.on_chain(lambda c: {h for h in self.blocks if c.is_active(h)}))
        report = self.pool.report()
        assert report["blocks_active"] == len(active)
        assert report["blocks_orphaned"] == len(self.blocks) - len(active)


# No shrinking: blocks carry the wall clock, so a replayed sequence meets other hashes and may
# fail a step sooner, which Hypothesis's shrinker takes for a flaky strategy. The sequence that
# failed is printed whole instead.
PoolMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                         phases=(Phase.explicit, Phase.reuse, Phase.generate),
                                         suppress_health_check=list(HealthCheck))
test_the_pool_never_refuses_a_block_nor_an_honest_share = PoolMachine.TestCase
