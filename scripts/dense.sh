#!/usr/bin/env bash
# The retrieval TwinBERT as a first stage (issue 24): dense (exact and HNSW) and hybrid BM25 + dense retrieval over
# all of SciFact and over the DL19 passage pool, the hybrid weight picked on SciFact's validation queries (DL19's
# pool judges none of them: an even 0.5 there), and the student reranking the hybrid candidates. Writes runs/{dense,dense-hnsw,hybrid,hybrid-twinbert}.*.
# Then student v3 and all-mpnet-base-v2 itself, dense and hybrid over all of SciFact through mpnet's store of the
# corpus (issue 30): runs/{dense,hybrid}-{twinbert-v3,mpnet}.scifact-test.trec.
#
# Usage: bash scripts/dense.sh [--data DIR] [--out DIR] [--v3-store DIR]
#   --out       work folder: indexes, stores, validation runs (default work/dense; rerun to resume)
#   --v3-store  all-mpnet-base-v2's store of SciFact's corpus (default work/v3/stores/scifact.mpnet)
#   --collections  the students' collections to run first (default "scifact dl19"; "" runs the v3 part alone)
# Run time on the 2-core CPU: docs/operations.md ("Dense and hybrid retrieval").
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data OUT=work/dense V3_STORE=work/v3/stores/scifact.mpnet COLLECTIONS="scifact dl19"
OPTIONS="data out v3-store collections"
source scripts/lib.sh
mkdir -p "$OUT/val"
step() { echo "== $* ($(( $(date +%s) - start )) s)"; }
V=$OUT/validation
[ -d "$V" ] || rank datasets validation --data "$DATA" --output "$V"

# per collection: the student, its whole-collection store, the collection, test topics (+ judged-only), qrels
declare -A MODEL=([scifact]=models/twinbert-scifact [dl19]=models/twinbert)
declare -A TEXT=([scifact]=$SF/corpus.jsonl [dl19]=$MS/passages/dl19.tsv)
declare -A TEST=([scifact]=scifact-test [dl19]=dl19)
declare -A TOPICS=([scifact]="$SF/queries.jsonl --judged-only $SF/qrels/test.tsv" [dl19]="$MS/topics/dl19.tsv")
declare -A QRELS=([scifact]=$SF/qrels/test.tsv [dl19]=$MS/qrels/dl19.txt)
declare -A VAL=([scifact]=scifact [dl19]=msmarco) EXTRA=([scifact]=--remove-query-id [dl19]=)
made() { [ -f "$1" ] && [ -f "$1.json" ]; }

pick_weight() {  # pick_weight COLLECTION INDEX [NAME]: sets best, best_score (validation nDCG@10 of each weight)
    local w run candidates=()
    for w in 0.0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1.0; do
        run=$OUT/val/$1.${3:-hybrid}-$w.trec
        # shellcheck disable=SC2086
        made "$run" || rank run --topics "$V/${VAL[$1]}.topics.tsv" --index "$2" "${dense[@]}" ${EXTRA[$1]} \
            --retriever hybrid --hybrid-weight "$w" --output "$run" > /dev/null
        candidates+=("$w@${VAL[$1]}=$run")
    done
    read -r best best_score < <(rank pick-run --qrels "${VAL[$1]}=$V/${VAL[$1]}.qrels.txt" "${candidates[@]}")
}

