"""The chain file as a file: paths a chain may have, one name per chain, SQLite's files beside it,
and what a process killed mid-way leaves behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from miner.errors import ChainError, InvalidInput

MAX_NAME = 250  # bytes: with ".lock" the longest name most file systems hold (255)


def with_journal(path: Path) -> tuple[Path, ...]:
    """A database file and the files SQLite keeps beside it under its name."""
    return (path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")))


def journal_absent(path: Path) -> bool:
    """Whether the `-wal` and `-shm` are absent beside the real file (where SQLite keeps them)."""
    return not any(f.exists() for f in with_journal(path.resolve())[1:3])


def remove_new_chain(path: Path) -> None:
    """Remove a chain file its caller created in this run and stored nothing on (a node whose
    start failed), with SQLite's files beside it, so that a failed start leaves no chain behind
    to be mined later with parameters nobody chose. The caller holds the exclusive lock."""
    for file in with_journal(path.resolve()):
        try:
            file.unlink()
        except FileNotFoundError:
            pass


def check_chain_path(p: Path, must_exist: bool) -> None:
    """Errors about the path itself, before anything is opened or compiled: missing, not a
    regular file (/dev/null, a folder), or in a folder that does not exist, or a name too long
    to have its `.lock` beside it."""
    if len(p.name.encode()) > MAX_NAME:
        raise InvalidInput(f"{str(p)[:80]}...: a chain file's name may have at most {MAX_NAME} bytes "
                           f"(its lock file adds 5 to it), this one has {len(p.name.encode())}")
    try:
        exists = p.exists()
        if exists and not p.is_file():
            raise InvalidInput(f"{p}: not a regular file; give a chain file path")
    except OSError as exc:
        raise InvalidInput(f"{p}: {os_reason(exc)}") from None
    if must_exist and not exists:
        raise InvalidInput(f"{p}: no such chain file")
    if not exists and not p.parent.is_dir():
        raise InvalidInput(f"{p.parent}: no such directory")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_leftovers(folder: Path, prefix: str) -> None:
    """Files `<prefix><pid>-...` (with any SQLite journal beside them) that a process killed
    mid-way left in `folder`: those whose process is gone are removed; a live one's are not."""
    for path in folder.glob(f"{prefix}*"):
        pid_text = path.name[len(prefix):].split("-", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        try:
            path.unlink()
        except OSError:
            pass  # removed by another process meanwhile, or not ours to remove


def check_one_name(p: Path) -> None:
    """A chain a writer opens must have one name: through a hard link SQLite would keep a second
    journal of the same file, and what one writer committed could vanish under the other. A
    link left by a creation that was killed (`.NAME.creating-*`, same file) is removed first."""
    remove_leftovers(p.resolve().parent, f".{p.resolve().name}.creating-")
    st = p.stat()
    if st.st_nlink == 1:
        return
    for leftover in p.resolve().parent.glob(f".{p.resolve().name}.creating-*"):
        try:
            if os.path.samestat(leftover.stat(), st):
                leftover.unlink()
        except OSError:
            pass  # its creator removed it first
    links = p.stat().st_nlink
    if links > 1:
        raise ChainError(f"{p}: the chain file has {links} names (hard links); a chain written "
                         f"through two names loses blocks, so keep one name and remove the others")


def check_creatable(p: Path) -> None:
    """Fail now if a new chain file cannot be made at `p` (before a long compile, say)."""
    check_chain_path(p, must_exist=False)
    if not os.access(p.parent, os.W_OK) or read_only_fs(p):
        raise ChainError(f"{p}: cannot create the chain file (the folder {p.parent} is not writable)")


def read_only_fs(p: Path) -> bool:
    try:
        return bool(os.statvfs(p.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    return exc.strerror or str(exc)
