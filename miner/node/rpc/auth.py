"""Who may call the node: a cookie file as Bitcoin Core writes it, or a user and password.

Core's cookie is one line, `__cookie__:<64 hex digits>` (32 random bytes), in a file only its
owner can read, made when the server starts and removed when it stops cleanly. A client that
can read the file may call the node; nothing secret is ever typed or kept in a shell history.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
from pathlib import Path

from miner.chain.files import remove_leftovers

COOKIE_USER = "__cookie__"
COOKIE_NAME = ".cookie"


def write_cookie(path: Path) -> str:
    """Write a new cookie (mode 0600, replacing any left by an unclean stop); returns the
    `user:password` pair it holds.

    The secret goes into a file this call creates itself (O_EXCL, O_NOFOLLOW): a file or a
    symlink planted under the temporary name by whoever can write to the folder is removed, never
    written through, and the new file is readable by its owner alone from its first byte. It is
    then renamed over `path`, which replaces a link there rather than following it."""
    pair = f"{COOKIE_USER}:{secrets.token_hex(32)}"
    remove_leftovers(path.parent, f".{path.name}.tmp-")  # of nodes killed while writing theirs
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileExistsError:
        tmp.unlink()  # left by a killed node of the same pid, or planted: removed, not reused
        fd = os.open(tmp, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, pair.encode())
    except BaseException:
        os.close(fd)
        tmp.unlink()
        raise
    os.close(fd)
    os.replace(tmp, path)  # readers never see a half-written cookie
    return pair


def remove_cookie(path: Path, pair: str) -> None:
    """Remove the cookie if it is still ours (a second node may have replaced it)."""
    try:
        if path.read_text() == pair:
            path.unlink()
    except OSError:
        pass


def read_cookie(path: Path) -> str:
    return path.read_text().strip()


class Credentials:
    """The `user:password` pairs the node accepts, compared in constant time."""

    def __init__(self, pairs: list[str]):
        self._pairs = [p.encode() for p in pairs]

    def check(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(authorization[6:].strip(), validate=True)
        except ValueError:
            return False
        ok = False
        for pair in self._pairs:
            ok |= hmac.compare_digest(given, pair)
        return ok
