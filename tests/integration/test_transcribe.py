"""`scribed transcribe` through the real transformers Qwen3-ASR code path with the trained tiny model.

The model class is never mocked: the fixture checkpoint is a real Qwen3ASRForConditionalGeneration
trained to answer "hello world" (auto/English) and "你好世界" (forced Chinese).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import SHARED, speech_manifest
from scribed.cli import main

SR = 16000


def _config(tmp_path: Path, model: Path, **sections: dict) -> Path:
    import yaml

    data = {"model": {"id": str(model), "device": "cpu", "batch_size": 8}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def _clip(rel: str) -> np.ndarray:
    from scribed.media.audio import decode_audio

    return decode_audio(SHARED / rel).samples


def test_every_shared_recording_gets_all_formats(tiny_model: Path, speech_dir: Path, tmp_path: Path) -> None:
    copies = []
    for entry in speech_manifest():
        dest = tmp_path / entry["file"].replace("/", "__")
        shutil.copy(SHARED / entry["file"], dest)
        copies.append(dest)
    # Formats the shared set lacks (phone memos, video), made here with PyAV.
    av = pytest.importorskip("av")
    memo = tmp_path / "iphone memo.m4a"
    with av.open(str(memo), "w", format="mp4") as box:
        stream = box.add_stream("aac", rate=SR)
        stream.layout = "mono"
        samples = _clip("speech/en-jfk/jfk.flac")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = SR
        for packet in stream.encode(frame):
            box.mux(packet)
        for packet in stream.encode(None):
            box.mux(packet)
    copies.append(memo)
    config = _config(tmp_path, tiny_model)
    before = {p: p.read_bytes() for p in copies}
    assert main(["transcribe", "--config", str(config), "--format", "txt,srt,vtt,json", *map(str, copies)]) == 0
    from scribed.output import output_paths

    for src in copies:
        out = output_paths(src, ["txt", "srt", "vtt", "json"])
        txt = out["txt"].read_text()
        assert "hello world" in txt, src
        data = json.loads(out["json"].read_text())
        assert data["source"] == src.name and data["language"] == "en"
        assert data["model"] == str(tiny_model)
        assert data["duration_s"] > 0
        for seg in data["segments"]:
            assert 0 <= seg["start"] < seg["end"] <= data["duration_s"] + 0.01
            assert seg["text"] == "hello world" and seg["language"] == "en"
        assert out["srt"].read_text().startswith("1\n00:00:")
        assert out["vtt"].read_text().startswith("WEBVTT")
        assert src.read_bytes() == before[src], "a recording was modified"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers
    # Same stem, two formats: each keeps its own transcript.
    assert (tmp_path / "speech__en-jfk__jfk.flac").exists()
    assert output_paths(tmp_path / "speech__en-jfk__jfk.flac", ["txt"])["txt"].name.endswith("jfk.flac.txt")


def _trim(clip: np.ndarray) -> np.ndarray:
    """Cut a clip's own leading/trailing quiet (30 dB under its loudest 50 ms), so the clip
    spans below are where sound is."""
    frames = clip[: len(clip) // 160 * 160].reshape(-1, 160)
    power = np.convolve(np.mean(frames**2, axis=1), np.ones(5) / 5, mode="same")
    db = 10 * np.log10(power + 1e-12)
    loud = np.flatnonzero(db > db.max() - 30)
    return clip[loud[0] * 160:(loud[-1] + 1) * 160]


def _long_recording(speech_dir: Path) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """>= 10 minutes of real clips (each shorter than a chunk) separated by known silences."""
    rng = np.random.default_rng(7)
    clips = [_trim(_clip(e["file"])) for e in speech_manifest() if e["duration_s"] < 20]
    parts, spans, t = [], [], 0.0
    gaps = [2.0, 3.5, 5.0, 8.0, 2.5, 600.0 / 8]
    i = 0
    while t < 600 or i < len(clips):
        clip = clips[i % len(clips)]
        gap = gaps[i % len(gaps)]
        silence = (rng.standard_normal(int(gap * SR)) * 1e-4).astype(np.float32)
        parts += [clip, silence]
        spans.append((t, t + len(clip) / SR))
        t += (len(clip) + len(silence)) / SR
        i += 1
    return np.concatenate(parts), spans


def test_long_recording_cuts_land_in_gaps(tiny_model: Path, speech_dir: Path, tmp_path: Path) -> None:
    audio, spans = _long_recording(speech_dir)
    assert len(audio) / SR >= 600
    src = tmp_path / "board meeting.flac"
    sf.write(src, audio, SR)
    config = _config(tmp_path, tiny_model, transcription={"timestamps": True})
    assert main(["transcribe", "--config", str(config), "--format", "json,txt", str(src)]) == 0
    data = json.loads(src.with_suffix(".json").read_text())
    segments = data["segments"]
    assert all(s["end"] - s["start"] <= 30.01 for s in segments)
    # Every cut point lies in a known silence; 0.5 s of a clip's own leading/trailing quiet counts
    # as silence (recordings start and end with a breath of nothing).
    for seg in segments:
        for cut in (seg["start"], seg["end"]):
            inside = [sp for sp in spans if sp[0] + 0.5 < cut < sp[1] - 0.5]
            assert not inside, f"cut at {cut:.2f}s falls inside clip {inside}"
    for a, b in spans:  # no speech lost: every clip's middle lies inside some segment
        mid = (a + b) / 2
        assert any(s["start"] <= mid <= s["end"] for s in segments), f"clip at {a:.1f}s not transcribed"
    # The 75-second silences start new paragraphs, each with its timestamp.
    txt = src.with_suffix(".txt").read_text()
    assert txt.startswith("[00:00:00] hello world")
    assert txt.count("\n\n[") >= 5


def test_truncated_chunks_are_split_then_reported(tiny_model: Path, speech_dir: Path, tmp_path: Path) -> None:
    from loguru import logger

    from scribed.config import load_config
    from scribed.engine.runner import open_pipeline
    from scribed.media.audio import decode_audio

    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="INFO")
    try:
        cfg = load_config(_config(tmp_path, tiny_model))
        # A budget of 2 tokens cannot hold "language English<asr_text>hello world" (5 tokens).
        pipeline = open_pipeline(cfg, tokens_per_s=0.0, base_tokens=2, max_split_depth=2, min_split_s=0.5)
        audio = decode_audio(speech_dir / "zh-kimi" / "asr_example.wav")
        result = pipeline.transcribe({"k": audio})["k"]
    finally:
        logger.remove(sink)
    assert any("hit its token limit; splitting" in m for m in messages)
    assert len(result.segments) >= 4  # one chunk -> halves -> quarters
    assert result.failures and all("length limit" in f.reason for f in result.failures)
    covered = sum(s.end - s.start for s in result.segments)
    assert covered == pytest.approx(sum(f.end - f.start for f in result.failures), abs=0.01)
    assert any("possibly incomplete" in m for m in messages)


def test_forced_language_glossary_and_cjk_joining(tiny_model: Path, speech_dir: Path, tmp_path: Path) -> None:
    clip = _clip("speech/zh-firered/BAC009S0764W0121.wav")  # 4.2 s
    pause = np.zeros(int(1.0 * SR), dtype=np.float32)
    src = tmp_path / "20240521_产品需求会_v2.wav"
    sf.write(src, np.concatenate([clip, pause, clip, pause, clip]), SR)
    config = _config(tmp_path, tiny_model, transcription={"max_chunk_s": 6, "glossary": {"世界": "地球"}})
    assert main(["transcribe", "--config", str(config), "--language", "zh", "--format", "txt,json", str(src)]) == 0
    assert src.with_suffix(".txt").read_text() == "你好地球你好地球你好地球\n"
    data = json.loads(src.with_suffix(".json").read_text())
    assert data["language"] == "zh" and len(data["segments"]) == 3
    # The same audio in English: chunks join with single spaces, glossary matches whole words only.
    config = _config(tmp_path, tiny_model, transcription={"max_chunk_s": 6, "glossary": {"hello": "Hallo",
                                                                                          "wor": "X"}})
    assert main(["transcribe", "--config", str(config), "--language", "en", str(src)]) == 0
    assert src.with_suffix(".txt").read_text() == "Hallo world Hallo world Hallo world\n"


def test_corrupt_files_fail_alone(tiny_model: Path, speech_dir: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.wav"
    shutil.copy(speech_dir / "smoke-firered2s" / "hello_en.wav", good)
    os.chmod(good, 0o640)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.mp3"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    good2 = tmp_path / "good2.mp3"
    shutil.copy(speech_dir / "en-jfk" / "jfk.mp3", good2)
    config = _config(tmp_path, tiny_model)
    code = main(["transcribe", "--config", str(config), str(good), str(empty), str(noise), str(good2)])
    assert code == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "empty.wav" in err and "noise.mp3" in err
    assert good.with_suffix(".txt").read_text() == "hello world\n"
    assert stat.S_IMODE(good.with_suffix(".txt").stat().st_mode) == 0o640
    assert good2.with_suffix(".txt").exists()
    assert not empty.with_suffix(".txt").exists() and not noise.with_suffix(".txt").exists()


def test_missing_model_is_a_clear_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    src = tmp_path / "a.wav"
    sf.write(src, np.zeros(SR, dtype=np.float32), SR)
    config = tmp_path / "c.yaml"
    config.write_text("model: {id: Qwen/Qwen3-ASR-0.6B-hf, cache_dir: %s}\n" % (tmp_path / "hf"))
    assert main(["transcribe", "--config", str(config), str(src)]) == 2
    assert "scribed model pull Qwen/Qwen3-ASR-0.6B-hf" in capsys.readouterr().err


def test_main_process_modules_do_not_import_torch() -> None:
    code = ("import sys, scribed.daemon.service, scribed.cli, scribed.engine.pipeline, scribed.engine.runner,"
            " scribed.daemon.status;"
            "bad=[m for m in ('torch','transformers') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "daemon")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_silence_gets_a_transcript_that_says_so(tiny_model: Path, tmp_path: Path) -> None:
    """A 0.1 s file and 5 minutes of silence: every format says no speech was found (not empty)."""
    blip = tmp_path / "blip.wav"
    sf.write(blip, np.zeros(SR // 10, dtype=np.float32), SR)
    quiet = tmp_path / "quiet.flac"
    sf.write(quiet, (np.random.default_rng(0).standard_normal(300 * SR) * 1e-5).astype(np.float32), SR)
    config = _config(tmp_path, tiny_model)
    assert main(["transcribe", "--config", str(config), "--format", "txt,json,srt,vtt", str(blip), str(quiet)]) == 0
    for src in (blip, quiet):
        assert src.with_suffix(".txt").read_text() == "[scribed: no speech detected]\n"
        data = json.loads(src.with_suffix(".json").read_text())
        assert data["segments"] == [] and data["no_speech"] is True
        srt = src.with_suffix(".srt").read_text()
        assert srt.startswith("1\n00:00:00,000 --> ") and srt.count(" --> ") == 1 and "no speech detected" in srt
        vtt = src.with_suffix(".vtt").read_text()
        assert vtt.startswith("WEBVTT\n\nNOTE ") and "no speech detected" in vtt


def test_a_decompression_bomb_fails_alone_with_the_limit_named(tiny_model: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    bomb = tmp_path / "bomb.flac"
    with sf.SoundFile(bomb, "w", samplerate=8000, channels=1, subtype="PCM_16", format="FLAC") as out:
        for _ in range(12):
            out.write(np.zeros(8000 * 600, np.int16))  # 2 hours of digital silence, a few hundred KB
    good = tmp_path / "good.wav"
    sf.write(good, np.zeros(SR, np.float32), SR)  # any file under the limit gets its transcript
    config = _config(tmp_path, tiny_model, transcription={"max_duration_s": 3600})
    assert main(["transcribe", "--config", str(config), str(bomb), str(good)]) == 1
    err = capsys.readouterr().err
    assert "recording is 2.0 h long; the limit is transcription.max_duration_s = 1 h" in err
    assert not bomb.with_suffix(".txt").exists() and good.with_suffix(".txt").exists()


def test_transcribe_hardens_its_own_process(tiny_model: Path, tmp_path: Path, cli_hardening: list[str]) -> None:
    """Recordings are read in the ``scribed transcribe`` process, so it is hardened as a worker is:
    in a fresh interpreter (the guard is irreversible), after ``main`` no child process starts;
    in this process the call is recorded (conftest) and made before the model is opened."""
    from e2e_helpers import wav

    src = wav(tmp_path / "memo.wav")
    config = _config(tmp_path, tiny_model)
    code = f"""
import subprocess, sys
from scribed.cli import main
rc = main(["transcribe", "--config", {str(config)!r}, {str(src)!r}])
try:
    subprocess.run([sys.executable, "-c", "pass"])
    print(rc, "child started")
except PermissionError:
    print(rc, "child blocked")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "daemon")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-3:] == ["0", "child", "blocked"], proc.stdout
    assert src.with_suffix(".txt").read_text() == "hello world\n"
    assert main(["transcribe", "--config", str(config), str(src)]) == 0 and cli_hardening == ["cli"]
    off = _config(tmp_path, tiny_model, policy={"block_network": False})
    assert main(["transcribe", "--config", str(off), str(src)]) == 0 and cli_hardening == ["cli"]  # not again
