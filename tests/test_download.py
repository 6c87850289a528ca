"""Download: resume after a dropped connection, sha256 check, against a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chessdt import cli
from chessdt.data.download import download_lichess, lichess_name
from chessdt.errors import UserError

MONTH = "2013-01"
NAME = lichess_name(MONTH)
BODY = bytes(range(256)) * 4000  # ~1 MB


class _Server(http.server.ThreadingHTTPServer):
    body = BODY
    published = hashlib.sha256(BODY).hexdigest()
    drop_after: int | None = 300_000  # first full request dies after this many bytes
    requests: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append(self.headers.get("Range", "full"))
        if self.path.endswith("sha256sums.txt"):
            text = f"{'0' * 64}  other.pgn.zst\n{srv.published}  {NAME}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
            return
        if not self.path.endswith(NAME):
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if "Range" in self.headers else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(srv.body) - 1}/{len(srv.body)}")
        self.send_header("Content-Length", str(len(srv.body) - start))
        self.end_headers()
        if srv.drop_after is not None:
            cut, srv.drop_after = srv.drop_after, None
            self.wfile.write(srv.body[start:cut])
            self.wfile.flush()
            self.connection.shutdown(2)  # drop the connection mid-file
            return
        self.wfile.write(srv.body[start:])


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.requests = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _base(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/standard/"


def test_resume_after_dropped_connection(server: _Server, tmp_path: Path) -> None:
    path = download_lichess(MONTH, tmp_path, base_url=_base(server), progress=False)
    assert path == tmp_path / NAME and path.read_bytes() == BODY
    assert not (tmp_path / (NAME + ".part")).exists()
    assert "bytes=300000-" in server.requests  # the second request resumed where the first broke


def test_cli_resumes_existing_part(server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server.drop_after = None
    (tmp_path / (NAME + ".part")).write_bytes(BODY[:1000])
    rc = cli.main(["games", "download", "lichess", MONTH, "--out", str(tmp_path), "--base-url", _base(server), "-q"])
    assert rc == 0 and "verified" in capsys.readouterr().out
    assert (tmp_path / NAME).read_bytes() == BODY and server.requests[-1] == "bytes=1000-"


def test_checksum_mismatch_deletes_part(server: _Server, tmp_path: Path) -> None:
    server.drop_after = None
    server.published = "f" * 64
    with pytest.raises(UserError, match="does not match"):
        download_lichess(MONTH, tmp_path, base_url=_base(server), progress=False)
    assert not list(tmp_path.iterdir())


def test_bad_month_and_unlisted(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="YYYY-MM"):
        lichess_name("2013-13")
    with pytest.raises(UserError, match="no checksum"):
        download_lichess("2014-02", tmp_path, base_url=_base(server), progress=False)
