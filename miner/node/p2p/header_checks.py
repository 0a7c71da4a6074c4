"""The checks a headers message gets before its headers are held: on their own (they follow one
another, each meets the proof of work its bits claim) and against their ancestors, held and
stored (the bits the retarget rule demands, a time after the median time past, the version).

Only as many ancestors are read as the rules look back (`lookback`), never the whole branch:
a stranger's long held branch must not make each of its messages cost more than the last. Every
`YIELD_EVERY` headers the other faces get a turn, so a flood of full headers messages delays an
honest RPC call by a few milliseconds, not the whole message's checks.
"""

from __future__ import annotations

import asyncio
import time

from miner.consensus.checks import MTP_SPAN, check_header
from miner.consensus.params import ChainParams
from miner.consensus.pow import proof_of_work_error
from miner.errors import InvalidBlock
from miner.node.p2p.chain_queries import Recent, history
from miner.node.p2p.headers import HeaderEntry, HeaderTree
from miner.node.p2p.peer import Misbehaving
from miner.node.service import NodeService
from miner.primitives.hashes import display_hex
from miner.primitives.header import BlockHeader

YIELD_EVERY = 250  # headers checked between turns given to the rest of the node


class HeaderJudge:
    def __init__(self, service: NodeService, params: ChainParams, headers: HeaderTree):
        self.service, self.params, self.headers = service, params, headers
        self.rule = params.retarget_rule()
        # How far back a header's checks look: the median time past's 11 blocks, or a windowed
        # rule's window (the ASERT rules read one or two blocks back).
        self._lookback = max(MTP_SPAN, getattr(self.rule, "window", 0) + 1) + 1

    def check_pow(self, header: BlockHeader, block_hash: bytes) -> None:
        pow_hash = self.params.pow_algorithm.pow_hash(header, block_hash)
        error = proof_of_work_error(pow_hash, header.bits, self.params.pow_limit)
        if error is not None:
            raise Misbehaving(f"high-hash: header {display_hex(block_hash)[:16]}: {error}")

    async def on_their_own(self, headers: list[BlockHeader]) -> list[bytes]:
        """The message on its own: the headers follow one another, each meets its proof of work."""
        hashes = [h.hash() for h in headers]
        for i, header in enumerate(headers):
            if i and header.prev_hash != hashes[i - 1]:
                raise Misbehaving("non-continuous headers sequence")
            self.check_pow(header, hashes[i])
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # let the other faces run: a full message takes ~10 ms
        return hashes

    async def in_context(self, headers: list[BlockHeader], hashes: list[bytes]) -> int:
        """The run's headers against their ancestors, stored and held: the bits the retarget rule
        demands, a time above the median time past, the version. How many passed: a header too
        far in the future stops the run without blame (Core's BLOCK_TIME_FUTURE; it may be fine
        later); any other failure is misbehaviour."""
        held: list[HeaderEntry] = []
        below = headers[0].prev_hash
        while below in self.headers and len(held) < self._lookback:  # only as far back as the rules look
            entry = self.headers.entries[below]
            held.append(entry)
            below = entry.parent
        if below in self.headers:
            first = self.headers.entries[below].height + 1
            times, bits = Recent(first, []), Recent(first, [])
        else:
            times, bits = await self.service.on_chain(history, below, self._lookback - len(held))
        for entry in reversed(held):
            times.append(entry.time)
            bits.append(entry.bits)
        now = int(time.time())
        for i, (header, block_hash) in enumerate(zip(headers, hashes, strict=True)):
            try:
                check_header(self.params, self.rule, len(times), header, block_hash, header.prev_hash,
                             times, bits, now, check_pow=False)
            except InvalidBlock as exc:
                if exc.reason == "time-too-new":
                    return i
                self.headers.mark_invalid(block_hash)
                raise Misbehaving(f"{exc.reason}: header {display_hex(block_hash)[:16]}: {exc}") from None
            times.append(header.time)
            bits.append(header.bits)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        return len(headers)

