#!/usr/bin/env bash
# all-mpnet-base-v2 (issue 21): the zero-shot bi-encoder on DL19 and SciFact test (BM25 top-100), and teacher v2's
# first variant, the ensemble cross-encoder + MiniLM + mpnet + BM25 with weights picked on the validation queries.
#
# Usage: bash scripts/mpnet.sh [--data DIR] [--out DIR] [--models DIR] [--runs DIR] [--only msmarco|scifact]
#   --out     validation files and runs (default work/mpnet; rerun to resume: a run already made is kept)
#   --models  where the ensembles go as ensemble-v2-{msmarco,scifact}.json (default OUT/models)
#   --runs    where the test runs go (default OUT/runs; the committed ones were made with --runs runs)
# Needs the committed runs/{teacher,teacher-scifact,biencoder}.*.trec and runs/bm25.scifact-test.trec.
# Run time on the 2-core CPU: docs/teacher-experiments.md ("Teacher v2").
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data OUT=work/mpnet MODELS= RUNS= ONLY=
OPTIONS="data out models runs only"
source scripts/lib.sh
mkdir -p "$OUT/val" "$MODELS" "$RUNS"
rank models fetch mpnet
V=$OUT/validation
[ -d "$V" ] || rank datasets validation --data "$DATA" --output "$V"

# per collection: validation text, cross-encoder, test topics, BM25 candidates, text, qrels, test name
declare -A VTEXT=([msmarco]="--collection $MS/passages/dl20.tsv --collection $MS/passages/dl21.tsv"
                  [scifact]="--collection $SF/corpus.jsonl")
declare -A TEACHER=([msmarco]=teacher [scifact]=teacher-scifact) TEST=([msmarco]=dl19 [scifact]=scifact-test)
declare -A TOPICS=([msmarco]=$MS/topics/dl19.tsv [scifact]=$SF/queries.jsonl)
declare -A CANDIDATES=([msmarco]=$MS/runs/bm25.dl19.top100.trec [scifact]=runs/bm25.scifact-test.trec)
declare -A TEXT=([msmarco]=$MS/passages/dl19.tsv [scifact]=$SF/corpus.jsonl)
made() { [ -f "$1" ] && [ -f "$1.json" ]; }  # a run and its sidecar: done (both are written atomically)

for c in msmarco scifact; do
    [ -n "$ONLY" ] && [ "$ONLY" != "$c" ] && continue
    t=${TEST[$c]}
    step() { echo "== $c: $* ($(( $(date +%s) - start )) s)"; }
    step "validation runs: mpnet, cross-encoder, MiniLM"
    # shellcheck disable=SC2086
    made "$OUT/val/$c.mpnet.trec" || rank run --topics "$V/$c.topics.tsv" --candidates "$V/$c.bm25.trec" \
        ${VTEXT[$c]} --reranker biencoder --model mpnet --output "$OUT/val/$c.mpnet.trec"
    # shellcheck disable=SC2086
    made "$OUT/val/$c.teacher.trec" || rank run --topics "$V/$c.topics.tsv" --candidates "$V/$c.bm25.trec" \
        ${VTEXT[$c]} --reranker cross-encoder --model "models/${TEACHER[$c]}" --output "$OUT/val/$c.teacher.trec"
    # shellcheck disable=SC2086
    made "$OUT/val/$c.biencoder.trec" || rank run --topics "$V/$c.topics.tsv" --candidates "$V/$c.bm25.trec" \
        ${VTEXT[$c]} --reranker biencoder --output "$OUT/val/$c.biencoder.trec"
    step "fusion weights on validation"
    rank ensemble --qrels "$V/$c.qrels.txt" --component "cross-encoder=${TEACHER[$c]}" --component biencoder \
        --component biencoder=mpnet --component identity --output "$MODELS/ensemble-v2-$c.json" \
        "$OUT/val/$c.teacher.trec" "$OUT/val/$c.biencoder.trec" "$OUT/val/$c.mpnet.trec" "$V/$c.bm25.trec"
    step "test: zero-shot mpnet, then the ensemble fused from the component runs"
    made "$RUNS/mpnet.$t.trec" || rank run --topics "${TOPICS[$c]}" --candidates "${CANDIDATES[$c]}" \
        --collection "${TEXT[$c]}" --reranker biencoder --model mpnet --output "$RUNS/mpnet.$t.trec"
    teacher_run=runs/teacher.$t.trec
    [ "$c" = scifact ] && teacher_run=runs/teacher-scifact.$t.trec
    rank fuse --ensemble "$MODELS/ensemble-v2-$c.json" --output "$RUNS/ensemble-v2.$t.trec" \
        "$teacher_run" "runs/biencoder.$t.trec" "$RUNS/mpnet.$t.trec" "${CANDIDATES[$c]}"
done
echo "== done ($(( $(date +%s) - start )) s)"
