"""One writer per folder: a lock file that names the process holding it.

The lock is an advisory `flock` on the file, held from `acquire` to `release`. The kernel drops it when the
holder exits however it ends (SIGKILL included), so a lock file left behind by a dead process is simply taken
over; the process id written in it only names the holder in the message a second writer gets. The file stays in
the folder (removing it would let two writers lock two different files of one name).
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from pathlib import Path

from turkclip.errors import TurkclipError

WAIT_S = 5.0  # how long a second writer waits for the first before it refuses


class WriterLock:
    def __init__(self, path: Path, what: str, wait: float | None = None):
        """path: the lock file; what: the kind of writer, for messages ("`turkclip index`")."""
        self.path, self.what, self.wait = Path(path), what, WAIT_S if wait is None else wait
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, waiting up to `wait` seconds for another holder; a one-line error if it stays taken."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # never through a link: a crafted folder could point the lock at a file we would then truncate
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise TurkclipError(f"cannot write in {self.path.parent} ({self.path.name}: {e.strerror})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise TurkclipError(f"{self.path} is not a plain file: remove it")
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                    os.close(fd)
                    raise TurkclipError(f"another {self.what} (process {holder}) is writing {self.path.parent}: wait"
                                        " for it to finish, then run this again") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the file drops the lock
            self.fd = None

    def __enter__(self) -> "WriterLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
