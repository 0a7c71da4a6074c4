"""A relay on 127.0.0.1 that records every line a Stratum miner and its pool send each other,
for the tests that run our client at pools nobody here wrote: the exchange is kept as a fixture
and replayed in every run."""

from __future__ import annotations

import time

from .p2p_proxy import RecordingProxy


class LineRecorder(RecordingProxy):
    """`lines`: {"from": "miner" | "pool", "line": text, "at": seconds from the start}."""

    def __init__(self, upstream_port: int):
        self._started = time.monotonic()
        super().__init__(upstream_port, ("miner", "pool"))
        self.lines = self.messages

    def _frames(self, buf: bytes) -> tuple[list, bytes]:
        *lines, rest = buf.split(b"\n")
        return [line for line in lines if line.strip()], rest

    def _note(self, who: str, frame) -> None:
        self.messages.append({"from": who, "line": frame.decode(errors="replace"),
                              "at": round(time.monotonic() - self._started, 3)})
