"""Per-folder settings through `scribed run --once`: a real daemon process, the trained tiny model in
its worker. The model answers "hello world" (auto or English) and "你好世界" (Chinese forced), so each
transcript shows which language its recording was transcribed with.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from e2e_helpers import Env, sha, wav


def test_each_recording_gets_its_folders_settings(tiny_model: Path, tmp_path: Path) -> None:
    zh, en, archive, out = tmp_path / "team-zh", tmp_path / "team-en", tmp_path / "archive-zh", tmp_path / "out-en"
    plain = zh / "mixed"  # listed plain, inside the Chinese folder: the innermost entry wins
    env = Env(tmp_path, tiny_model, watch={"folders": [
        {"path": str(zh), "language": "zh", "formats": ["txt", "srt"], "source_after": "archive",
         "archive_dir": str(archive)},
        {"path": str(en), "language": "en", "formats": ["json"], "dir": str(out), "glossary": {"world": "Welt"}},
        str(plain),
    ]})
    try:
        a, b = wav(zh / "a.wav"), wav(zh / "2024" / "b.wav", seed=1)
        c, d = wav(en / "c.wav", seed=2), wav(plain / "d.wav", seed=3)
        sources = {p: sha(p) for p in (a, b, c, d)}

        result = env.run("run", "--once")
        assert result.returncode == 0, result.stderr
        assert env.states() == {"a.wav": "done", "b.wav": "done", "c.wav": "done", "d.wav": "done"}

        # Chinese folder (and its unlisted subfolder): Chinese forced, txt + srt, then archived.
        for rec, folder in ((a, zh), (b, zh / "2024")):
            assert (folder / f"{rec.stem}.txt").read_text() == "你好世界\n"
            assert "你好世界" in (folder / f"{rec.stem}.srt").read_text()
            assert not (folder / f"{rec.stem}.json").exists() and not rec.exists()
            kept = archive / rec.relative_to(zh)
            assert sha(kept) == sources[rec]
        # English folder: English, only json, in its own output folder with its glossary; kept.
        transcript = json.loads((out / "c.json").read_text())
        assert transcript["text"] == "hello Welt" and transcript["language"] == "en"
        assert not (en / "c.txt").exists() and not (out / "c.txt").exists() and sha(c) == sources[c]
        # The plain nested folder: the sections' settings (auto, txt, keep), not the enclosing folder's.
        assert (plain / "d.txt").read_text() == "hello world\n"
        assert not (plain / "d.srt").exists() and sha(d) == sources[d]

        shown = env.run("check-config")
        assert shown.returncode == 0, shown.stderr
        folders = yaml.safe_load(shown.stdout)["watch"]["folders"]
        assert folders[0]["language"] == "zh" and folders[0]["archive_dir"] == str(archive)
        assert folders[1]["dir"] == str(out) and folders[1]["formats"] == ["json"]
        assert folders[2] == str(plain)
    finally:
        env.stop_all()
