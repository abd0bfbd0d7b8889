#!/usr/bin/env bash
# A student's query-length cap (issue 30): its reranking of BM25 top-100 at query caps of
# 16 to 256 tokens on the validation queries (27 DL20/DL21, 50 SciFact train), DL19 and SciFact test; for each, the
# queries cut (the run sidecar's queries_truncated) and nDCG@10 (latency: rank bench). Writes runs/query-cap.NAME.csv.
#
# Usage: bash scripts/query_cap.sh [--data DIR] [--out DIR] [--model DIR] [--stores DIR] [--runs DIR]
#   --model   the student (default models/twinbert-v3; its stores must be all-mpnet-base-v2's)
#   --stores  msmarco-val.mpnet and scifact.mpnet (scripts/student_v3.sh's; default work/v3/stores)
#   --out     the runs at each cap (default work/query-cap)
# Run time on the 2-core CPU: ~3 min (the SciFact runs dominate).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data OUT=work/query-cap MODEL=models/twinbert-v3 STORES=work/v3/stores RUNS=runs
OPTIONS="data out model stores runs"
source scripts/lib.sh
V=$OUT/validation
mkdir -p "$OUT/$(basename "$MODEL")" "$RUNS"
[ -d "$V" ] || rank datasets validation --data "$DATA" --output "$V"
# per query set: topics, candidates, store, qrels
declare -A TOPICS=([msmarco-val]=$V/msmarco.topics.tsv [scifact-val]=$V/scifact.topics.tsv
                   [dl19]=$MS/topics/dl19.tsv [scifact-test]=$SF/queries.jsonl)
declare -A CANDIDATES=([msmarco-val]=$V/msmarco.bm25.trec [scifact-val]=$V/scifact.bm25.trec
                       [dl19]=$MS/runs/bm25.dl19.top100.trec [scifact-test]=runs/bm25.scifact-test.trec)
declare -A STORE=([msmarco-val]=$STORES/msmarco-val.mpnet [scifact-val]=$STORES/scifact.mpnet
                  [dl19]=stores/dl19.mpnet [scifact-test]=$STORES/scifact.mpnet)
declare -A QRELS=([msmarco-val]=$V/msmarco.qrels.txt [scifact-val]=$V/scifact.qrels.txt
                  [dl19]=$MS/qrels/dl19.txt [scifact-test]=$SF/qrels/test.tsv)
csv=$RUNS/query-cap.$(basename "$MODEL").csv partial=$OUT/query-cap.$(basename "$MODEL").csv
echo "queries,cap,topics,cut,ndcg10" > "$partial"
for set in msmarco-val dl19 scifact-val scifact-test; do
    for cap in 16 32 64 128 256; do
        run=$OUT/$(basename "$MODEL")/$set.$cap.trec
        [ -f "$run.json" ] || rank run --topics "${TOPICS[$set]}" --candidates "${CANDIDATES[$set]}" \
            --reranker twinbert --fusion none --model "$MODEL" --store "${STORE[$set]}" --query-max-length "$cap" \
            --output "$run" 2> /dev/null
        read -r topics cut < <(.venv/bin/python -c 'import json, sys
side = json.load(open(sys.argv[1]))
print(side["queries"], side["pipeline"]["stages"][0]["queries_truncated"])' "$run.json")
        ndcg=$(ndcg10 "${QRELS[$set]}" "$run")
        echo "$set,$cap,$topics,$cut,$ndcg" | tee -a "$partial"
    done
done
mv "$partial" "$csv"
echo "-> $csv ($(( $(date +%s) - start )) s)"
