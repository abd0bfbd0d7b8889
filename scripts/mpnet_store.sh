#!/usr/bin/env bash
# all-mpnet-base-v2's embedding store of DL19's BM25 top-100 candidates (4,297 passages), committed as
# stores/dl19.mpnet so the quick profile need not encode it: the passage side of the asymmetric students and the
# sentence-transformers peer. Encoded through ONNX Runtime (float32; the same vectors as PyTorch to 1e-3 per
# component, checked at export); measured 828 s on this 2-core CPU while tests ran beside it.
#
# Usage: bash scripts/mpnet_store.sh [--data DIR] [--out DIR]   (default: stores/dl19.mpnet, replaced)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data OUT=stores MODELS= RUNS=
OPTIONS="data out"
source scripts/lib.sh
rank models fetch mpnet >/dev/null
rm -rf "$OUT/dl19.mpnet.new"
rank encode --encoder biencoder --model mpnet --backend onnx --threads 2 --store "$OUT/dl19.mpnet.new" \
    --collection "$MS/passages/dl19.tsv" --candidates "$MS/runs/bm25.dl19.top100.trec"
rm -rf "$OUT/dl19.mpnet" && mv "$OUT/dl19.mpnet.new" "$OUT/dl19.mpnet"
