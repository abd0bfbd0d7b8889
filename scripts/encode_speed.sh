#!/usr/bin/env bash
# Passages/s of `rank encode` on all 5,183 SciFact abstracts with the SciFact student: one process on one thread,
# Ray with one worker and with two (one thread each). Usage: bash scripts/encode_speed.sh [--data DIR] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data OUT=work/encode-speed
OPTIONS="data out"
source scripts/lib.sh
rm -rf "$OUT" && mkdir -p "$OUT"
timed() {  # timed NAME ARGS...: one encode, its passages/s
    local name=$1
    shift
    local t0 t1
    t0=$(date +%s.%N)
    rank encode --no-windows --model models/twinbert-scifact --collection "$SF/corpus.jsonl" --store "$OUT/$name" "$@" > /dev/null 2>&1
    t1=$(date +%s.%N)
    awk -v n=5183 -v a="$t0" -v b="$t1" -v name="$name" 'BEGIN {printf "%-22s %6.1f s  %6.1f passages/s\n", name, b - a, n / (b - a)}'
}
timed local-1-thread --threads 1
timed ray-1-worker --engine ray --workers 1 --threads 1
timed ray-2-workers --engine ray --workers 2 --threads 1
cmp "$OUT/local-1-thread/embeddings.npy" "$OUT/ray-2-workers/embeddings.npy" && echo "ray-2-workers store == local store (embeddings.npy)"
# all-mpnet-base-v2 through PyTorch and through ONNX Runtime (float32) on the same 512 DL19 passages and on DL19's
# 43 queries (also int8), two threads, one process: runs/bench-encode.mpnet*.json
rank bench-encode --collection "$MS/passages/dl19.tsv" --model mpnet --passages 512 --threads 2 \
    --output runs/bench-encode.mpnet.json
rank bench-encode --topics "$MS/topics/dl19.tsv" --model mpnet --backend torch --backend onnx --backend onnx-int8 \
    --batch-size 1 --threads 1 --output runs/bench-encode.mpnet-queries.json
