"""A JSON-RPC client for Bitcoin Core's HTTP interface (and `miner node`'s), on the standard library.

Credentials come from the URL (`http://user:pass@host:port`) or from a cookie file, read at
every call since a restarted node writes a new cookie. Errors the node answers become
`RpcCallError` with Core's code; a node that cannot be reached is `NodeUnreachable` (which a
caller may retry), anything else that is not a JSON-RPC answer one clear `MinerError`.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from miner.errors import InvalidInput, MinerError


class NodeUnreachable(MinerError):
    """The node did not answer as a node: no connection, a broken one, a time-out, an HTTP error
    without a JSON-RPC body, or (with a cookie, which a restarted node writes anew) refused
    credentials. A restarting node looks like this for a few seconds: worth retrying."""


class RpcCallError(MinerError):
    def __init__(self, method: str, code: int, message: str):
        super().__init__(f"{method}: error {code}: {message}")
        self.code = code
        self.message = message


class RpcClient:
    def __init__(self, url: str, cookie_file: str | Path | None = None, timeout: float = 30.0,
                 looked_in: Sequence[Path] = ()):
        """`looked_in`: where a cookie was looked for and not found, named in the error when no
        credentials are given (after any fault in the URL itself, which is said first)."""
        try:
            parts = urlsplit(url if "://" in url else f"http://{url}")
        except ValueError as exc:  # an unclosed IPv6 bracket, say
            raise InvalidInput(f"--url is not a URL ({exc}): {url[:100]!r}") from None
        if parts.scheme != "http":
            raise InvalidInput(f"--url must be a node's http:// address or a pool's stratum+tcp:// "
                               f"address, got {url!r}")
        if not parts.hostname:
            raise InvalidInput(f"--url has no host: {url!r}")
        try:
            self.port = parts.port or 8332
        except ValueError:
            raise InvalidInput(f"--url has a bad port: {url!r}") from None
        self.host = parts.hostname
        self.path = parts.path or "/"
        self.cookie_file = Path(cookie_file) if cookie_file else None
        self._pair = (f"{unquote(parts.username)}:{unquote(parts.password or '')}"
                      if parts.username is not None else None)
        if self._pair is None and self.cookie_file is None:
            where = (f"no cookie at {' or '.join(map(str, looked_in))} (a miner node writes one beside its "
                     "chain file: --chain names it); " if looked_in else "")
            raise InvalidInput(f"the node needs credentials: {where}put user:password in --url or give "
                               "--rpc-cookie-file")
        self.timeout = timeout
        self._ids = itertools.count(1)

    @property
    def display_url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path if self.path != '/' else ''}"

    def _auth(self) -> str:
        pair = self._pair
        if pair is None:
            try:
                pair = self.cookie_file.read_text().strip()
            except OSError as exc:
                raise MinerError(f"cannot read the cookie file {self.cookie_file}: {exc.strerror}") from None
        return "Basic " + base64.b64encode(pair.encode()).decode()

    def call(self, method: str, *params: Any, timeout: float | None = -1) -> Any:
        """Call `method`; `timeout` None waits for ever (a long poll), -1 uses the default."""
        body = json.dumps({"jsonrpc": "1.0", "id": next(self._ids), "method": method,
                           "params": list(params)}).encode()
        status, data = self._post(body, self.timeout if timeout == -1 else timeout)
        if status == 401:
            error = NodeUnreachable if self._pair is None else MinerError  # a cookie may be rewritten
            raise error(f"{self.display_url}: the node refused the credentials (HTTP 401)")
        try:
            reply = json.loads(data)
        except (ValueError, RecursionError):  # not JSON, or nested past any sane depth
            error = NodeUnreachable if status >= 500 else MinerError
            raise error(f"{self.display_url}: {method}: HTTP {status}, not a JSON-RPC reply") from None
        if not isinstance(reply, dict):
            raise MinerError(f"{self.display_url}: {method}: not a JSON-RPC reply")
        error = reply.get("error")
        if error:
            if not isinstance(error, dict):  # a bare string or number where Core sends an object
                raise RpcCallError(method, 0, str(error)[:200])
            code = error.get("code")
            raise RpcCallError(method, code if type(code) is int else 0, str(error.get("message", ""))[:200])
        return reply.get("result")

    def _post(self, body: bytes, timeout: float | None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("POST", self.path, body, {"Content-Type": "application/json",
                                                   "Authorization": self._auth()})
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            reason = "timed out" if isinstance(exc, socket.timeout) else (
                getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
            raise NodeUnreachable(f"{self.display_url}: cannot reach the node ({reason})") from None
        finally:
            conn.close()