for c in $COLLECTIONS; do
    t=${TEST[$c]} store=$OUT/stores/$c.float16 index=$OUT/indexes/$c
    step "$c: index and whole-collection store (DL19: its judged passage pool, not all of MS MARCO)"
    [ -d "$index" ] || rank index --collection "${TEXT[$c]}" --index "$index"
    [ -d "$store" ] || rank encode --no-windows --model "${MODEL[$c]}" --collection "${TEXT[$c]}" --store "$store"
    dense=(--retriever dense --store "$store" --dense-model "${MODEL[$c]}" --k 100)
    step "$c: BM25, dense exact and HNSW on the test queries"
    # shellcheck disable=SC2086
    rank run --topics ${TOPICS[$c]} --index "$index" --k 100 ${EXTRA[$c]} --output "runs/bm25-pool.$t.trec"
    # shellcheck disable=SC2086
    rank run --topics ${TOPICS[$c]} "${dense[@]}" --output "runs/dense.$t.trec"
    # shellcheck disable=SC2086
    rank run --topics ${TOPICS[$c]} "${dense[@]}" --search hnsw --output "runs/dense-hnsw.$t.trec"
    # HNSW's recall of the exact top 100: the exact run as judgements, R@100 of the HNSW run
    awk '{print $1, 0, $3, 1}' "runs/dense.$t.trec" > "$OUT/exact.$t.qrels"
    rank evaluate --qrels "$OUT/exact.$t.qrels" "runs/dense-hnsw.$t.trec" --measures "R@100" --format csv \
        > "$OUT/hnsw-recall.$t.csv"
    if [ "$c" = dl19 ]; then  # no validation query is judged in DL19's pool: an even weight, not tuned
        best=0.5 best_score="not tuned"
    else
        step "$c: the hybrid weight on the validation queries (nDCG@10, weights 0, 0.1, ..., 1)"
        pick_weight "$c" "$index"
    fi
    echo "$best $best_score" > "$OUT/hybrid-weight.$c.txt"
    step "$c: hybrid with weight $best (validation $best_score), and the student reranking hybrid candidates"
    # shellcheck disable=SC2086
    rank run --topics ${TOPICS[$c]} --index "$index" "${dense[@]}" ${EXTRA[$c]} --retriever hybrid \
        --hybrid-weight "$best" --output "runs/hybrid.$t.trec"
    # shellcheck disable=SC2086
    rank run --topics ${TOPICS[$c]} --candidates "runs/hybrid.$t.trec" --reranker twinbert --fusion none --model "${MODEL[$c]}" \
        --store "$store" --output "runs/hybrid-twinbert.$t.trec"
    rank evaluate --qrels "${QRELS[$c]}" "runs/bm25-pool.$t.trec" "runs/dense.$t.trec" "runs/dense-hnsw.$t.trec" \
        "runs/hybrid.$t.trec" "runs/hybrid-twinbert.$t.trec" --measures "nDCG@10 R@100" --format table
done

# student v3 (mpnet's first layers over all-mpnet-base-v2's passage vectors) and mpnet itself, over all of SciFact:
# the mpnet store of the corpus is scripts/student_v3.sh's (built here if missing, ~46 min through ONNX Runtime)
index=$OUT/indexes/scifact
[ -d "$index" ] || rank index --collection "${TEXT[scifact]}" --index "$index"
[ -f "$V3_STORE/ranker.json" ] || rank encode --no-windows --encoder biencoder --model mpnet --backend onnx --threads 2 \
    --collection "$SF/corpus.jsonl" --batch-size 16 --store "$V3_STORE"
for name in twinbert-v3 mpnet; do
    model=models/$name
    [ "$name" = mpnet ] && model=mpnet
    dense=(--retriever dense --store "$V3_STORE" --dense-model "$model" --k 100)
    step "SciFact, $name: dense exact, the hybrid weight on the validation queries, hybrid"
    # shellcheck disable=SC2086
    rank run --topics ${TOPICS[scifact]} "${dense[@]}" --output "runs/dense-$name.scifact-test.trec"
    pick_weight scifact "$index" "hybrid-$name"
    echo "$best $best_score" > "$OUT/hybrid-weight.scifact-$name.txt"
    # shellcheck disable=SC2086
    rank run --topics ${TOPICS[scifact]} --index "$index" "${dense[@]}" --remove-query-id --retriever hybrid \
        --hybrid-weight "$best" --output "runs/hybrid-$name.scifact-test.trec"
done
rank evaluate --qrels "${QRELS[scifact]}" runs/bm25-pool.scifact-test.trec runs/dense.scifact-test.trec \
    runs/hybrid.scifact-test.trec runs/dense-{twinbert-v3,mpnet}.scifact-test.trec \
    runs/hybrid-{twinbert-v3,mpnet}.scifact-test.trec --measures "nDCG@10 R@100" --format table
step "done"
