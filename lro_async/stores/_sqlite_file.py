"""The file side of SQLiteStore: where a database may live, and who owns it.

**One owner per file**: an OS lock on a sidecar file, released when its holder dies.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on ``<database>.lock``, not on the database file
itself: SQLite locks the database with POSIX (``fcntl``) record locks, which belong to the
process and which the kernel drops as soon as the process closes *any* descriptor of that
file. Opening the database a second time to lock it (or to find out that it is locked, as
a second store in the same process would) and closing that descriptor would silently
release SQLite's own locks. A sidecar file has no such interaction, and ``flock`` locks
belong to the open file (not the process), so a second store in the same process is
refused just like a second process. The kernel releases the lock when the holder exits,
``kill -9`` included, so a crashed server's successor opens the file at once.

The holder writes who it is (host, pid, program, since when) into the lock file, so that
whoever is refused can be told whom to look for. A clean close removes the file; after a
crash it stays behind, unlocked, and the next owner overwrites it.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sqlite3
import sys

from ..errors import StoreError

__all__ = ["OwnerLock", "check_location", "unwritable"]

_READ_ONLY = "open it read-only (read_only=True, or ?mode=ro after a sqlite: URL)"
_ATTEMPTS = 5  # re-opens when the file was replaced between our open and our lock


class OwnerLock:
    """The exclusive lock of one database file, held from :meth:`acquire` to :meth:`release`.

    :param database: the database file's path, as shown in error messages.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.path = database + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and record this process as the owner.

        :raises StoreError: if another store (in this process or another one) holds it,
            or the lock file cannot be created (a read-only or missing folder).
        """
        if self._fd is not None:
            return
        for _ in range(_ATTEMPTS):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                why = f"cannot create its lock file {self.path!r}: {exc.strerror or exc}"
                if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                    why = f"its folder is not writable ({why})"
                raise StoreError(f"SQLite store {self.database!r}: {why}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _describe(_read(fd))
                os.close(fd)
                raise StoreError(
                    f"SQLite store {self.database!r} is in use by {owner}: one process "
                    f"serves a SQLite file at a time; to inspect it meanwhile, {_READ_ONLY}"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                break
            # The owner we waited for removed the file as it closed: lock the new one.
            os.close(fd)
        else:  # pragma: no cover - needs five owners to come and go within our attempts
            raise StoreError(f"SQLite store {self.database!r}: its lock file keeps changing")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _owner_record(), 0)
        except OSError as exc:
            os.close(fd)
            raise StoreError(
                f"SQLite store {self.database!r}: cannot write its lock file {self.path!r}: "
                f"{exc.strerror or exc}"
            ) from exc
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and release the lock; idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Removed while still locked, so no one can lock the old file and believe it
            # current (acquire() checks that the file it locked is still the one named).
            if _same_file(fd, self.path):
                os.unlink(self.path)
        except OSError:
            pass  # the folder turned read-only: the file stays, unlocked, and is reused
        finally:
            os.close(fd)


def check_location(path: str, read_only: bool) -> None:
    """Refuse, with the reason, a path that cannot hold (or, read-only, be) a database."""
    full = os.path.abspath(path)
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        missing = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise StoreError(f"SQLite store {full!r}: the folder {folder!r} {missing}")
    if os.path.isdir(full):
        raise StoreError(f"SQLite store {full!r} is a folder, not a database file")
    if read_only and not os.path.exists(full):
        raise StoreError(f"SQLite store {full!r} does not exist (opened read-only)")


def unwritable(path: str, exc: sqlite3.OperationalError) -> StoreError | None:
    """A clear StoreError if SQLite refused to write because a file or folder is read-only."""
    name = getattr(exc, "sqlite_errorname", "")
    if not name.startswith("SQLITE_READONLY"):
        return None
    reason = {
        "SQLITE_READONLY": "the file is read-only",
        "SQLITE_READONLY_DIRECTORY": "its folder is read-only",
    }.get(name, str(exc))
    return StoreError(
        f"SQLite store {os.path.abspath(path)!r} cannot be written: {reason}; make it "
        f"writable, or to inspect it {_READ_ONLY}"
    )


def _same_file(fd: int, path: str) -> bool:
    try:
        named, held = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _owner_record() -> bytes:
    since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    program = " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "program": program[:200]}
    return (json.dumps({**owner, "since": since}) + "\n").encode()


def _read(fd: int) -> bytes:
    try:
        return os.pread(fd, 4096, 0)
    except OSError:
        return b""


def _describe(record: bytes) -> str:
    """Who holds the lock, in a few words on one line."""
    try:
        owner = json.loads(record)
        host, pid = str(owner["host"]), int(owner["pid"])
        program, since = str(owner.get("program", "")), str(owner.get("since", ""))
    except (ValueError, KeyError, TypeError):
        return "another process (it has not recorded who it is yet)"
    extra = ", ".join(part for part in (program, f"since {since}" if since else "") if part)
    if (host, pid) == (socket.gethostname(), os.getpid()):
        text = f"another SQLiteStore in this process (pid {pid} on {host})"
    else:
        text = f"process {pid} on {host}" + (f" ({extra})" if extra else "")
    return " ".join(text.split())  # one line, whatever the program's arguments held
