"""Download a Lichess monthly dump: stream to `<name>.part`, resume with HTTP Range after a dropped
connection, check sha256 against the published `sha256sums.txt`, then rename into place."""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from chessdt.errors import UserError

log = logging.getLogger(__name__)

LICHESS_BASE_URL = "https://database.lichess.org/standard/"
CHUNK = 1 << 20


def lichess_name(month: str) -> str:
    """File name of a month's dump.

    >>> lichess_name("2013-01")
    'lichess_db_standard_rated_2013-01.pgn.zst'
    """
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise UserError(f"bad month {month!r}: expected YYYY-MM, e.g. 2013-01")
    return f"lichess_db_standard_rated_{month}.pgn.zst"


def _url(base_url: str, name: str) -> str:
    return base_url.rstrip("/") + "/" + name


def expected_sha256(base_url: str, name: str, timeout_s: float = 60.0) -> str:
    """The published checksum of `name` from `<base_url>/sha256sums.txt`."""
    url = _url(base_url, "sha256sums.txt")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            text = r.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"cannot fetch {url}: {e}") from None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == name and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            return parts[0].lower()
    raise UserError(f"{url} lists no checksum for {name} (is the month published yet?)")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fetch_rest(url: str, part: Path, bar: tqdm, timeout_s: float) -> bool:
    """Append the bytes of `url` after what `part` holds; True when the file is complete."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        r = urllib.request.urlopen(req, timeout=timeout_s)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after `have`: the part file is already whole
            return True
        if e.code == 404:
            raise UserError(f"{url}: not found (404)") from None
        raise
    with r:
        if have and r.status != 206:  # server ignored the range: start over
            log.warning("%s: server does not resume; downloading from the start", url)
            have = 0
            part.unlink(missing_ok=True)
            bar.reset()
        total = None
        if r.status == 206:
            m = re.search(r"/(\d+)$", r.headers.get("Content-Range", ""))
            total = int(m.group(1)) if m else None
        elif r.headers.get("Content-Length"):
            total = int(r.headers["Content-Length"])
        if total is not None:
            bar.total = total
            bar.n = have
            bar.refresh()
        with open(part, "ab") as f:
            while chunk := r.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    return total is None or size >= total


def download(url: str, dest: Path, sha256: str, *, retries: int = 8, timeout_s: float = 60.0,
             progress: bool = True) -> Path:
    """Download `url` to `dest` via `dest.part` (resumed if present), verify sha256, rename."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = 0
    with tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=not progress,
              initial=part.stat().st_size if part.exists() else 0) as bar:
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                if _fetch_rest(url, part, bar, timeout_s):
                    break
                log.warning("%s: connection closed early; resuming", url)
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as e:
                log.warning("%s: %s; resuming", url, e)
            after = part.stat().st_size if part.exists() else 0
            failures = 0 if after > before else failures + 1  # only failures without progress count
            if failures > retries:
                raise UserError(f"download of {url} failed {failures} times in a row without progress; "
                                f"rerun to resume from {part}")
            time.sleep(min(30.0, 0.5 * 2 ** failures) if failures else 0.0)
    got = sha256_file(part)
    if got != sha256:
        part.unlink()
        raise UserError(f"{dest.name}: sha256 {got} does not match the published {sha256}; "
                        "the partial file was deleted, rerun to download again")
    part.rename(dest)
    return dest


def download_lichess(month: str, out_dir: Path, *, base_url: str = LICHESS_BASE_URL, progress: bool = True,
                     retries: int = 8) -> Path:
    """Download and verify the standard rated dump of `month` (YYYY-MM) into `out_dir`."""
    name = lichess_name(month)
    dest = out_dir / name
    if dest.exists():
        return dest
    return download(_url(base_url, name), dest, expected_sha256(base_url, name), retries=retries,
                    progress=progress)
