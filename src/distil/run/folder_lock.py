"""One writer per folder: a run holds its run directory, a command the output folder it writes, until it ends.

`FolderLock(lock_file, ...)` takes an exclusive, non-blocking `flock` on `lock_file` and writes into it who holds it
(pid, host, command, since when). A second process that asks for the same lock is refused at once with
`FolderInUseError` naming the first one's pid, before it reads or writes anything of the folder. The operating
system releases the lock when the holder's process ends, however it ends (a crash or `kill -9` included), so a lock
is never left stale; the lock file itself stays (deleting it would let a third process lock a new file while a second
still waits on the old one) and is reused.

`flock` works between processes of one machine and, on Linux, on NFS (as POSIX record locks); on a filesystem that
supports neither, taking the lock fails with the operating system's error.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

COMMAND_CHARACTERS = 300  # of the holder's command line recorded in the lock file


class FolderInUseError(RuntimeError):
    """Another process holds the lock of the folder this one was about to write."""


class FolderLock:
    """An exclusive lock on `lock_file`, held inside a `with` block; the holder's command line is recorded in it.

    Args:
        lock_file: the lock file (created when missing), in or beside the folder it guards.
        folder: the guarded folder, for the error.
        key: the config key that names the folder (e.g. "hydra.run.dir", "output_dir"), for the error.
    """

    def __init__(self, lock_file: str | Path, folder: str | Path, key: str) -> None:
        self.lock_file, self.folder, self.key = Path(lock_file), Path(folder), key
        self.descriptor: int | None = None

    def __enter__(self) -> FolderLock:
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 4096).decode("utf-8", errors="replace")
            os.close(descriptor)
            raise FolderInUseError(self.refusal(holder)) from None
        except BaseException:
            os.close(descriptor)
            raise
        command = " ".join(sys.argv)[:COMMAND_CHARACTERS]
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(holder).encode("utf-8"), 0)
        self.descriptor = descriptor
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.descriptor is not None:
            fcntl.flock(self.descriptor, fcntl.LOCK_UN)
            os.close(self.descriptor)
            self.descriptor = None

    def refusal(self, recorded: str) -> str:
        """The error of a refused lock, naming the holder recorded in the lock file."""
        try:
            holder = json.loads(recorded)
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
            who = f"pid {holder['pid']} on {holder['host']} (since {since}: {holder['command']})"
        except (ValueError, KeyError, TypeError):
            who = "another process (pid not yet recorded)"
        return (
            f"{self.key}={str(self.folder)!r} is in use by {who}: two writers would mix their files. Wait for it to "
            f"end, or give this one another {self.key}"
        )
