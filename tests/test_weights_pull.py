"""``salbench weights pull``: published weights fetched on purpose, checked, written where runs
look; against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import salbench
from salbench.errors import UnknownNameError
from salbench.models import pull as pull_mod
from salbench.models.pull import PullError, pull, source, suffix_hash

ROOT = Path(__file__).resolve().parents[1]


class _Server:
    """Files by path; ``drop`` paths send half their bytes and close the connection."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop: set[str] = set()
        self.requests: list[str] = []
        files, drop, requests = self.files, self.drop, self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                requests.append(self.path)
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in drop else body)
                if self.path in drop:
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture()
def server() -> Iterator[_Server]:
    srv = _Server()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()


def test_sources_are_the_files_salbench_loads():
    src = source("resnet50")
    assert src.url == "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
    assert src.filename == "resnet50-11ad3fa6.pth" and src.sha256 == "11ad3fa6"
    lite = source("timm:efficientnet_lite0")
    assert lite.url.endswith("efficientnet_lite0_ra-37913777.pth")
    assert lite.sha256 == "37913777"
    assert suffix_hash("vgg16-397923af.pth") == "397923af" and suffix_hash("model.pth") is None
    with pytest.raises(UnknownNameError, match="no published weights to pull"):
        source("efficientnet_lite0")


def test_a_good_file_is_written_where_runs_find_it(server, tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = salbench.models.load("resnet18", weights="random")
    buf = io.BytesIO()
    torch.save(net.net.state_dict(), buf)
    body = buf.getvalue()
    server.files["/mirror/r18.pth"] = body
    digest = hashlib.sha256(body).hexdigest()
    out = pull("resnet18", tmp_path / "w", url=f"{server.url}/mirror/r18.pth", sha256=digest,
               say=lambda _: None)
    assert out == tmp_path / "w" / "resnet18-f37072fd.pth"
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["resnet18-f37072fd.pth"]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
    monkeypatch.setenv("SALBENCH_WEIGHTS", str(tmp_path / "w"))
    loaded = salbench.models.load("resnet18")
    for (k, a), b in zip(net.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_a_wrong_hash_is_a_clear_error_and_leaves_nothing(server, tmp_path):
    server.files["/models/resnet18-f37072fd.pth"] = os.urandom(4096)
    target = tmp_path / "w"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "salbench.cli", "weights", "pull", "resnet18",
                          "--to", str(target), "--mirror", server.url],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "does not match the published f37072fd; the file was not kept" in res.stderr
    assert "Traceback" not in res.stderr
    assert server.requests == ["/models/resnet18-f37072fd.pth"]
    assert list(target.iterdir()) == []  # no temporary folder or partial file left


def test_a_dropped_connection_is_retried_then_a_clear_error(server, tmp_path, monkeypatch):
    monkeypatch.setattr(pull_mod, "BACKOFF_S", 0.0)
    body = os.urandom(10000)
    server.files["/w/f.pth"] = body
    server.drop.add("/w/f.pth")
    said: list[str] = []
    with pytest.raises(PullError, match="after 3 attempts"):
        pull("resnet18", tmp_path / "w", url=f"{server.url}/w/f.pth",
             sha256=hashlib.sha256(body).hexdigest(), say=said.append)
    assert server.requests == ["/w/f.pth"] * 3
    assert sum("retry" in s for s in said) == 2
    assert list((tmp_path / "w").iterdir()) == []
    server.drop.clear()  # the server recovers: the same pull succeeds
    out = pull("resnet18", tmp_path / "w", url=f"{server.url}/w/f.pth",
               sha256=hashlib.sha256(body).hexdigest(), say=said.append)
    assert out.read_bytes() == body


def test_bad_requests_name_what_is_missing(tmp_path, monkeypatch, capsys):
    from salbench.cli import main

    monkeypatch.delenv("SALBENCH_WEIGHTS", raising=False)
    assert main(["weights", "pull", "resnet18"]) == 2
    assert "--to DIR_OR_URI, or set SALBENCH_WEIGHTS" in capsys.readouterr().err
    assert main(["weights", "pull", "resnet18", "--to", str(tmp_path), "--url", "x"]) == 2
    assert "--url needs --sha256" in capsys.readouterr().err
    assert main(["weights", "pull", "efficientnet_lite0", "--to", str(tmp_path)]) == 2
    assert "no published weights to pull" in capsys.readouterr().err
