"""Tests for scribed.engine.models: offline resolution, the local cache listing, and ``model pull``'s
failures (the Hub unreachable, an empty network namespace, a bad id, a fake Hub on loopback)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scribed.engine import models
from scribed.errors import ModelError

REPO = Path(__file__).resolve().parents[3]


def _fake_cache(cache: Path, repo_id: str, model_type: str, weights: bytes = b"w" * 1000) -> Path:
    """A Hugging Face hub cache layout holding one snapshot of ``repo_id``."""
    org, name = repo_id.split("/")
    root = cache / f"models--{org}--{name}"
    rev = "0123456789abcdef0123456789abcdef01234567"
    snap = root / "snapshots" / rev
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(rev)
    (root / "blobs").mkdir()
    files = {"config.json": json.dumps({"model_type": model_type}).encode(), "model.safetensors": weights}
    for fname, data in files.items():
        blob = root / "blobs" / f"{abs(hash((repo_id, fname))):x}"
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snap), snap / fname)
    return snap


def test_a_model_folder_resolves_to_itself(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert models.resolve_model(str(tmp_path)) == tmp_path.resolve()


@pytest.mark.parametrize(("make", "says"), [
    (lambda d: d.mkdir(), "holds no model"),
    (lambda d: None, "does not exist"),
])
def test_bad_folders_are_clear_errors(tmp_path: Path, make, says: str) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "m"
    make(folder)
    with pytest.raises(ModelError, match=says):
        models.resolve_model(str(folder))


def test_a_cached_hub_id_resolves_offline(tmp_path: Path) -> None:
    snap = _fake_cache(tmp_path, "Qwen/Qwen3-ASR-0.6B-hf", "qwen3_asr")
    assert models.resolve_model("Qwen/Qwen3-ASR-0.6B-hf", tmp_path) == snap


def test_an_uncached_hub_id_names_the_pull_command(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"(?s)scribed never downloads.*scribed model pull Qwen/Qwen3-ASR-1\.7B-hf"):
        models.resolve_model("Qwen/Qwen3-ASR-1.7B-hf", tmp_path)


def test_list_models_finds_only_asr_checkpoints(tmp_path: Path) -> None:
    _fake_cache(tmp_path, "Qwen/Qwen3-ASR-0.6B-hf", "qwen3_asr")
    _fake_cache(tmp_path, "someone/other-model", "llama")
    (found,) = models.list_models(tmp_path)
    assert found.id == "Qwen/Qwen3-ASR-0.6B-hf" and found.size_bytes > 0 and (found.path / "config.json").is_file()
    assert models.list_models(tmp_path / "nothing-here") == []


def test_no_torch_is_imported_for_model_listing() -> None:
    code = "import sys, scribed.engine.models as m; m.list_models(); sys.exit('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(REPO / "daemon"), HF_HOME=str(REPO / ".pytest_cache" / "no-hf"))
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_known_models_are_the_released_checkpoints() -> None:
    assert models.KNOWN_MODELS == ("Qwen/Qwen3-ASR-0.6B-hf", "Qwen/Qwen3-ASR-1.7B-hf")


# -- scribed model pull: the one network use; never the real network here ---------------------------


def _pull(tmp_path: Path, *args: str, prefix: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    if not config.exists():
        config.write_text(f"model:\n  cache_dir: '{tmp_path / 'cache'}'\n")
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "daemon"), "HF_HOME": str(tmp_path / "hf"), **env}
    return subprocess.run([*prefix, sys.executable, "-m", "scribed.cli", "model", "pull", "-c", str(config), *args],
                          capture_output=True, text=True, env=full_env, timeout=120)


def _only_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("scribed:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Got:" not in proc.stderr and "An error happened" not in proc.stderr
    return lines[0]


def _no_network_namespace() -> tuple[str, ...]:
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("no unprivileged network namespaces here (unshare -rn)")
    return (unshare, "-rn")


def test_pull_with_the_hub_unreachable_is_one_line_and_exit_1(tmp_path: Path) -> None:
    proc = _pull(tmp_path, HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens on the discard port
    assert proc.returncode == 1
    line = _only_line(proc)
    assert line.startswith("scribed: cannot reach the Hugging Face Hub at http://127.0.0.1:9 to download "
                           "Qwen/Qwen3-ASR-0.6B-hf (")
    assert line.endswith("check the network connection or the proxy settings (HTTPS_PROXY), then run this again")


def test_pull_in_an_empty_network_namespace_is_one_line_and_exit_1(tmp_path: Path) -> None:
    proc = _pull(tmp_path, "Qwen/Qwen3-ASR-1.7B-hf", prefix=_no_network_namespace())
    assert proc.returncode == 1
    assert _only_line(proc).startswith("scribed: cannot reach the Hugging Face Hub at https://huggingface.co to "
                                       "download Qwen/Qwen3-ASR-1.7B-hf (")


def test_pull_of_a_malformed_id_is_one_line(tmp_path: Path) -> None:
    proc = _pull(tmp_path, "Qwen/not an id", HF_ENDPOINT="http://127.0.0.1:9")
    assert proc.returncode == 1
    assert _only_line(proc) == ("scribed: 'Qwen/not an id' is not a valid model id: expected OWNER/NAME (letters, "
                                "digits, '-', '_', '.'), e.g. Qwen/Qwen3-ASR-0.6B-hf")
    assert "downloading" not in proc.stderr


# The fake Hub runs in its own process: this test process may already carry scribed's
# (irreversible) in-process network guard from an earlier in-process transcription.
_NO_SUCH_REPO = """
import http.server, sys

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()
    do_HEAD = do_GET
    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_port, flush=True)
server.serve_forever()
"""


def test_pull_of_an_id_the_hub_does_not_have_names_the_known_models(tmp_path: Path) -> None:
    hub = subprocess.Popen([sys.executable, "-c", _NO_SUCH_REPO], stdout=subprocess.PIPE, text=True)
    try:
        port = int(hub.stdout.readline())  # type: ignore[union-attr]
        proc = _pull(tmp_path, "Qwen/Qwen3-ASR-9B-hf", HF_ENDPOINT=f"http://127.0.0.1:{port}")
    finally:
        hub.kill()
        hub.wait(30)
        hub.stdout.close()  # type: ignore[union-attr]
    assert proc.returncode == 1
    assert _only_line(proc) == (f"scribed: there is no model 'Qwen/Qwen3-ASR-9B-hf' on the Hub at "
                                f"http://127.0.0.1:{port} (or it is private); Qwen3-ASR models: "
                                "Qwen/Qwen3-ASR-0.6B-hf, Qwen/Qwen3-ASR-1.7B-hf")


def test_pull_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("model:\n  idd: x\n")
    proc = _pull(tmp_path, HF_ENDPOINT="http://127.0.0.1:9")
    assert proc.returncode == 2
    assert proc.stderr.startswith("scribed: 1 configuration problem(s)") and "downloading" not in proc.stderr


def test_disk_and_unknown_failures_are_one_line(tmp_path: Path) -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    assert models.describe_pull_failure("a/b", full, "https://hub", tmp_path) == (
        f"no space left for a/b in the cache ({tmp_path}); free some space, then run this again")
    odd = RuntimeError("first line\nsecond line")
    said = models.describe_pull_failure("a/b", odd, "https://hub", None)
    assert said == "could not download a/b: RuntimeError: first line"
