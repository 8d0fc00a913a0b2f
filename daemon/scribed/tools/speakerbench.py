"""Speaker-turn benchmark: synthetic meetings with exact truth -> DER, speaker counts, cost.

Run: ``python -m scribed.tools.speakerbench [--speech DIR] [--meetings N] [--long-minutes M] [--json]``
(the speech folder defaults to ``$SCRIBED_BENCH_SPEECH_DIR``, else ``../shared/data/speech``).

What it measures, all on the production code path (:class:`scribed.engine.speakers.SpeakerFinder`):
- ``N`` meetings each of 2, 3 and 4 speakers drawn (seeded) from :data:`scribed.tools.meetings.VOICES`,
  plus every voice alone: DER (±0.25 s collar) with the speaker count given and with ``auto``, and
  how often ``auto`` finds the right count (one speaker for the single-voice recordings);
- the cost: CPU seconds per audio minute over all of them (``process_time``, all threads), and,
  with ``--long-minutes``, one long recording (meetings joined) timed step by step, with the
  clustering both capped (the default ``max_clustered``) and, when it fits, uncapped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from scribed.engine.speakers import SpeakerFinder, SpeakerOptions, cluster, speech_gain, vote, windows
from scribed.media import segment
from scribed.tools.meetings import VOICES, Meeting, build_meeting, der

SHARED_SPEECH = Path("..") / "shared" / "data" / "speech"


def speech_dir(option: str | None) -> Path:
    path = Path(option or os.environ.get("SCRIBED_BENCH_SPEECH_DIR") or SHARED_SPEECH)
    if not (path / VOICES["jfk"][0]).is_file():
        raise SystemExit(f"speakerbench: the shared speech clips are not in {path} (use --speech DIR)")
    return path


def _score(finder: SpeakerFinder, meeting: Meeting, setting: str | int) -> tuple[float, int, float]:
    start = time.process_time()
    turns = finder.by_voice(meeting.samples, SpeakerOptions.from_setting(setting))
    cpu = time.process_time() - start
    return der(meeting.truth, turns, meeting.duration_s), len({t.speaker for t in turns}), cpu


def _by_size(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"der_known_mean": round(float(np.mean([r["der_known"] for r in rows])), 4),
            "count_auto_right": f"{sum(r['count_auto'] == r['speakers'] for r in rows)}/{len(rows)}"}


def meetings_report(speech: Path, per_count: int, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    names = list(VOICES)
    finder = SpeakerFinder()
    rows: list[dict[str, Any]] = []
    plan = [(rng.sample(names, n), s) for n in (2, 3, 4) for s in range(per_count)] + [([n], 0) for n in names]
    cpu = audio = 0.0
    for voices, s in plan:
        meeting = build_meeting(speech, voices, seed=s)
        audio += meeting.duration_s
        row: dict[str, Any] = {"speakers": len(voices), "voices": voices, "seconds": round(meeting.duration_s, 1)}
        for name, setting in (("known", len(voices)), ("auto", "auto")):
            if name == "known" and len(voices) == 1:
                continue
            error, found, spent = _score(finder, meeting, setting)
            cpu += spent
            row[f"der_{name}"] = round(error, 4)
            row[f"count_{name}"] = found
        rows.append(row)
    multi = [r for r in rows if r["speakers"] > 1]
    single = [r for r in rows if r["speakers"] == 1]
    return {
        "meetings": len(multi), "single_voice": len(single), "audio_minutes": round(audio / 60, 2),
        "der_known_mean": round(float(np.mean([r["der_known"] for r in multi])), 4),
        "der_known_max": round(float(np.max([r["der_known"] for r in multi])), 4),
        "der_auto_mean": round(float(np.mean([r["der_auto"] for r in multi])), 4),
        "count_auto_right": f"{sum(r['count_auto'] == r['speakers'] for r in multi)}/{len(multi)}",
        "single_voice_one_speaker": f"{sum(r['count_auto'] == 1 for r in single)}/{len(single)}",
        "by_size": {n: _by_size([r for r in multi if r["speakers"] == n]) for n in (2, 3, 4)},
        "cpu_s_per_audio_minute": round(cpu / (audio / 60) / 2, 3),  # two runs (known, auto) per meeting
        "rows": rows,
    }


def long_report(speech: Path, minutes: float, uncapped: bool) -> dict[str, Any]:
    voices = ["jfk", "kimi-zh", "libritts-1089", "yue-xg0055639"]
    parts, seed, total = [], 0, 0
    while total < minutes * 60 * 16000:
        parts.append(build_meeting(speech, voices, seed=seed).samples)
        total += len(parts[-1])
        seed += 1
    samples = np.concatenate(parts)[: int(minutes * 60 * 16000)]
    del parts
    finder = SpeakerFinder()
    opt = SpeakerOptions.from_setting(4)
    steps: dict[str, float] = {}
    cpu0 = time.process_time()
    t = time.perf_counter()
    regions = segment.find_speech(samples)
    steps["speech_s"] = time.perf_counter() - t
    t = time.perf_counter()
    mels, spans = windows(finder.encoder.features, samples, regions, opt, speech_gain(samples, regions))
    steps["features_s"] = time.perf_counter() - t
    t = time.perf_counter()
    embeddings = finder.encoder.embed(mels)
    steps["embed_s"] = time.perf_counter() - t
    del mels
    weights = np.full(len(spans), opt.hop_s)
    t = time.perf_counter()
    labels = cluster(embeddings, weights, opt)
    steps["cluster_capped_s"] = time.perf_counter() - t
    t = time.perf_counter()
    vote(spans, labels, regions, -(-len(samples) // 160), opt.min_turn_s)
    steps["vote_s"] = time.perf_counter() - t
    cpu = time.process_time() - cpu0
    if uncapped and len(spans) <= 20000:
        t = time.perf_counter()
        cluster(embeddings, weights, dataclasses.replace(opt, max_clustered=len(spans)))
        steps["cluster_uncapped_s"] = time.perf_counter() - t
    return {"minutes": minutes, "windows": len(spans), "clustered": min(len(spans), opt.max_clustered),
            "cpu_s": round(cpu, 1), "cpu_s_per_audio_minute": round(cpu / minutes, 3),
            **{k: round(v, 2) for k, v in steps.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scribed.tools.speakerbench", description=__doc__.split("\n")[0])
    parser.add_argument("--speech", help="folder of the shared speech clips")
    parser.add_argument("--meetings", type=int, default=6, help="meetings per speaker count (2, 3, 4)")
    parser.add_argument("--long-minutes", type=float, default=0.0, help="also time one recording this long")
    parser.add_argument("--uncapped", action="store_true", help="with --long-minutes: time uncapped clustering too")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    speech = speech_dir(args.speech)
    report: dict[str, Any] = {"meetings": meetings_report(speech, args.meetings)}
    if args.long_minutes > 0:
        report["long"] = long_report(speech, args.long_minutes, args.uncapped)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        summary = {k: v for k, v in report["meetings"].items() if k != "rows"}
        print(json.dumps({**summary, **({"long": report["long"]} if "long" in report else {})}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
