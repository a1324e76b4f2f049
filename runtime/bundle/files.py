"""Reading a bundle's files: regular files only (a FIFO or device is refused before it is opened), sha256."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from .format import BundleError

# -- reading files: regular files only ----------------------------------------------------------------------

def file_kind(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in words ("a FIFO", "a socket", ...)."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for binary reading; :class:`BundleError` if it is not a regular file (FIFO, device...).

    Opened non-blocking and checked on the open descriptor, so a FIFO can neither hang the open nor be
    swapped in between a check and the open.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BundleError(f"{path}: {file_kind(mode)}, not a regular file; refusing to read it")
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; :class:`BundleError` otherwise."""
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > max_bytes:
            raise BundleError(f"{path}: {size} bytes, more than the {max_bytes} byte limit")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise BundleError(f"{path}: more than the {max_bytes} byte limit")
    return data


def sha256_path(path: Path) -> str:
    """Hex sha256 of a file, or of every file under a folder (names included), e.g. an .mlpackage.

    Only regular files are read: anything else (a FIFO, a device) is a :class:`BundleError`.
    """
    h = hashlib.sha256()
    path = Path(path)
    if path.is_dir():
        files = []
        for f in sorted(path.rglob("*")):
            mode = f.stat().st_mode
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise BundleError(f"{f}: {file_kind(mode)}, not a regular file; refusing to read it")
            files.append(f)
    else:
        files = [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open_regular(f) as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
