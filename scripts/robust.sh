#!/usr/bin/env bash
# Your own collection (issue 46): the default student, its BM25 weight, its query cap, its passage window and the
# pipeline, picked on the MS MARCO and SciFact validation queries together, never on DL19 or SciFact test.
#   1. candidates over validation stores cut at 128 passage tokens: student v1, student v2, and each interpolated
#      half-way with its zero-shot start (WiSE-FT, `rank models interpolate`; alpha 0 is all-MiniLM-L6-v2 itself),
#      at their 32-token query cap and at 64;
#   2. each candidate's BM25 weight (`rank fusion-weight`: the best mean over both sets) and the default among them
#      (`rank pick-student`: the best mean, never below the zero-shot start on either set);
#   3. the passage window: 256 and 512 tokens (v1 WiSE-FT 0.5), and 128-token windows over whole documents (v2);
#   4. the pick's weight recorded in models/twinbert-v2, and BM25 >> student + BM25 against the hybrid first stage;
#   5. the default pipeline's DL19 and SciFact test runs; 6. its latency against student v1's in one benchmark.
# Every pick is made by a rank command (library code); this script only runs them. Picks made here: v2, 64 query
# tokens, weight 0.75, passages cut at 128 tokens, BM25's candidates (docs/experiments.md "Your own collection").
#
# Usage: bash scripts/robust.sh [--data DIR] [--out DIR]   (default work/robust; rerun to resume)
# Run time on the 2-core CPU: ~3 h, nearly all of it encoding SciFact's corpus (9 min a cut store, 24-34 min a
# windowed one, one thread) and the MS MARCO validation passages (3 min a store).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data OUT=work/robust
OPTIONS="data out"
source scripts/lib.sh
step() { echo "== $* ($(( $(date +%s) - start )) s)"; }
made() { [ -f "$1" ] && [ -f "$1.json" ]; }
V=$OUT/validation S=$OUT/stores R=$OUT/runs M=$OUT/models
mkdir -p "$S" "$R" "$M"
[ -d "$V" ] || rank datasets validation --data "$DATA" --output "$V"
[ -f "$OUT/msmarco.passages.tsv" ] || awk 'NR == FNR {want[$3]; next} $1 in want' "$V/msmarco.bm25.trec" \
    "$MS/passages/dl20.tsv" "$MS/passages/dl21.tsv" > "$OUT/msmarco.passages.tsv"  # the candidates' text
[ -d "$OUT/indexes/scifact" ] || rank index --collection "$SF/corpus.jsonl" --index "$OUT/indexes/scifact"

interpolate() {  # interpolate NAME STUDENT ALPHA [OPTIONS]: M/NAME
    [ -d "$M/$1" ] || rank models interpolate --model "$2" --alpha "$3" "${@:4}" --output "$M/$1"
}
encode() {  # encode STORE MODEL [OPTIONS]: S/msmarco.STORE and S/scifact.STORE (validation; SciFact: the corpus)
    [ -f "$S/msmarco.$1/ranker.json" ] || rank encode --model "$2" "${@:3}" --collection "$OUT/msmarco.passages.tsv" \
        --store "$S/msmarco.$1"
    [ -f "$S/scifact.$1/ranker.json" ] || rank encode --model "$2" "${@:3}" --collection "$SF/corpus.jsonl" \
        --store "$S/scifact.$1"
}
validate() {  # validate NAME MODEL STORE [RUN OPTIONS]: the runs alone and R/NAME.fusion.json (the fusion curve)
    local n=$1 m=$2 store=$3
    shift 3
    for c in msmarco scifact; do
        made "$R/$c.$n.trec" || rank run --topics "$V/$c.topics.tsv" --candidates "$V/$c.bm25.trec" \
            --reranker twinbert --model "$m" --store "$S/$c.$store" --fusion none "$@" --output "$R/$c.$n.trec"
    done
    rank fusion-weight --output "$R/$n.fusion.json" \
        --name msmarco --student "$R/msmarco.$n.trec" --bm25 "$V/msmarco.bm25.trec" --qrels "$V/msmarco.qrels.txt" \
        --name scifact --student "$R/scifact.$n.trec" --bm25 "$V/scifact.bm25.trec" --qrels "$V/scifact.qrels.txt"
}

step "1-2. the candidates (passages cut at 128 tokens), their fusion curves, the default among them"
interpolate v1-a0.0 models/twinbert 0.0 && interpolate v1-a0.5 models/twinbert 0.5
interpolate v2-a0.5 models/twinbert-v2 0.5 --query-max-length 32
encode v1 models/twinbert --no-windows && encode v2 models/twinbert-v2 --no-windows
for n in v1-a0.0 v1-a0.5 v2-a0.5; do encode "$n" "$M/$n" --no-windows; done
validate start "$M/v1-a0.0" v1-a0.0
validate v1 models/twinbert v1
validate v1-a0.5 "$M/v1-a0.5" v1-a0.5
validate v2 models/twinbert-v2 v2 --query-max-length 32  # as distilled (the shipped folder now reads 64 tokens)
validate v2-a0.5 "$M/v2-a0.5" v2-a0.5
validate v1-a0.5-q64 "$M/v1-a0.5" v1-a0.5 --query-max-length 64
validate v2-q64 models/twinbert-v2 v2 --query-max-length 64
rank pick-student "start=$R/start.fusion.json" "v1=$R/v1.fusion.json" "v1-a0.5=$R/v1-a0.5.fusion.json" \
    "v2=$R/v2.fusion.json" "v2-a0.5=$R/v2-a0.5.fusion.json" "v1-a0.5-q64=$R/v1-a0.5-q64.fusion.json" \
    "v2-q64=$R/v2-q64.fusion.json" --start start

