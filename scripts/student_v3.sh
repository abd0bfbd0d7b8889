#!/usr/bin/env bash
# Student v3 (issue 30), the part built so far: the asymmetric TwinBERT's query tower aligned on the 48,794 MS MARCO
# training queries (dataset msmarco-train, text alone) besides the distillation queries, validated on the 27
# held-out DL20/DL21 queries (BM25 depth 50). The start: mpnet's own first k layers (its embeddings, frozen; mean
# pooling as the weighted pooling's start), a 768 -> 768 projection started at the ridge-regression map to mpnet's
# vectors (the linear probe of the issue), cosine loss (the cos crossing reads direction alone).
# The targets (all-mpnet-base-v2's vectors of every text) are computed once into a cache keyed by text hash that
# every run shares. Then the aligned tower reranks DL19's BM25 top-100 against the mpnet store.
#
# Usage: bash scripts/student_v3.sh [--data DIR] [--out DIR] [--runs DIR] [--steps N] [--layers K]
#   --out     stores (shared with scripts/student_v2.sh's layout), targets, run folders (default work/v2)
#   --runs    where the DL19 runs go (default OUT/runs)
# Run time on the 2-core CPU (measured in pieces, on a CPU shared with other work; docs/student-experiments.md):
# mpnet stores of the validation and DL19 candidates ~25 + ~40 min, targets ~50 min, alignment 16 min.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data OUT=work/v2 MODELS= RUNS= STEPS=1200 LAYERS="1"
OPTIONS="data out runs steps layers"
source scripts/lib.sh
mkdir -p "$RUNS"
rank models fetch mpnet
S=$OUT/stores V=$OUT/validation T=$OUT/targets-v3
step() { echo "== $* ($(( $(date +%s) - start )) s)"; }
made() { [ -f "$1" ] && [ -f "$1.json" ]; }

step "validation queries; mpnet stores of their candidates and of DL19's BM25 candidates"
[ -d "$V" ] || rank datasets validation --data "$DATA" --output "$V"
[ -f "$S/msmarco-val.mpnet/ranker.json" ] || rank encode --encoder biencoder --model mpnet --store "$S/msmarco-val.mpnet" \
    --collection "$MS/passages/dl20.tsv" --collection "$MS/passages/dl21.tsv" --candidates "$V/msmarco.bm25.trec"
[ -f "$S/dl19.mpnet/ranker.json" ] || rank encode --encoder biencoder --model mpnet --store "$S/dl19.mpnet" \
    --collection "$MS/passages/dl19.tsv" --candidates "$MS/runs/bm25.dl19.top100.trec"

ALIGN=(--doc-store "$S/msmarco-val.mpnet" --doc-encoder mpnet --sets dl20 --sets dl21 --sets dl22 --sets dl23
       --sets dev600 --query-set msmarco-train --sentences 0 --targets "$T" --query-max-length 64
       --max-steps "$STEPS" --eval-every 200 --threads 1 --data "$DATA")
step "align: mpnet's first $LAYERS layer(s), ridge-started projection, cosine loss"
rank align --output "$OUT/align-v3" "${ALIGN[@]}" --encoder mpnet --num-layers "$LAYERS" --proj-dim 768 \
    --freeze-embeddings --loss cosine

step "DL19: the aligned tower over the mpnet store (int8 ONNX query tower, the default backend)"
made "$RUNS/twinbert-v3-aligned.dl19.trec" || rank run --topics "$MS/topics/dl19.tsv" \
    --candidates "$MS/runs/bm25.dl19.top100.trec" --reranker twinbert --model "$OUT/align-v3/model" \
    --store "$S/dl19.mpnet" --output "$RUNS/twinbert-v3-aligned.dl19.trec"
rank agreement --model "$OUT/align-v3/model" --topics "$MS/topics/dl19.tsv" --topics "$MS/topics/dl20.tsv"
echo "== done ($(( $(date +%s) - start )) s)"
