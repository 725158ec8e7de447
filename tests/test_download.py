"""Tests for create_data_lists' downloader, against a local HTTP server (never the internet)."""
from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import create_data_lists as cdl
from create_data_lists import DownloadError, download_dataset, download_file, load_data_list


class FileServer:
    """HTTP server on 127.0.0.1 serving in-memory files, with ``Range: bytes=N-`` support.

    ``files`` maps a URL path to bytes; ``requests`` records ``(path, Range header)``;
    ``ignore_range`` makes it answer 200 with the whole file; ``cut`` sends only that many
    bytes of the body (with the full Content-Length) and drops the connection.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.ignore_range = False
        self.cut: int | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut is not None:
                    self.wfile.write(body[: server.cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


def png_bytes(h: int, w: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_full_download_verifies_and_renames(server, tmp_path):
    data = bytes(range(256)) * 4000  # ~1 MB: several read blocks
    server.files["/f.bin"] = data
    dest = download_file(server.url("/f.bin"), tmp_path / "f.bin", md5=md5(data))
    assert dest.read_bytes() == data
    assert not (tmp_path / "f.bin.part").exists()
    assert server.requests == [("/f.bin", None)]
    # an existing file is not fetched again
    download_file(server.url("/f.bin"), tmp_path / "f.bin", md5=md5(data))
    assert len(server.requests) == 1


def test_resume_from_partial_file(server, tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    server.files["/a.zip"] = data
    (tmp_path / "a.zip.part").write_bytes(data[:123_456])
    dest = download_file(server.url("/a.zip"), tmp_path / "a.zip", md5=md5(data))
    assert dest.read_bytes() == data
    assert server.requests == [("/a.zip", "bytes=123456-")]


def test_interrupted_download_keeps_part_and_resumes(server, tmp_path):
    data = np.random.default_rng(1).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    server.files["/b.tar"] = data
    server.cut = 50_000
    with pytest.raises(DownloadError, match="run again"):
        download_file(server.url("/b.tar"), tmp_path / "b.tar", md5=md5(data))
    got = (tmp_path / "b.tar.part").stat().st_size
    assert got == 50_000 and not (tmp_path / "b.tar").exists()
    server.cut = None
    assert download_file(server.url("/b.tar"), tmp_path / "b.tar", md5=md5(data)).read_bytes() == data
    assert server.requests[-1] == ("/b.tar", "bytes=50000-")


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = b"0123456789" * 5000
    server.files["/c.bin"] = data
    server.ignore_range = True
    (tmp_path / "c.bin.part").write_bytes(b"garbage-prefix")
    assert download_file(server.url("/c.bin"), tmp_path / "c.bin", md5=md5(data)).read_bytes() == data


def test_complete_part_file_gets_416_and_is_verified(server, tmp_path):
    data = b"x" * 1000
    server.files["/d.bin"] = data
    (tmp_path / "d.bin.part").write_bytes(data)
    assert download_file(server.url("/d.bin"), tmp_path / "d.bin", md5=md5(data), size=1000).read_bytes() == data


def test_checksum_and_size_mismatch_delete_the_file(server, tmp_path):
    server.files["/e.bin"] = b"payload" * 100
    with pytest.raises(DownloadError, match="md5 .* does not match"):
        download_file(server.url("/e.bin"), tmp_path / "e.bin", md5="0" * 32)
    assert not (tmp_path / "e.bin").exists() and not (tmp_path / "e.bin.part").exists()
    with pytest.raises(DownloadError, match="expected 10"):
        download_file(server.url("/e.bin"), tmp_path / "e.bin", size=10)
    assert not (tmp_path / "e.bin").exists() and not (tmp_path / "e.bin.part").exists()


def test_http_errors_are_clear(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(server.url("/missing.zip"), tmp_path / "m.zip")
    with pytest.raises(DownloadError, match="failed"):
        download_file("http://127.0.0.1:9/nothing.zip", tmp_path / "n.zip", timeout=2)


def test_download_dataset_extracts_layouts_and_is_idempotent(server, tmp_path, monkeypatch, capsys):
    hr = {f"DIV2K_train_HR/{k:04d}.png": png_bytes(96, 100, k) for k in (1, 2)}
    lr = {f"DIV2K_train_LR_bicubic/X4/{k:04d}x4.png": png_bytes(24, 25, 10 + k) for k in (1, 2)}
    bench = {f"benchmark/Set5/HR/{n}.png": png_bytes(40, 44, 20 + i) for i, n in enumerate(["baby", "bird"])}
    bench.update({f"benchmark/Set5/LR_bicubic/X4/{n}x4.png": png_bytes(10, 11, 30 + i) for i, n in enumerate(["baby", "bird"])})
    archives = {"/DIV2K_train_HR.zip": make_zip(hr), "/DIV2K_train_LR_bicubic_X4.zip": make_zip(lr),
                "/benchmark.tar": make_tar(bench)}
    server.files.update(archives)
    table = {
        "div2k": [{"url": server.url(p), "md5": md5(archives[p]), "extract_to": "DIV2K"}
                  for p in ("/DIV2K_train_HR.zip", "/DIV2K_train_LR_bicubic_X4.zip")],
        "benchmark": [{"url": server.url("/benchmark.tar"), "md5": md5(archives["/benchmark.tar"]), "extract_to": "."}],
    }
    monkeypatch.setattr(cdl, "DOWNLOADS", table)
    root = tmp_path / "data"
    download_dataset("div2k", root)
    download_dataset("benchmark", root)
    assert sorted(p.name for p in (root / "DIV2K" / "DIV2K_train_HR").iterdir()) == ["0001.png", "0002.png"]
    assert (root / "DIV2K" / "DIV2K_train_LR_bicubic" / "X4" / "0002x4.png").read_bytes() == lr["DIV2K_train_LR_bicubic/X4/0002x4.png"]
    assert (root / "benchmark" / "Set5" / "HR" / "bird.png").is_file()
    assert not list((root / "downloads").glob("*.zip"))  # archives removed after extraction
    n_requests = len(server.requests)
    download_dataset("div2k", root)  # already extracted: no network
    assert len(server.requests) == n_requests
    assert "already extracted" in capsys.readouterr().out

    # the extracted layouts are recognised, shipped LR files used
    monkeypatch.chdir(tmp_path)
    assert cdl.main(["--root", "data"]) == 0
    train = load_data_list(root / "lists" / "train.json")["images"]
    assert [Path(i["lr"]).name for i in train] == ["0001x4.png", "0002x4.png"]
    set5 = load_data_list(root / "lists" / "Set5.json")["images"]
    assert [Path(i["lr"]).name for i in set5] == ["babyx4.png", "birdx4.png"]


def test_cli_download_reports_failure(server, tmp_path, monkeypatch, capsys):
    server.files["/bad.zip"] = make_zip({"x.png": png_bytes(8, 8, 0)})
    monkeypatch.setattr(cdl, "DOWNLOADS", {"div2k": [{"url": server.url("/bad.zip"), "md5": "f" * 32, "extract_to": "DIV2K"}]})
    assert cdl.main(["--download", "div2k", "--root", str(tmp_path)]) == 1
    assert "does not match" in capsys.readouterr().err


def test_archive_escaping_root_is_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    evil.write_bytes(make_zip({"../outside.txt": b"nope"}))
    with pytest.raises(DownloadError, match="outside"):
        cdl.extract_archive(evil, tmp_path / "dest")
    assert not (tmp_path / "outside.txt").exists()
