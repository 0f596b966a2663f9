"""Atomic file writes: a crash or a cancelled job never leaves a half-written labels file or weights file.

Write to a temporary file in the same folder, flush it to disk, then ``os.replace`` it over the target. The old
file stays intact until the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import SemFocusError


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target``, on error it is removed.

    A folder that cannot be written (read-only, full disk, missing permission) raises :class:`SemFocusError`
    naming the file and what to do; the previous file stays as it was.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise _unwritable(target, err) from err
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, target)
    except OSError as err:
        raise _unwritable(target, err) from err
    finally:
        if tmp.exists():
            tmp.unlink()


def _unwritable(target: Path, err: OSError) -> SemFocusError:
    reason = err.strerror or str(err)
    return SemFocusError(
        f"cannot write '{target}': {reason}; choose a folder you can write to (the previous file, if any, is unchanged)"
    )


def atomic_write_text(target: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(target)
