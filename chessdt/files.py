"""Outputs that survive crashes and concurrent runs: exclusive locks, durable renames, stale partials,
and the mark that says chessdt made a folder (nothing without it is ever deleted).

Every command that writes a directory of results (a training run, a prepared data set, an eval
folder) holds :func:`exclusive` on it while it writes, and publishes finished files with
:func:`durable_rename`, so neither a second run nor a power cut leaves a half-written result that
looks complete.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import json
import logging
import os
import re
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, get_args

from chessdt.errors import UserError

log = logging.getLogger(__name__)
LOCK_NAME = ".chessdt.lock"

try:
    _fcntl: ModuleType | None = importlib.import_module("fcntl")
except ImportError:  # Windows has no flock: there, a second run into the same output is not
    _fcntl = None  # stopped (the lock is skipped); everything else works the same.


class OutputLocked(UserError):
    """Another process holds the lock on an output this command wants to write."""


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created if needed) for the block, or raise OutputLocked
    naming the process that holds it. The lock dies with the process, so a killed run never leaves
    a stale one. `what` names the output in the message ("run directory runs/x"). A directory
    that stays in place is locked through ``DIR/.chessdt.lock``; one replaced by a rename (a
    prepared data set) through a file beside it, which the rename does not move."""
    lock_file = Path(lock_file)
    fcntl = _fcntl
    if fcntl is None:
        log.debug("no fcntl on %s: %s is not locked", sys.platform, lock_file)
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            raise OutputLocked(f"{what} is in use by {holder}; wait for it to finish, or stop it "
                               "(two runs into one output would mix their results)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ({' '.join(sys.argv)[:300]})\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (deleting it would race with a new locker)


def exclusive_beside(out: Path, what: str) -> contextlib.AbstractContextManager[None]:
    """:func:`exclusive` on an output that a rename replaces or that is a file (a prepared data set, a
    games file): the lock is the hidden file ``.OUT.chessdt.lock`` beside it."""
    out = Path(out)
    return exclusive(out.with_name(f".{out.name}{LOCK_NAME}"), what)


def as_umask_allows(path: Path) -> None:
    """Give a file the mode a plain open() would (0o666 less the umask): some writers (safetensors)
    create theirs 0600, and another user of a shared checkpoint is then told it is missing."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    """This process's umask, read without changing it where the system says it (Linux), else by a swap."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_tree(path: Path) -> None:
    """Flush a file, or a directory's files and the directory itself, to the disk."""
    path = Path(path)
    if path.is_dir():
        for child in path.iterdir():
            if child.is_file():
                _fsync(child, os.O_RDONLY)
    _fsync(path, os.O_RDONLY)


def _fsync(path: Path, flags: int) -> None:
    try:
        fd = os.open(path, flags)
    except OSError:  # a platform that cannot open directories (Windows): nothing to flush
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is then as safe as they allow
    finally:
        os.close(fd)


def durable_rename(src: Path, dst: Path) -> None:
    """Rename `src` (a finished file or directory) to `dst` so that after a power cut `dst` is either
    absent or complete: the contents are flushed before the rename, and the rename itself after."""
    fsync_tree(src)
    os.replace(src, dst)
    _fsync(Path(dst).parent, os.O_RDONLY)


MARK_NAME = ".chessdt-made.json"  # in a folder chessdt wrote: {"made_by": "chessdt", "kind": ..., owner}
Made = Literal["prepared", "partial"]  # a finished prepared data set; a folder still being written


def mark(directory: Path, kind: Made) -> None:
    """Record in `directory` that chessdt made it as `kind`; a partial folder also names its owner
    (process and host), which decides when it is stale. Nothing without this mark is ever deleted."""
    record: dict[str, Any] = {"made_by": "chessdt", "kind": kind}
    if kind == "partial":
        record.update(pid=os.getpid(), host=socket.gethostname())
    (Path(directory) / MARK_NAME).write_text(json.dumps(record) + "\n", encoding="utf-8")


def made_as(directory: Path) -> dict[str, Any] | None:
    """The mark chessdt wrote in `directory`, or None: a folder without one may be the user's."""
    try:
        record = json.loads((Path(directory) / MARK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        return None
    if not isinstance(record, dict) or record.get("made_by") != "chessdt" or record.get("kind") not in get_args(Made):
        return None
    return record


def partial_path(out: Path, stage: Literal["partial", "old"]) -> Path:
    """Where this process writes `out` before renaming it into place ('partial'), or moves the old `out`
    while it does ('old'): a hidden name no one would give a folder, owned by this process."""
    out = Path(out)
    return out.with_name(f".{out.name}.chessdt-{stage}-{os.getpid()}")


_PARTIAL = re.compile(r"\.chessdt-(?:partial|old)-(\d+)$")


def remove_stale_partials(out: Path) -> list[Path]:
    """Delete the :func:`partial_path` folders of `out` that chessdt marked and whose process no
    longer runs (an interrupted prepare); returns what was removed. A folder of that name without
    chessdt's mark, or marked by a process on another host, is kept."""
    out = Path(out)
    removed = []
    for path in out.parent.glob(f".{glob.escape(out.name)}.chessdt-*-*"):
        m = _PARTIAL.search(path.name)
        if m is None or path.name != f".{out.name}{m.group(0)}" or not path.is_dir() or path.is_symlink():
            continue
        record, pid = made_as(path), int(m.group(1))
        if record is None or (record["kind"] == "partial" and (record.get("pid") != pid
                                                               or record.get("host") != socket.gethostname())):
            continue
        if _alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed %s, left by an interrupted run", path)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    """Whether process `pid` may still run (when unsure: yes, so its files are kept)."""
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (another user's process), or we cannot tell
    return True
