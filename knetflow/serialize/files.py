"""Durable, atomic file writes, and bounded reads.

`atomic_write(path)` gives a temporary file in the target's directory; when the
block ends without an exception the data is flushed and fsynced, the temporary
file is renamed over the target (`os.replace`, atomic on POSIX and Windows), and
the directory is fsynced so the rename itself survives a power loss. A crash at
any point leaves either the old file or the new one, never a mixture; at worst a
stray temporary file named `.<name>.<random>.tmp` remains.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(directory: str) -> None:
    """fsync a directory, so renames and deletions in it are durable (a no-op on Windows)."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path, durable: bool = True):
    """Open a temporary binary file that replaces `path` atomically when the block ends.

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "x.bin")
        >>> with atomic_write(target) as f:
        ...     _ = f.write(b"hello")
        >>> open(target, "rb").read()
        b'hello'
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=TEMP_SUFFIX,
                                dir=directory)
    try:
        # mkstemp makes the file 0600; give it the mode a plain open() would
        mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o666 & ~_umask()
        os.chmod(temp, mode)
        with os.fdopen(fd, "w+b") as f:
            fd = -1
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(directory)


def is_temp(name: str) -> bool:
    """Whether a file name is one of atomic_write's temporary files."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def read_exactly(f, view: memoryview) -> int:
    """Fill `view` from binary file `f`; the number of bytes read (less at end of file)."""
    done, total = 0, len(view)
    while done < total:
        n = f.readinto(view[done:])
        if not n:
            break
        done += n
    return done
