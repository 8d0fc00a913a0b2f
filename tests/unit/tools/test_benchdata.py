"""Tests for scribed.tools.benchdata: inputs found without the source tree, reproducible recordings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from scribed.errors import ModelError
from scribed.tools import benchdata


def _tokenizer_copy(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in benchdata.TOKENIZER_FILES:
        shutil.copy(src / name, dest / name)
    return dest


def test_tokenizer_option_then_environment_then_shared_beside_the_current_directory(
        tmp_path: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCRIBED_TOKENIZER_DIR", raising=False)
    work = tmp_path / "anywhere" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # as after `pip install scribed` in some project folder
    with pytest.raises(ModelError, match="--tokenizer"):
        benchdata.tokenizer_dir()
    shared = _tokenizer_copy(tokenizer_dir, tmp_path / "anywhere" / benchdata.SHARED_TOKENIZER.relative_to(".."))
    assert benchdata.tokenizer_dir() == shared.resolve()  # last resort: ../shared relative to the cwd
    from_env = _tokenizer_copy(tokenizer_dir, tmp_path / "env")
    monkeypatch.setenv("SCRIBED_TOKENIZER_DIR", str(from_env))
    assert benchdata.tokenizer_dir() == from_env.resolve()
    option = _tokenizer_copy(tokenizer_dir, tmp_path / "option")
    assert benchdata.tokenizer_dir(option) == option.resolve()
    with pytest.raises(ModelError, match=str(tmp_path / "missing")):  # an explicit choice is never second-guessed
        benchdata.tokenizer_dir(tmp_path / "missing")


def test_the_module_has_no_source_tree_paths() -> None:
    import inspect

    from scribed.tools import bench

    for module in (bench, benchdata):
        assert "__file__" not in inspect.getsource(module)


def test_random_checkpoints_are_built_once_per_size_and_dtype(tmp_path: Path, tokenizer_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path, built = benchdata.random_checkpoint("tiny", tokenizer_dir, "bfloat16")
    assert built is not None and built > 0 and "tiny-bfloat16-tf" in path.name
    assert json.loads((path / "config.json").read_text())["dtype"] == "bfloat16"
    again, rebuilt = benchdata.random_checkpoint("tiny", tokenizer_dir, "bfloat16")
    assert again == path and rebuilt is None
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporaries left


def test_speech_clips_from_a_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "speech"
    (folder / "en").mkdir(parents=True)
    sf.write(folder / "en" / "a.wav", np.full(8000, 0.1, np.float32), 16000)
    (folder / "manifest.jsonl").write_text(json.dumps({"file": "speech/en/a.wav"}) + "\n"
                                           + json.dumps({"file": "speech/en/missing.wav"}) + "\n")
    monkeypatch.setenv("SCRIBED_BENCH_SPEECH_DIR", str(folder))
    (clip,) = benchdata.speech_clips()
    assert clip.size == 8000
    assert benchdata.speech_clips(tmp_path / "nothing") == []


def test_recordings_have_the_requested_length_and_are_reproducible() -> None:
    clips = [np.full(16000, 0.1, dtype=np.float32)]
    a = benchdata.make_recording(7.5, clips, seed=3)
    assert a.dtype == np.float32 and a.size == 7.5 * 16000
    assert np.array_equal(a, benchdata.make_recording(7.5, clips, seed=3))
    synthetic = benchdata.make_recording(20.0, [], seed=3)  # no clips on disk: speech-like noise
    assert synthetic.size == 20 * 16000 and 0 < np.abs(synthetic).max() <= 1


def test_write_wav_round_trips(tmp_path: Path) -> None:
    samples = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
    path = benchdata.write_wav(tmp_path / "x.wav", samples)
    back, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and np.allclose(back, samples, atol=1e-4)
