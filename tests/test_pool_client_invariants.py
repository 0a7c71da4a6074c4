"""What must always hold of the mining client's job handling at a pool, over random sequences (a
Hypothesis state machine): the real client (`StratumSource`) on a real socket to a pool scripted
here, which sends new jobs (clean or not, on a new block or the same one) and difficulties,
answers shares as ckpool and others do (accepted, 23, `reject-reason`), and hangs up at random.
The hashing is done here with hashlib on the job the client announced, as a kernel would.

The invariants:
- the job at work is the pool's latest, with the pool's share target, or its block target while a
  block-only hit may still be sent (at most one a tip, never again to a pool that refused one);
- a refused share, a block among them, never ends or changes the job at work;
- a share of a job that a clean notify voided, or of an earlier block, is dropped unsent; every
  other share is sent, and answered with the pool's own words;
- after the pool hangs up, the client has no work until it is connected again, and then the
  pool's current job.
"""

from __future__ import annotations

import queue
import time
from fractions import Fraction

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from support.jobs import job_params
from support.scripted_pool import ScriptedPool
from support.stratum_miner import dsha

from miner.mining.sources.pool_url import PoolUrl
from miner.mining.sources.stratum import StratumSource
from miner.mining.work import Solution

DIFF1 = 0xFFFF << 208
DIFFICULTIES = [2.0 ** -24, 2.0 ** -22, 2.0 ** -20]  # share targets about 2^248, 2^246, 2^244
NBITS = {"1f400000": 1 << 246, "1f100000": 1 << 244, "2003ffff": (0x3FFFF << 232)}  # block targets
ANSWERS = {"accept": True, "low": [23, "Low difficulty share", None],
           "ckpool": {"result": False, "error": None, "reject-reason": "Above target"}}
SAID = {"low": "Low difficulty share (23)", "ckpool": "Above target"}


def share_target(difficulty: float) -> int:
    return int(Fraction(DIFF1) / Fraction(difficulty))


class ClientMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.pool = ScriptedPool("aabbccdd", 4)
        self.jobs: queue.Queue = queue.Queue()
        # healthy=0: every session with work counts as one, so hanging up often costs no back-off
        self.events: queue.Queue = queue.Queue()
        self.source = StratumSource([PoolUrl("127.0.0.1", self.pool.port, "zoe", "x")], on_event=self.events.put,
                                    stall_factor=0, healthy=0)
        self.counter = 0
        self.tip = 0  # the pool's block: a new one is a new previous hash
        self.difficulty = DIFFICULTIES[1]
        self.nbits = "2003ffff"  # a block target above the share target: block-only hits exist
        self.answer = "accept"
        self.live: list[str] = []  # the pool's jobs since its last clean notify on this connection
        self.current = None  # the job the client announced last (None: no work)
        self.probed: set[int] = set()  # tips a block-only hit was sent for, on this connection
        self.blocks_first: bool | None = None
        self.nonce = 0
        self.previous = None  # the job at work when the last hit was handed in

    # ---------------------------------------------------------------- the pool

    def _params(self, clean: bool) -> list:
        self.counter += 1
        params = job_params(f"j{self.counter}", clean=clean)
        params[1] = dsha(b"tip %d" % self.tip).hex()
        params[6] = self.nbits
        return params

    def _expect_job(self, job_id: str | None, within: float = 10) -> None:
        """Read the client's announcements until the job with this pool id (None: no work)."""
        deadline = time.monotonic() + within
        while True:
            current = self.current
            if (job_id is None and current is None) or (
                    current is not None and job_id is not None and current.job_id.endswith(f":{job_id}")):
                return
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the client never announced {job_id}: {current and current.job_id}"
            try:
                self.current = self.jobs.get(timeout=remaining)
            except queue.Empty:
                pass

    def _drain(self) -> None:
        while True:
            try:
                self.current = self.jobs.get_nowait()
            except queue.Empty:
                return

    @initialize()
    def connect(self):
        params = self._params(True)
        self.live = [params[0]]
        self.pool.on_connect = [{"method": "mining.set_difficulty", "params": [self.difficulty]},
                                {"method": "mining.notify", "params": params}]
        self.source.open()
        self.source.start(self.jobs.put)
        self._expect_job(params[0])

    def teardown(self):
        self.source.stop()
        self.pool.close()

    @rule(clean=st.booleans(), new_block=st.booleans(), nbits=st.sampled_from(sorted(NBITS)))
    def notify(self, clean, new_block, nbits):
        if new_block:
            self.tip += 1
            self.nbits = nbits
        params = self._params(clean or new_block)
        self.live = [params[0]] if clean or new_block else [*self.live, params[0]]
        self.pool.on_connect[1] = {"method": "mining.notify", "params": params}
        self.pool.send("mining.notify", params)
        self._expect_job(params[0])

    @rule(difficulty=st.sampled_from(DIFFICULTIES))
    def set_difficulty(self, difficulty):
        self.difficulty = difficulty
        self.pool.on_connect[0] = {"method": "mining.set_difficulty", "params": [difficulty]}
        self.pool.send("mining.set_difficulty", [difficulty])
        while True:  # the client's word that it took it (then the job at work is retargeted)
            event = self.events.get(timeout=10)
            if event.get("status") == "difficulty" and event["difficulty"] == difficulty:
                break
        self._drain()

    @rule(answer=st.sampled_from(sorted(ANSWERS)))
    def answers(self, answer):
        self.answer = answer
        self.pool.submit_result = ANSWERS[answer]

    @rule()
    def hang_up(self):
        """The pool drops us: no work until the client is back, then the pool's current job."""
        connections = self.pool.connections
        job = self.pool.on_connect[1]["params"]
        self.pool.drop()
        self._expect_job(None)
        self.pool.wait(lambda: self.pool.connections > connections, timeout=20)
        self._expect_job(job[0])
        self.live, self.probed, self.blocks_first = [job[0]], set(), None

    # ---------------------------------------------------------------- hashing

    def _hit(self, job, band: str):
        """(extranonce, nonce, value) of a header of `job` at or below its target (a kernel's hit)
        in `band`: "share" meets the share target, "block-only" the block target but not the
        share target; None if there is none."""
        share, block = share_target(self.difficulty), NBITS[f"{job.bits:08x}"]
        if band == "block-only" and min(block, job.target) - share < 1 << 240:  # none, or too few to find
            return None
        prefix = job.header(7).serialize()[:76]
        for _ in range(1 << 16):
            self.nonce += 1
            value = int.from_bytes(dsha(prefix + self.nonce.to_bytes(4, "little")), "little")
            if value <= job.target and ((band == "share" and value <= share) or
                                        (band == "block-only" and share < value <= block)):
                return 7, self.nonce, value
        return None

    @rule(band=st.sampled_from(["share", "block-only"]), old=st.booleans())
    def hit(self, band, old):
        """A kernel's hit on the job at work (or, `old`, on the job object a unit still in flight
        holds: the one before, with the target it had), handed in."""
        job = self.previous if old and self.previous is not None else self.current
        self.previous = self.current
        found = self._hit(job, band)
        if found is not None:
            self._hand_in(job, found, band)

    @rule(bands=st.lists(st.sampled_from(["share", "block-only"]), min_size=2, max_size=4))
    def unit(self, bands):
        """Several hits of one unit, all found at the target the unit was given (regtest-like
        targets make a unit return many): a block-only one among them is sent once a tip."""
        job = self.current
        for band in bands:
            found = self._hit(job, band)
            if found is not None:
                self._hand_in(job, found, band)

    @rule(clean=st.booleans())
    def share_across_a_notify(self, clean):
        """A share found on the job at work arrives after a new job on the same block: dropped
        unsent if that notify said clean_jobs (the pool voided every earlier job), sent if not."""
        job = self.current
        self.notify(clean=clean, new_block=False, nbits=self.nbits)
        found = self._hit(job, "share")
        if found is not None:
            self._hand_in(job, found, "share")

    def _hand_in(self, job, found, band: str) -> None:
        before = len(self.pool.submits)
        submitted = self.source.submit(Solution(job, found[0], found[1]))
        connection, _, stratum_id = job.job_id.partition(":")
        if connection != self.current.job_id.partition(":")[0]:  # a job of a connection since lost
            assert submitted is not None and not submitted.accepted and submitted.verdict.startswith("stale")
            assert len(self.pool.submits) == before
            return
        voided = stratum_id not in self.live or job.prev_hash != self.current.prev_hash
        block_only = band == "block-only"
        allowed = not block_only or (self.tip not in self.probed and self.blocks_first is not False)
        if voided or not allowed:
            assert submitted is None, (band, voided, submitted)
            time.sleep(0.05)
            assert len(self.pool.submits) == before  # nothing was sent
            return
        assert submitted is not None and len(self.pool.submits) == before + 1
        assert self.pool.submits[-1][1] == stratum_id
        assert submitted.accepted == (self.answer == "accept")
        assert submitted.verdict == ("accepted" if self.answer == "accept" else SAID[self.answer])
        if block_only:
            self.probed.add(self.tip)
            self.blocks_first = self.answer == "accept"
            self._drain()  # the job at work goes back to the share target

    # ---------------------------------------------------------------- invariants

    def _kernel_target(self) -> int:
        share, block = share_target(self.difficulty), NBITS[self.nbits]
        if block > share and self.tip not in self.probed and self.blocks_first is not False:
            return block
        return share

    @invariant()
    def the_job_at_work_is_the_pools_latest_with_the_right_target(self):
        self._drain()
        assert self.current is not None  # refusals never take the work away
        assert self.current.job_id.endswith(f":{self.pool.on_connect[1]['params'][0]}")
        assert self.current.target == self._kernel_target()


# No shrinking: each replay runs real sockets and threads, and a failing sequence is printed whole.
ClientMachine.TestCase.settings = settings(max_examples=20, stateful_step_count=25, deadline=None,
                                           phases=(Phase.explicit, Phase.reuse, Phase.generate),
                                           suppress_health_check=list(HealthCheck))
test_the_client_keeps_its_work_and_sends_what_the_pool_counts = ClientMachine.TestCase


def test_a_block_only_hit_on_the_job_before_sets_the_job_at_work_back_to_the_share_target():
    """Found by the machine above (2026-12-08): a block-only hit handed in from a unit still on the
    job before a notify that did not void it was sent, and the tip counted as probed, but the job
    at work (the newer one, same tip) kept the block target: the kernels went on returning
    block-only hits the client could only drop. Replayed here as the machine ran it."""
    state = ClientMachine()
    try:
        state.connect()
        state.hit(band="share", old=False)  # the job at work becomes the one a unit holds
        state.share_across_a_notify(clean=False)  # a newer job of the same tip, the older still live
        state.the_job_at_work_is_the_pools_latest_with_the_right_target()
        assert state.current.target == NBITS[state.nbits]  # block-only hits may still be sent
        state.hit(band="block-only", old=True)  # from the unit on the older job
        assert state.probed == {state.tip}
        state.the_job_at_work_is_the_pools_latest_with_the_right_target()
    finally:
        state.teardown()
