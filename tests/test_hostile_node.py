"""`miner mine --url` against a node that answers what no node should (issue 21, item 9): each
answer gets one line naming it, and a node that answers long polls at once is not polled in a
tight loop. The node is a small HTTP server on 127.0.0.1 in the test; every miner process the
test starts is stopped by it. Each test failed before its fix."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support.nodeproc import ROOT

GOOD = {"version": 0x20000000, "previousblockhash": "00" * 32, "transactions": [], "coinbasevalue": 50 * 10**8,
        "longpollid": "lp", "target": "00" * 31 + "01", "curtime": 1_800_000_000, "bits": "1d00ffff", "height": 20}


class FakeNode:
    """Answers every request with `reply(body)`: bytes sent as they are."""

    def __init__(self, reply):
        self.requests = 0
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                node.requests += 1
                data = reply(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://u:p@127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _result(template) -> bytes:
    return json.dumps({"result": template, "error": None, "id": 1}).encode()


def _mine(url: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "miner", "mine", "--url", url, "--backend", "ref", "--blocks", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("reply,fragment", [
    (lambda req: _result({**GOOD, "height": -1}), "'height' is -1"),
    (lambda req: _result({**GOOD, "coinbasevalue": 1 << 63}), "'coinbasevalue'"),
    (lambda req: _result({**GOOD, "curtime": 1 << 32}), "'curtime'"),
    (lambda req: b"[" * 100_000 + b"]" * 100_000, "not a JSON-RPC reply"),
    (lambda req: json.dumps({"result": None, "error": "no templates today", "id": 1}).encode(), "no templates today"),
    (lambda req: json.dumps({"result": None, "error": {"code": "x", "message": "odd"}, "id": 1}).encode(), "odd"),
])
def test_a_hostile_template_gets_one_line(reply, fragment):
    node = FakeNode(reply)
    try:
        proc = _mine(node.url)
    finally:
        node.close()
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("miner: error:") and fragment in lines[0], proc.stderr[-2000:]


def test_long_polls_answered_at_once_are_not_polled_in_a_loop():
    """A node that answers every long poll at once with the same template (before: about 130
    requests a second). The target is out of reach, so the miner only polls; it is stopped
    after three seconds."""
    node = FakeNode(lambda req: _result(GOOD))
    proc = subprocess.Popen([sys.executable, "-m", "miner", "mine", "--url", node.url, "--backend", "ref",
                             "--blocks", "1", "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            pass
        assert proc.poll() is None, proc.stderr.read()[-2000:]  # still mining: only the polls count
        assert node.requests <= 15, node.requests  # two fetches at start, then at most one a backed-off pause
    finally:
        proc.kill()
        proc.wait()
        node.close()
