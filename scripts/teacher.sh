#!/usr/bin/env bash
# Reproduce the teacher (issue 8): fine-tune the joint span-cos cross-encoder on every labelled set (models/teacher),
# continue it on SciFact train alone for the SciFact protocol (models/teacher-scifact), rerank the held-out
# validation queries with each and with the zero-shot bi-encoder, pick the ensembles' fusion weights there, then
# rerank DL19 and SciFact test (BM25 top-100) with teacher, bi-encoder and ensemble, and evaluate.
#
# Usage: bash scripts/teacher.sh [--data DIR] [--out DIR] [--models DIR] [--runs DIR]
#   --out     training run folder and validation runs (default work/teacher; rerun to resume)
#   --models  where the fp16 teacher and the ensemble descriptions go (default OUT/models; the shipped ones
#             were made with --models models)
#   --runs    where the test runs go (default OUT/runs; the committed ones were made with --runs runs)
# Needs runs/bm25.scifact-test.trec and runs/bm25.scifact-train.trec (scripts/reproduce.sh makes them).
# Run time on the 2-core CPU: see docs/experiments.md ("Teacher"); a GPU is used when present.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data OUT=work/teacher MODELS= RUNS=
OPTIONS="data out models runs"
source scripts/lib.sh

rank train-teacher --output "$OUT" --data "$DATA" --layout joint --head span-cos --max-length 160 --lr 2e-5 \
    --max-steps 400 --warmup-steps 40 --eval-every 100 --seed 13 \
    --sets dl20 --sets dl21 --sets dl23 --sets dev600 --sets scifact-train
# the SciFact protocol: the same model, 300 more steps on SciFact train alone (its 50 held-out queries select)
rank train-teacher --output "$OUT-scifact" --init "$OUT/model" --data "$DATA" --layout joint --head span-cos \
    --max-length 160 --lr 2e-5 --max-steps 300 --warmup-steps 20 --eval-every 100 --seed 13 --sets scifact-train
mkdir -p "$MODELS" "$RUNS" "$OUT/val"
ship "$OUT" teacher
ship "$OUT-scifact" teacher-scifact
echo "== teachers trained: $(( $(date +%s) - start )) s"

# collection name -> passage text of its validation candidates, and its teacher
declare -A TEXT=([msmarco]="--collection $MS/passages/dl20.tsv --collection $MS/passages/dl21.tsv"
                 [scifact]="--collection $SF/corpus.jsonl")
declare -A TEACHER=([msmarco]=teacher [scifact]=teacher-scifact)
V=$OUT/validation
for c in msmarco scifact; do
    # shellcheck disable=SC2086
    rank run --topics "$V/$c.topics.tsv" --candidates "$V/$c.bm25.trec" ${TEXT[$c]} \
        --reranker cross-encoder --model "$MODELS/${TEACHER[$c]}" --output "$OUT/val/$c.${TEACHER[$c]}.trec"
    # shellcheck disable=SC2086
    rank run --topics "$V/$c.topics.tsv" --candidates "$V/$c.bm25.trec" ${TEXT[$c]} \
        --reranker biencoder --output "$OUT/val/$c.biencoder.trec"
    rank ensemble --qrels "$V/$c.qrels.txt" --component "cross-encoder=${TEACHER[$c]}" --component biencoder \
        --component identity --output "$MODELS/ensemble-$c.json" \
        "$OUT/val/$c.${TEACHER[$c]}.trec" "$OUT/val/$c.biencoder.trec" "$V/$c.bm25.trec"
done
echo "== validation runs and fusion weights: $(( $(date +%s) - start )) s"

# test collection: name, topics, BM25 candidates, text, qrels, collection of the teacher and ensemble
test_runs() {
    local name=$1 topics=$2 candidates=$3 text=$4 qrels=$5 teacher=${TEACHER[$6]} ensemble=$MODELS/ensemble-$6.json
    # shellcheck disable=SC2086
    rank run --topics "$topics" --candidates "$candidates" $text --reranker cross-encoder --model "$MODELS/$teacher" \
        --output "$RUNS/$teacher.$name.trec"
    # shellcheck disable=SC2086
    rank run --topics "$topics" --candidates "$candidates" $text --reranker biencoder \
        --output "$RUNS/biencoder.$name.trec"
    rank fuse --ensemble "$ensemble" --output "$RUNS/ensemble.$name.trec" \
        "$RUNS/$teacher.$name.trec" "$RUNS/biencoder.$name.trec" "$candidates"
    rank evaluate --qrels "$qrels" --baseline "$candidates" "$candidates" \
        "$RUNS/biencoder.$name.trec" "$RUNS/$teacher.$name.trec" "$RUNS/ensemble.$name.trec"
}
test_runs dl19 "$MS/topics/dl19.tsv" "$MS/runs/bm25.dl19.top100.trec" "--collection $MS/passages/dl19.tsv" \
    "$MS/qrels/dl19.txt" msmarco
test_runs scifact-test "$SF/queries.jsonl" runs/bm25.scifact-test.trec "--collection $SF/corpus.jsonl" \
    "$SF/qrels/test.tsv" scifact
echo "== done: $(( $(date +%s) - start )) s"
