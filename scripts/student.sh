#!/usr/bin/env bash
# Reproduce the TwinBERT student (issue 9): score every distillation query's candidates with the teachers
# (models/ensemble-msmarco.json for MS MARCO queries, models/ensemble-scifact.json for SciFact train), distil the
# student on those scores, adapt a copy to SciFact train alone (twinbert-scifact), encode the DL19 and SciFact
# document stores (float16 and int8), rerank DL19 and SciFact test (BM25 top-100) from the stores, evaluate against
# BM25 and the committed teacher runs, and benchmark.
#
# Usage: bash scripts/student.sh [--data DIR] [--out DIR] [--models DIR] [--runs DIR] [--scores DIR] [--queries N]
#   --out      training run folder, stores and benchmark (default work/student; rerun to resume)
#   --models   where the fp16 students go as twinbert and twinbert-scifact (default OUT/models; the shipped
#              ones: --models models)
#   --runs     where the test runs go (default OUT/runs; the committed ones were made with --runs runs)
#   --scores   teacher-score cache (default work/teacher-scores; resumable)
#   --queries  distillation queries scored by the teachers, the first N in their fixed order (default all 1,588,
#              as for the shipped student)
# Needs runs/bm25.scifact-{train,test}.trec (scripts/reproduce.sh) and the committed teacher runs for evaluation.
# Run time on the 2-core CPU: see docs/experiments.md ("Student"); a GPU is used when present.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data OUT=work/student MODELS= RUNS= SCORES=work/teacher-scores QUERIES=1588
OPTIONS="data out models runs scores queries"
source scripts/lib.sh

rank distill --score-queries "$QUERIES" --teacher models/ensemble-msmarco.json --scifact-teacher models/ensemble-scifact.json \
    --scores "$SCORES" --data "$DATA" --output "$OUT/run" \
    --num-layers 6 --loss margin-mse --crossing cos --cos-scale 10 --pooling weighted --doc-max-length 128 \
    --max-steps 120 --eval-every 30 --val-depth 50 --seed 13
mkdir -p "$MODELS" "$RUNS" "$OUT/stores"
ship "$OUT/run" twinbert
echo "== student trained: $(( $(date +%s) - start )) s"
# SciFact protocol (as for the teacher): the student adapted on SciFact train's teacher scores alone, picked on
# the SciFact validation queries
rank distill --cached-only --scores "$SCORES" --data "$DATA" --sets scifact-train --init "$MODELS/twinbert" \
    --output "$OUT/scifact" --loss margin-mse --label-weight 0.5 --doc-max-length 128 --max-steps 240 --eval-every 30 \
    --val-depth 50 --seed 13
ship "$OUT/scifact" twinbert-scifact
echo "== SciFact student trained: $(( $(date +%s) - start )) s"

# document stores: float16, then int8 re-quantized from it
# per collection: the student, its store, the passages encoded into it
declare -A STUDENT=([msmarco]=twinbert [scifact]=twinbert-scifact) STORE=([msmarco]=dl19 [scifact]=scifact)
declare -A COLLECTION=([msmarco]=$MS/passages/dl19.tsv [scifact]=$SF/corpus.jsonl)
for c in msmarco scifact; do
    model=$MODELS/${STUDENT[$c]} store=$OUT/stores/${STORE[$c]}
    [ -d "$store.float16" ] || rank encode --no-windows --model "$model" --collection "${COLLECTION[$c]}" --store "$store.float16"
    [ -d "$store.int8" ] || rank encode --model "$model" --from-store "$store.float16" --dtype int8 \
        --store "$store.int8"
done
echo "== stores: $(( $(date +%s) - start )) s"

# student + BM25 (z-normalised fusion, the weights picked on the validation queries; BM25 scores come free
# with the candidates): validation passages absent from the stores are encoded on the fly
declare -A TEXT=([msmarco]="--collection $MS/passages/dl20.tsv --collection $MS/passages/dl21.tsv"
                 [scifact]="--collection $SF/corpus.jsonl")
V=$OUT/run/validation
mkdir -p "$OUT/val"
for c in msmarco scifact; do
    # shellcheck disable=SC2086
    rank run --topics "$V/$c.topics.tsv" --candidates "$V/$c.bm25.trec" ${TEXT[$c]} --reranker twinbert --fusion none \
        --model "$MODELS/${STUDENT[$c]}" --store "$OUT/stores/${STORE[$c]}.float16" --encode-missing \
        --output "$OUT/val/$c.twinbert.trec"
    rank ensemble --qrels "$V/$c.qrels.txt" --component "twinbert=${STUDENT[$c]}" --component identity \
        --output "$MODELS/twinbert-bm25-$c.json" "$OUT/val/$c.twinbert.trec" "$V/$c.bm25.trec"
done

# test collection: name, store, topics, BM25 candidates, qrels, collection of the fusion, runs compared against
test_runs() {
    local name=$1 store=$OUT/stores/$2 topics=$3 candidates=$4 qrels=$5 fusion=$MODELS/twinbert-bm25-$6.json
    local model=$MODELS/${STUDENT[$6]}
    shift 6
    rank run --topics "$topics" --candidates "$candidates" --reranker twinbert --fusion none --model "$model" \
        --store "$store.float16" --output "$RUNS/twinbert.$name.trec"
    rank run --topics "$topics" --candidates "$candidates" --reranker twinbert --fusion none --model "$model" \
        --store "$store.int8" --output "$OUT/twinbert-int8.$name.trec"
    rank fuse --ensemble "$fusion" --output "$RUNS/twinbert-bm25.$name.trec" "$RUNS/twinbert.$name.trec" "$candidates"
    rank evaluate --qrels "$qrels" --baseline "$candidates" "$candidates" "$@" \
        "$RUNS/twinbert.$name.trec" "$OUT/twinbert-int8.$name.trec" "$RUNS/twinbert-bm25.$name.trec"
}
test_runs dl19 dl19 "$MS/topics/dl19.tsv" "$MS/runs/bm25.dl19.top100.trec" "$MS/qrels/dl19.txt" msmarco \
    runs/biencoder.dl19.trec runs/teacher.dl19.trec runs/ensemble.dl19.trec
test_runs scifact-test scifact "$SF/queries.jsonl" runs/bm25.scifact-test.trec "$SF/qrels/test.tsv" scifact \
    runs/biencoder.scifact-test.trec runs/teacher-scifact.scifact-test.trec runs/ensemble.scifact-test.trec
echo "== stores, runs, evaluation: $(( $(date +%s) - start )) s"

# one CPU thread, the same 43 DL19 queries x 100 candidates for every reranker
rank bench --topics "$MS/topics/dl19.tsv" --candidates "$MS/runs/bm25.dl19.top100.trec" \
    --collection "$MS/passages/dl19.tsv" --reranker identity --reranker "twinbert=$MODELS/twinbert" \
    --reranker biencoder --reranker cross-encoder --reference cross-encoder --store "$OUT/stores/dl19.float16" --threads 1 --repeats 1 \
    --output "$OUT/bench.dl19.json"
echo "== done: $(( $(date +%s) - start )) s"
