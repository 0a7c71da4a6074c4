"""Who may call the node: a cookie file as Bitcoin Core writes it, or a user and password.

Core's cookie is one line, `__cookie__:<64 hex digits>` (32 random bytes), in a file only its
owner can read, made when the server starts and removed when it stops cleanly. A client that
can read the file may call the node; nothing secret is ever typed or kept in a shell history.

Core keeps one `.cookie` per data folder, and one node runs per data folder. Here a chain file is
a node's data, and several chains (so several nodes) may share a folder: a folder-wide `.cookie`
was overwritten by the second node (the first one's miners got 401) and removed by a second node
that failed to start. So each chain has its own cookie, `NAME.cookie` beside it, as it has its
own `NAME.lock`.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
from pathlib import Path

from miner.chain.files import remove_leftovers

COOKIE_USER = "__cookie__"
COOKIE_SUFFIX = ".cookie"
_NAME_MAX = 255  # bytes in one file name on most file systems
_PID_DIGITS = 7  # Linux's pid_max is at most 4,194,304


def cookie_path(chain: Path) -> Path:
    """The cookie of the node serving `chain`, as `miner node` writes it and `miner mine --url`
    looks for it: beside the real file (symbolic links resolved, as for its lock, so every name
    of the chain leads to one cookie), named after it."""
    real = chain.resolve()
    return real.with_name(real.name + COOKIE_SUFFIX)


def cookie_name_fits(path: Path) -> bool:
    """Whether `write_cookie` can write `path`: its temporary file's name (`.NAME.tmp-PID`) must
    fit in a file name, which the cookie of a chain with a long name may not."""
    return len(f".{path.name}.tmp-".encode()) + _PID_DIGITS <= _NAME_MAX


def new_cookie() -> str:
    """A fresh `user:password` pair: made before the server starts (it must know it), written by
    `write_cookie` only once the node listens, so a node that fails to start writes nothing."""
    return f"{COOKIE_USER}:{secrets.token_hex(32)}"


def write_cookie(path: Path, pair: str | None = None) -> str:
    """Write a cookie (mode 0600, replacing any left by an unclean stop) holding `pair`, a new one
    if None; returns the `user:password` pair it holds.

    The secret goes into a file this call creates itself (O_EXCL, O_NOFOLLOW): a file or a
    symlink planted under the temporary name by whoever can write to the folder is removed, never
    written through, and the new file is readable by its owner alone from its first byte. It is
    then renamed over `path`, which replaces a link there rather than following it."""
    pair = pair or new_cookie()
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
    """Remove the cookie if it is still ours (a second node given the same --rpc-cookie-file may
    have replaced it): a node never removes a cookie it did not write."""
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
