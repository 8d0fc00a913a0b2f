#!/usr/bin/env bash
# scribed on a lent GPU machine in one call: the CUDA tests, then `scribed bench` on the GPU.
#
#   tools/gpu_data.sh                      # here, once: .whl/ and .devdata/ (both git-ignored)
#   tools/gpu_check.sh [tests] [SIZE[:BATCH]...]   # there, from the repository root
#
# SIZE is 0.6b or 1.7b, BATCH a model.batch_size (default: the config's). Every step runs under
# its own time limit and the next one runs whatever happened, so one failure still leaves the
# other figures. Logs and JSON reports go to $OUT (the device tool's folder) or /tmp/gpu-out.
# The bench lengths can be changed through SCRIBED_BENCH_* as for any bench run.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
started=$SECONDS

# Packages the machine lacks (or has too old), carried as wheels; they shadow its own.
# (PY, SKIP_INSTALL and BENCH_DEVICE=cpu let the script be tried out on a machine without a GPU.)
PY=${PY:-python3}
if [ -z "${SKIP_INSTALL:-}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl >"$OUT/pip.log" 2>&1 || { tail -20 "$OUT/pip.log"; exit 1; }
fi
export PYTHONPATH=/tmp/site:$PWD/daemon

data=$PWD/.devdata
[ -e ../shared ] || ln -s "$data/shared" ../shared  # where the tests look for the shared data
fixture=$(ls -d "$data"/fixtures/tiny-asr-v*/ | head -1)
[ -f "${fixture}tokenizer.json" ] || gunzip -c "$data/fixtures/tokenizer.json.gz" >"${fixture}tokenizer.json"
export SCRIBED_TEST_CACHE=$data/fixtures
export SCRIBED_TOKENIZER_DIR=$data/shared/data/models/qwen3-asr-0.6b-nonweights
export SCRIBED_BENCH_SPEECH_DIR=$data/shared/data/speech
export SCRIBED_BENCH_DURATIONS=${SCRIBED_BENCH_DURATIONS:-memo=60,long=600,backlog=300}
export SCRIBED_BENCH_MEMORY=${SCRIBED_BENCH_MEMORY:-lengths=600,3600;backlogs=32;each=60}
export SCRIBED_BENCH_STEPS=${SCRIBED_BENCH_STEPS:-batches=1,16,64}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
    "$PY" -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "torch", torch.__version__,
"transformers", transformers.__version__, "cuda", torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())'
    nproc
} 2>&1 | tee "$OUT/machine.txt"

for step in "$@"; do
    if [ "$step" = tests ]; then
        timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/unit/engine/test_cuda.py \
            >"$OUT/tests.log" 2>&1
        echo "== tests: exit $? ($((SECONDS - started)) s so far)"
        tail -15 "$OUT/tests.log"
        continue
    fi
    size=${step%%:*}
    batch=()
    [ "$step" != "$size" ] && batch=(--batch-size "${step#*:}")
    name="bench-${size}${batch:+-b${step#*:}}"
    timeout "${BENCH_LIMIT_S:-400}" "$PY" -c 'import sys; from scribed.cli import main; sys.exit(main(sys.argv[1:]))' \
        bench --json --device "${BENCH_DEVICE:-cuda}" --sizes "$size" --backlog "${BENCH_BACKLOG:-8}" "${batch[@]}" \
        >"$OUT/$name.json" 2>"$OUT/$name.log"
    echo "== $name: exit $? ($((SECONDS - started)) s so far)"
    grep -vE ' transcribed ' "$OUT/$name.log" | sed -E 's/^[0-9-]+ ([0-9:]+) +[A-Z]+ +scribed\[[0-9]+\] /\1 /' | tail -30
done
