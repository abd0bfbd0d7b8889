#!/usr/bin/env bash
# The embedding stores of DL19's BM25 top-100 candidates (4,297 passages) that are committed under stores/ so the
# quick profile need not encode them; every use checks the store's fingerprint against the model it serves.
#   stores/dl19.mpnet        all-mpnet-base-v2 (the passage side of the asymmetric students and the
#                            sentence-transformers peer), through ONNX Runtime (float32; the same vectors as
#                            PyTorch to 1e-3 per component, checked at export): 828 s on this 2-core CPU
#   stores/dl19.twinbert-v2  student v2's own passage tower (float16)
#   stores/dl19.minilm       all-MiniLM-L6-v2 (the sentence-transformers MiniLM peer and the MiniLM bi-encoder;
#                            float16)
#
# Usage: bash scripts/committed_stores.sh [--data DIR] [--out DIR]   (default: stores/, each store replaced)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data OUT=stores MODELS= RUNS=
OPTIONS="data out"
source scripts/lib.sh
DL19=(--collection "$MS/passages/dl19.tsv" --candidates "$MS/runs/bm25.dl19.top100.trec")
build() {  # build NAME ENCODE_OPTIONS...: $OUT/NAME, built beside and swapped in when complete
    local name=$1
    shift
    rm -rf "$OUT/$name.new"
    rank encode --no-windows "$@" "${DL19[@]}" --store "$OUT/$name.new"
    rm -rf "${OUT:?}/$name" && mv "$OUT/$name.new" "$OUT/$name" && rm -f "$OUT/.$name.new.lock"
}
rank models fetch mpnet >/dev/null
build dl19.mpnet --encoder biencoder --model mpnet --backend onnx --threads 2
build dl19.twinbert-v2 --model models/twinbert-v2
build dl19.minilm --encoder biencoder --model minilm
