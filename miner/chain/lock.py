"""Who writes a chain file: any number of `miner mine` processes, or one `miner node`.

Miners mining a file directly share it (each block is one SQLite transaction); a node owns it:
everything else must go through the node's RPC, so its view of the chain and its long polls
never miss a block stored behind its back. The rule is an advisory lock on `<chain>.lock` beside
the file: miners take it shared, the node exclusive, both without waiting, and the node writes
its RPC address into the file so a refused miner can say where to point `--url`. The kernel
drops the lock when a process dies, SIGKILL included, so a stale lock never blocks anyone.

One file has one lock whatever it is called: the lock sits beside the real file, symbolic links
resolved (SQLite's journal does too, see `store._connect`), and a writer refuses a chain file with
a second name (a hard link), through which a second writer would keep a journal of its own. The
lock file is opened without following a link and must be a plain file with one name, so a user
who can write to the chain's folder cannot make the process truncate some other file.

The lock file lives only while the chain is in use: the last process to release it removes it
(also when no chain came of the run, or the file was not a chain at all), so no `NAME.lock` is
left beside a chain file, or beside a file given by mistake. Removing a lock file is safe
only under the exclusive lock and only if every taker checks, once it holds the lock, that the
name still leads to the file it locked (else it locked a removed file, and takes the new one).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from miner.errors import InvalidInput

if TYPE_CHECKING:
    from typing_extensions import Self  # annotations only: never imported at run time


def lock_path(chain: Path) -> Path:
    """The lock beside the real file: every name of the chain (a symlink too) shares it."""
    real = chain.resolve()
    return real.with_name(real.name + ".lock")


class ChainLock:
    def __init__(self, chain: Path, exclusive: bool):
        self.chain = chain
        self.path = lock_path(chain)
        self.exclusive = exclusive
        self._fd: int | None = None

    def acquire(self) -> ChainLock:
        for _ in range(100):  # a retry only follows a removal by another process: rare, never endless
            fd = self._open()
            if fd is None:
                return self  # a read-only folder: no node can own a file there either
            self._lock(fd)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return self
            os.close(fd)  # the lock file was removed while we took it: take the one there now
        raise InvalidInput(f"{self.chain}: the lock file {self.path} keeps being replaced; stop whatever "
                           f"removes it")

    def _open(self) -> int | None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InvalidInput(f"{self.chain}: the lock file {self.path} is a symbolic link; "
                                   f"remove it") from None
            if self.exclusive:
                raise InvalidInput(f"{self.chain}: cannot create the lock file {self.path}") from None
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            raise InvalidInput(f"{self.chain}: the lock file {self.path} is not a plain file of its own "
                               f"(it has {st.st_nlink} names); remove it")
        return fd

    def _lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read(fd)
            os.close(fd)
            if self.exclusive:
                raise InvalidInput(f"{self.chain}: in use by another process ("
                                 + (f"a miner node at {owner.partition(chr(10))[0]}" if owner
                                    else "a 'miner mine' or 'miner node'")
                                 + "); stop it first") from None
            url, _, cookie = owner.partition("\n")
            command = f"miner mine --url {url or 'URL'}" + (f" --rpc-cookie-file {cookie}" if cookie else "")
            raise InvalidInput(f"{self.chain}: served by a miner node at {url or 'another process'}; "
                               f"mine it through the node: {command}") from None

    def publish(self, url: str, cookie: Path | None = None) -> None:
        """The node's address (and its cookie file, if it has one), for the command a refused
        miner prints."""
        if self._fd is not None and self.exclusive:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, (url + (f"\n{cookie}" if cookie else "")).encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            if self.exclusive:
                os.ftruncate(self._fd, 0)
            self._remove_unused()
            os.close(self._fd)
            self._fd = None

    def _remove_unused(self) -> None:
        """Remove the lock file, if nobody else holds it."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.fstat(self._fd), os.stat(self.path, follow_symlinks=False)):
                os.unlink(self.path)
        except OSError:
            pass  # held by another process (BlockingIOError), or already gone

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        return ""
