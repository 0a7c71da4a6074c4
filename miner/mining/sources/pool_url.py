"""A pool's address as miners write it: `stratum+tcp://user.worker:password@host:port`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from miner.errors import InvalidInput

SCHEMES = ("stratum+tcp", "stratum")


@dataclass(frozen=True)
class PoolUrl:
    host: str
    port: int
    user: str
    password: str

    @classmethod
    def parse(cls, url: str) -> PoolUrl:
        """The parts of a stratum+tcp:// URL; InvalidInput naming what is wrong. The user is the
        worker name pools expect (`account.worker`); a missing password is "x", as miners send."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:  # an unclosed IPv6 bracket, a port that is not a number
            raise InvalidInput(f"--url is not a URL ({exc}): {url[:100]!r}") from None
        if parts.scheme not in SCHEMES:
            raise InvalidInput(f"--url must be http:// or stratum+tcp://, got {url[:100]!r}")
        if not parts.hostname:
            raise InvalidInput(f"--url has no host: {url[:100]!r}")
        if port is None:
            raise InvalidInput(f"--url needs the pool's port: {url[:100]!r}")
        if not parts.username:
            raise InvalidInput(f"--url needs a worker name (stratum+tcp://user.worker@host:port): {url[:100]!r}")
        return cls(parts.hostname, port, unquote(parts.username), unquote(parts.password or "x"))

    @property
    def display(self) -> str:
        """The address without the password, for logs and the live view."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"stratum+tcp://{self.user}@{host}:{self.port}"


def is_pool_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES if "://" in url else False
