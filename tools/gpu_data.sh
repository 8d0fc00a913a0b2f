#!/usr/bin/env bash
# What tools/gpu_check.sh needs on a lent GPU machine (Python 3.12, CUDA torch, no network),
# prepared here into two git-ignored folders that the device tool carries (64 MiB in all):
#   .whl/      wheels of the packages that machine lacks or has too old (installed with --no-deps)
#   .devdata/  shared/data/models/<tokenizer>, shared/data/speech as 16 kHz FLAC (its soundfile
#              reads them; PyAV's 40 MB wheel stays behind) and the tests' tiny checkpoint with
#              float16 weights (half the size; the same transcripts) and a gzipped tokenizer.json.
# Run from the repository root with the project's venv, after the test suite has built its fixture.
set -euo pipefail
py=${PY:-.venv/bin/python}
shared=${SHARED:-../shared/data}
cache=${SCRIBED_TEST_CACHE:-$HOME/.cache/scribed-tests}
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.whl/' "$exclude" 2>/dev/null || printf '/.whl/\n/.devdata/\n' >>"$exclude"

rm -rf .whl .devdata
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    transformers==5.25.0 huggingface_hub==2.4.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 \
    tomlkit==0.15.3 regex==2026.11.19 soundfile==0.14.0 soxr==1.1.0 librosa==0.11.0 audioread==3.1.0 \
    decorator==5.3.1 pooch==1.9.0 platformdirs==4.14.9 watchdog==7.1.1 loguru==0.7.3 jeepney==0.9.0

mkdir -p .devdata/shared/data/models .devdata/shared/data/speech .devdata/fixtures
cp -r "$shared/models/qwen3-asr-0.6b-nonweights" .devdata/shared/data/models/
fixture=$(ls -d "$cache"/tiny-asr-v*-tf5.25.0 | tail -1)
"$py" - "$shared/speech" .devdata/shared/data/speech "$fixture" .devdata/fixtures <<'PY'
import json, shutil, sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from scribed.media.audio import decode_audio

src, dst, fixture, fixtures = (Path(a) for a in sys.argv[1:])
entries = []
for line in (src / "manifest.jsonl").read_text().splitlines():
    entry = json.loads(line)
    name = entry["file"].replace("/", "_").rsplit(".", 1)[0] + ".flac"
    sf.write(dst / name, np.clip(decode_audio(src.parent / entry["file"]).samples, -1, 1), 16000, subtype="PCM_16")
    entry.update(file=f"speech/{name}", format="FLAC/PCM_16", sample_rate=16000, channels=1)
    entries.append(json.dumps(entry, ensure_ascii=False))
(dst / "manifest.jsonl").write_text("\n".join(entries) + "\n")
out = fixtures / fixture.name
out.mkdir()
for f in fixture.iterdir():
    if f.name not in ("model.safetensors", "tokenizer.json"):
        shutil.copy(f, out / f.name)
weights = load_file(fixture / "model.safetensors")
save_file({k: v.half() if v.dtype == torch.float32 else v for k, v in weights.items()}, out / "model.safetensors",
          metadata={"format": "pt"})
PY
gzip -c "$fixture/tokenizer.json" >.devdata/fixtures/tokenizer.json.gz
du -sh .whl .devdata
