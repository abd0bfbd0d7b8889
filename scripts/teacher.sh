#!/usr/bin/env bash
# Reproduce the teacher (issue 8): fine-tune the joint span-cos cross-encoder on every labelled set, rerank the
# held-out validation queries with it and the zero-shot bi-encoder, pick the ensemble's fusion weights there, then
# rerank DL19 and SciFact test (BM25 top-100) with the teacher, the bi-encoder and the ensemble, and evaluate.
#
# Usage: bash scripts/teacher.sh [--data DIR] [--out DIR] [--models DIR] [--runs DIR]
#   --out     training run folder and validation runs (default work/teacher; rerun to resume)
#   --models  where the fp16 teacher and the ensemble descriptions go (default OUT/models; the shipped ones
#             were made with --models models)
#   --runs    where the test runs go (default OUT/runs; the committed ones were made with --runs runs)
# Needs runs/bm25.scifact-test.trec and runs/bm25.scifact-train.trec (scripts/reproduce.sh makes them).
# Run time on the 2-core CPU: see README ("Teacher"); a GPU is used when present.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data OUT=work/teacher MODELS= RUNS=
while [ $# -gt 0 ]; do
    case $1 in
        --data) DATA=$2 ;; --out) OUT=$2 ;; --models) MODELS=$2 ;; --runs) RUNS=$2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift 2
done
MODELS=${MODELS:-$OUT/models} RUNS=${RUNS:-$OUT/runs}
rank() { .venv/bin/rank "$@"; }
MS=$DATA/msmarco-passage SF=$DATA/beir-scifact
start=$(date +%s)

rank train-teacher --output "$OUT" --data "$MS" --layout joint --head span-cos --max-length 160 --lr 2e-5 \
    --max-steps 400 --warmup-steps 40 --eval-every 100 --seed 13 \
    --sets dl20 --sets dl21 --sets dl23 --sets dev600 --sets scifact-train
mkdir -p "$MODELS" "$RUNS" "$OUT/val"
rm -rf "$MODELS/teacher.tmp" && cp -r "$OUT/model" "$MODELS/teacher.tmp"
rm -rf "$MODELS/teacher" && mv "$MODELS/teacher.tmp" "$MODELS/teacher"
echo "== teacher trained: $(( $(date +%s) - start )) s"

# collection name -> passage text of its validation candidates
declare -A TEXT=([msmarco]="--collection $MS/passages/dl20.tsv --collection $MS/passages/dl21.tsv"
                 [scifact]="--collection $SF/corpus.jsonl")
V=$OUT/validation
for c in msmarco scifact; do
    # shellcheck disable=SC2086
    rank run --topics "$V/$c.topics.tsv" --candidates "$V/$c.bm25.trec" ${TEXT[$c]} \
        --reranker teacher --model "$MODELS/teacher" --output "$OUT/val/$c.teacher.trec"
    # shellcheck disable=SC2086
    rank run --topics "$V/$c.topics.tsv" --candidates "$V/$c.bm25.trec" ${TEXT[$c]} \
        --reranker biencoder --output "$OUT/val/$c.biencoder.trec"
    rank ensemble --qrels "$V/$c.qrels.txt" --component teacher=teacher --component biencoder \
        --component identity --output "$MODELS/ensemble-$c.json" \
        "$OUT/val/$c.teacher.trec" "$OUT/val/$c.biencoder.trec" "$V/$c.bm25.trec"
done
echo "== validation runs and fusion weights: $(( $(date +%s) - start )) s"

# test collection: name, topics, BM25 candidates, text, qrels, ensemble
test_runs() {
    local name=$1 topics=$2 candidates=$3 text=$4 qrels=$5 ensemble=$6
    # shellcheck disable=SC2086
    rank run --topics "$topics" --candidates "$candidates" $text --reranker teacher --model "$MODELS/teacher" \
        --output "$RUNS/teacher.$name.trec"
    # shellcheck disable=SC2086
    rank run --topics "$topics" --candidates "$candidates" $text --reranker biencoder \
        --output "$RUNS/biencoder.$name.trec"
    rank fuse --ensemble "$ensemble" --output "$RUNS/ensemble.$name.trec" \
        "$RUNS/teacher.$name.trec" "$RUNS/biencoder.$name.trec" "$candidates"
    rank evaluate --qrels "$qrels" --baseline "$candidates" "$candidates" \
        "$RUNS/biencoder.$name.trec" "$RUNS/teacher.$name.trec" "$RUNS/ensemble.$name.trec"
}
test_runs dl19 "$MS/topics/dl19.tsv" "$MS/runs/bm25.dl19.top100.trec" "--collection $MS/passages/dl19.tsv" \
    "$MS/qrels/dl19.txt" "$MODELS/ensemble-msmarco.json"
test_runs scifact-test "$SF/queries.jsonl" runs/bm25.scifact-test.trec "--collection $SF/corpus.jsonl" \
    "$SF/qrels/test.tsv" "$MODELS/ensemble-scifact.json"
echo "== done: $(( $(date +%s) - start )) s"
