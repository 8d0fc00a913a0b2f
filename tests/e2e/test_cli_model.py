"""``scribed model pull`` end to end against a fake Hugging Face Hub on loopback (never the real
network): the trained tiny model is served with the Hub's HTTP API, pulled through a real
pseudo-terminal (the Hub's own progress bars, with scribed's lines whole below them), checked to
load, then listed and resolved offline."""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_progress import ANSI, _read_all

ROOT = Path(__file__).resolve().parents[2]
REPO_ID = "Qwen/Qwen3-ASR-0.6B-hf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_handler(files: dict[str, bytes]) -> type[http.server.BaseHTTPRequestHandler]:
    class Hub(http.server.BaseHTTPRequestHandler):
        """The three Hub endpoints ``snapshot_download`` uses: revision info, file tree, resolve."""

        def _send(self, code: int, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()) -> None:
            self.send_response(code)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            api = f"/api/models/{REPO_ID}/"
            if self.path.startswith(api + "revision/"):
                info = {"id": REPO_ID, "sha": COMMIT, "siblings": [{"rfilename": n} for n in files]}
                return self._send(200, json.dumps(info).encode(), (("Content-Type", "application/json"),))
            if self.path.startswith(api + "tree/"):
                tree = [{"type": "file", "path": n, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                        for n, d in files.items()]
                return self._send(200, json.dumps(tree).encode(), (("Content-Type", "application/json"),))
            resolve = f"/{REPO_ID}/resolve/{COMMIT}/"
            if self.path.startswith(resolve) and self.path[len(resolve):] in files:
                data = files[self.path[len(resolve):]]
                return self._send(200, data, (("ETag", f'"{hashlib.sha256(data).hexdigest()}"'),
                                              ("X-Repo-Commit", COMMIT)))
            return self._send(404, b"", (("X-Error-Code", "EntryNotFound"),))

        do_HEAD = do_GET

        def log_message(self, *args: object) -> None:
            pass

    return Hub


@pytest.fixture
def hub(tiny_model: Path, allow_loopback) -> Iterator[str]:
    files = {p.name: p.read_bytes() for p in tiny_model.iterdir() if p.is_file()}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _hub_handler(files))
    thread = threading.Thread(target=server.serve_forever, name="fake-hub")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_pull_shows_the_hubs_bars_then_whole_lines_and_the_model_is_then_offline(hub: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  cache_dir: '{cache}'\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "daemon"), HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=hub)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "scribed.cli", "model", "pull", "-c", str(config)],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    try:
        screen = _read_all(master, proc).decode("utf-8", "replace")
        proc.wait(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 0, screen
    text = ANSI.sub("", screen).replace("\r\n", "\n")
    shown = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    assert re.search(r"Fetching \d+ files: 100%", text), text  # the Hub's own bar, finished
    ours = [line for line in shown if line.startswith(("downloading ", "downloaded ", "ok: "))]
    assert [line.split()[0] for line in ours] == ["downloading", "downloaded", "ok:"], shown
    assert ours[1].endswith("; checking that it loads...") and ours[2] == f"ok: {REPO_ID} is ready"
    assert not any(("downloaded " in line or "ok: " in line) and not line.startswith(("downloaded", "ok:"))
                   for line in shown), shown  # never drawn onto a bar
    assert "scribed:" not in text
    listed = subprocess.run([sys.executable, "-m", "scribed.cli", "model", "list", "-c", str(config)],
                            capture_output=True, text=True, env={**env, "HF_ENDPOINT": "http://127.0.0.1:9"},
                            timeout=120)
    assert listed.returncode == 0 and listed.stdout.startswith(f"* {REPO_ID} "), listed.stdout + listed.stderr
