"""Two nodes in network namespaces the test makes itself, joined by a veth link (private
addresses that exist only between the two namespaces), over a degraded link: `tc netem` delay
and loss where the kernel has netem, else a `tbf` rate limit (this kernel family ships no
netem). A sync across the link, then a partition (the link taken down), both sides mining
their own branch, and the link back: both settle on the most-work branch and keep the other
as a side branch. Needs root and `ip`; skipped otherwise, with the reason. The loopback
version of the same story (test_p2p_nodes.py) always runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from support.blockmaker import grow
from support.nodeproc import NodeProcess

from miner.chain.chain import Chain
from miner.consensus.params import preset

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
A_ADDR, B_ADDR = "10.231.7.1", "10.231.7.2"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root to make network namespaces"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "needs iproute2 (ip, tc)"
    probe = f"mprobe{os.getpid()}"
    if _ip("netns", "add", probe, check=False).returncode != 0:
        return "cannot make network namespaces here"
    _ip("netns", "del", probe, check=False)
    return None


WHY_NOT = _can_make_namespaces()
pytestmark = [pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")]


class Link:
    """Namespaces a and b, a veth pair between them, and the impairment applied to both ends."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.a, self.b = f"mnet{tag}a", f"mnet{tag}b"
        self.va, self.vb = f"mv{tag}a", f"mv{tag}b"
        _ip("netns", "add", self.a)
        _ip("netns", "add", self.b)
        _ip("link", "add", self.va, "netns", self.a, "type", "veth", "peer", "name", self.vb, "netns", self.b)
        for ns, dev, addr in ((self.a, self.va, A_ADDR), (self.b, self.vb, B_ADDR)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        self.impairment = self._impair()

    def _impair(self) -> str:
        netem = ["netem", "delay", "40ms", "10ms", "loss", "3%"]
        tbf = ["tbf", "rate", "2mbit", "burst", "32kbit", "latency", "100ms"]
        for kind in (netem, tbf):
            done = [subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", *kind],
                                   capture_output=True, text=True).returncode == 0
                    for ns, dev in ((self.a, self.va), (self.b, self.vb))]
            if all(done):
                return " ".join(kind)
        return "none"

    def prefix(self, ns: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", ns)

    def set(self, up: bool) -> None:
        _ip("-n", self.a, "link", "set", self.va, "up" if up else "down")

    def close(self) -> None:
        for ns in (self.a, self.b):
            _ip("netns", "del", ns, check=False)  # the veth pair goes with them


def _wait(check, within: float, what: str):
    end = time.monotonic() + within
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {within} s")


def test_sync_partition_and_heal_across_a_degraded_veth_link(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with Chain.create(tmp_path / "a" / "chain.sqlite", preset("regtest-core", 0)) as chain:
        grow(chain, chain.tip_hash, 600, 1, b"netns")
        seeded = chain.height
    link = Link()
    started: list[NodeProcess] = []
    try:
        assert link.impairment != "none", "neither netem nor tbf could be set on the link"
        a = NodeProcess(tmp_path / "a" / "chain.sqlite", "--preset", "regtest-core", "--listen", f"{A_ADDR}:18444",
                        prefix=link.prefix(link.a))
        started.append(a)
        b = NodeProcess(tmp_path / "b" / "chain.sqlite", "--preset", "regtest-core", "--listen", f"{B_ADDR}:18444",
                        "--connect", f"{A_ADDR}:18444", prefix=link.prefix(link.b))
        started.append(b)

        def height(n: NodeProcess) -> int:
            return max([0] + [e["height"] for e in n.events if e.get("event") == "block"])
        _wait(lambda: height(b) == seeded, 120, f"b synced over the link ({link.impairment})")

        link.set(False)  # partition: each side mines its own branch
        ours = a.call("generatetoaddress", 5, ADDRESS)
        theirs = b.call("generatetoaddress", 8, ADDRESS)
        assert len(ours) == 5 and len(theirs) == 8
        time.sleep(1)
        assert a.call("getbestblockhash") == ours[-1]
        link.set(True)
        _wait(lambda: a.call("getbestblockhash") == theirs[-1], 120, "a on b's longer branch after the heal")
        tips = {t["hash"]: t for t in a.call("getchaintips")}
        assert tips[ours[-1]]["status"] == "valid-fork" and tips[ours[-1]]["branchlen"] == 5
        assert b.call("getbestblockhash") == theirs[-1]
        peers = b.call("getpeerinfo")
        assert [p["addr"] for p in peers] == [f"{A_ADDR}:18444"]
    finally:
        for n in started:
            n.stop()
        link.close()