step "3. the passage window: 256 and 512 tokens (windows beyond them), 128-token windows over whole documents"
for cap in 256 512; do
    interpolate "a0.5-d$cap" models/twinbert 0.5 --query-max-length 64 --doc-max-length "$cap"
    encode "a0.5-d$cap" "$M/a0.5-d$cap" --windows
    validate "a0.5-d$cap" "$M/a0.5-d$cap" "a0.5-d$cap"
done
encode v2-w128 models/twinbert-v2 --windows
validate v2-w128 models/twinbert-v2 v2-w128

step "4. the default's weight recorded; BM25 >> student + BM25 against the hybrid first stage"
rank fusion-weight --record models/twinbert-v2 \
    --name msmarco --student "$R/msmarco.v2-q64.trec" --bm25 "$V/msmarco.bm25.trec" --qrels "$V/msmarco.qrels.txt" \
    --name scifact --student "$R/scifact.v2-q64.trec" --bm25 "$V/scifact.bm25.trec" --qrels "$V/scifact.qrels.txt"
[ -d "$OUT/indexes/msmarco-val" ] || rank index --collection "$OUT/msmarco.passages.tsv" --index "$OUT/indexes/msmarco-val"
declare -A INDEX=([msmarco]=$OUT/indexes/msmarco-val [scifact]=$OUT/indexes/scifact)
declare -A EXTRA=([msmarco]= [scifact]=--remove-query-id)
for c in msmarco scifact; do  # MS MARCO's dense and hybrid "corpus": its 2,699 validation passages
    first=(--topics "$V/$c.topics.tsv" --index "${INDEX[$c]}" --k 100 ${EXTRA[$c]})
    rank run "${first[@]}" --reranker twinbert --model models/twinbert-v2 --store "$S/$c.v2" \
        --output "$R/$c.bm25-twinbert.default.trec"
    rank run "${first[@]}" --retriever hybrid --store "$S/$c.v2" --dense-model models/twinbert-v2 \
        --output "$R/$c.hybrid.default.trec"
    rank run "${first[@]}" --retriever hybrid --store "$S/$c.v2" --dense-model models/twinbert-v2 \
        --reranker twinbert --model models/twinbert-v2 --output "$R/$c.hybrid-twinbert.default.trec"
    rank evaluate --qrels "$V/$c.qrels.txt" "$V/$c.bm25.trec" "$R/$c".{hybrid,hybrid-twinbert,bm25-twinbert}.default.trec \
        --measures "nDCG@10 R@100"
done

step "5. test: DL19 (BM25 top 100 over all of MS MARCO; the committed store) and SciFact test (hybrid beside it)"
rank run --topics "$MS/topics/dl19.tsv" --candidates "$MS/runs/bm25.dl19.top100.trec" --reranker twinbert \
    --model models/twinbert-v2 --store stores/dl19.twinbert-v2 --output runs/twinbert-v2-bm25.dl19.trec
SCIFACT_TEST=(--topics "$SF/queries.jsonl" --judged-only "$SF/qrels/test.tsv")
rank run "${SCIFACT_TEST[@]}" --candidates runs/bm25.scifact-test.trec --reranker twinbert --model models/twinbert-v2 \
    --store "$S/scifact.v2" --output runs/twinbert-v2-bm25.scifact-test.trec
rank run "${SCIFACT_TEST[@]}" --candidates runs/bm25.scifact-test.trec --reranker twinbert --model models/twinbert-v2 \
    --store "$S/scifact.v2" --fusion none --output runs/twinbert-v2-q64.scifact-test.trec
rank run "${SCIFACT_TEST[@]}" --index "$OUT/indexes/scifact" --k 100 --remove-query-id --retriever hybrid \
    --store "$S/scifact.v2" --dense-model models/twinbert-v2 --output runs/hybrid-twinbert-v2.scifact-test.trec

step "6. latency, one run on SciFact test's long claims: student v1 alone at its 32-token cap against the default"
rank bench --topics "$SF/queries.jsonl" --candidates runs/bm25.scifact-test.trec --collection "$SF/corpus.jsonl" \
    --threads 1 --repeats 3 --reranker identity --reranker "twinbert=models/twinbert@$S/scifact.v1" \
    --reranker "twinbert=models/twinbert-v2@$S/scifact.v2" --fusion none --fusion bm25 \
    --query-max-length 32 --query-max-length 64 --reference "twinbert=models/twinbert@store[onnx-int8] q32" \
    --output runs/bench-default.scifact-test.json
step "done"
