#!/usr/bin/env bash
# Reproduce the reported numbers from a fresh clone, for TREC DL19 and BEIR SciFact, and write RESULTS.md.
#
# Usage: bash scripts/reproduce.sh [--profile quick|full] [--data DIR] [--out DIR]
#   --profile quick (default; no training; README gives its time): install, index SciFact, BM25, encode the
#             document stores with the shipped student (DL19: only the passages BM25 retrieved), rerank DL19 with
#             the shipped teacher, bi-encoder, ensemble and student (every query backend) and SciFact with the
#             student, sentence-transformers over cached vectors, benchmark on DL19, then RESULTS.md from
#             runs/ — SciFact's teacher,
#             bi-encoder and ensemble runs are the committed ones (a cross-encoder over SciFact's 30,000 pairs
#             alone takes ~13 min here), and so are the all-mpnet-base-v2 runs (scripts/mpnet.sh); the serving
#             benchmark starts rank serve on a loopback port and stops it.
#   --profile full: retrain the teacher (scripts/teacher.sh) and the students (scripts/student.sh, every
#             distillation query; scripts/student_v2.sh; scripts/student_v3.sh) into models/, rerank
#             everything, encode the whole DL19 passage set, benchmark every reranker on all 43 queries, then
#             RESULTS.md. A GPU is used when present.
#   --data    the shared data folder (default ../shared/data)
#   --out     work folder: index, stores, training runs (default work/reproduce; rerun to resume)
# Runs go to runs/ and models to models/, over the committed ones: `git diff --stat runs/ models/` then shows
# whatever came out differently.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=quick DATA=${RANKER_DATA:-../shared/data} OUT=work/reproduce MODELS=models RUNS=runs
OPTIONS="profile data out"
source scripts/lib.sh
case $PROFILE in quick | full) ;; *) echo "--profile must be quick or full, not '$PROFILE'" >&2; exit 2 ;; esac
[ -x .venv/bin/rank ] || bash scripts/setup.sh
step() { echo "== $* ($(( $(date +%s) - start )) s)"; }

step "first stage: SciFact index and BM25 runs (DL19's BM25 top-100 over all of MS MARCO comes with the data)"
[ -d "$OUT/indexes/scifact" ] || rank index --collection "$SF/corpus.jsonl" --index "$OUT/indexes/scifact"
for split in test train; do  # train: candidates for the teacher's negatives and for distillation
    rank run --topics "$SF/queries.jsonl" --judged-only "$SF/qrels/$split.tsv" --index "$OUT/indexes/scifact" \
        --k 100 --k1 0.9 --b 0.4 --remove-query-id --output "runs/bm25.scifact-$split.trec"
done
# per test collection: topics, BM25 top-100 candidates, passage text
declare -A TOPICS=([dl19]=$MS/topics/dl19.tsv [scifact-test]=$SF/queries.jsonl)
declare -A CANDIDATES=([dl19]=$MS/runs/bm25.dl19.top100.trec [scifact-test]=runs/bm25.scifact-test.trec)
declare -A TEXT=([dl19]=$MS/passages/dl19.tsv [scifact-test]=$SF/corpus.jsonl)
# the student, its store and its BM25 fusion per test collection
declare -A MODEL=([dl19]=models/twinbert [scifact-test]=models/twinbert-scifact)
declare -A STORE=([dl19]=dl19 [scifact-test]=scifact) FUSION=([dl19]=msmarco [scifact-test]=scifact)
rerank() {  # rerank NAME RUN_STEM RERANKER [OPTIONS...]: runs/RUN_STEM.NAME.trec from NAME's BM25 candidates
    local name=$1 stem=$2 reranker=$3
    shift 3
    # the committed twinbert-* rows are the student alone; the fused default pipeline has rows of its own
    [ "$reranker" = twinbert ] && set -- --fusion none "$@"
    rank run --topics "${TOPICS[$name]}" --candidates "${CANDIDATES[$name]}" --collection "${TEXT[$name]}" \
        --reranker "$reranker" "$@" --output "runs/$stem.$name.trec"
}

if [ "$PROFILE" = full ]; then
    step "teacher: train, validation fusion weights, DL19 and SciFact runs"
    bash scripts/teacher.sh --data "$DATA" --out "$OUT/teacher" --models models --runs runs
    rerank scifact-test teacher cross-encoder --model models/teacher
    step "student: teacher scores, distillation, stores, runs, benchmark"
    bash scripts/student.sh --data "$DATA" --out "$OUT/student" --models models --runs runs --queries 1588
    STORES=$OUT/student/stores
    step "all-mpnet-base-v2: zero-shot runs, teacher v2's ensemble (validation weights, fused test runs)"
    bash scripts/mpnet.sh --data "$DATA" --out "$OUT/mpnet" --models models --runs runs
    step "student v2 and teacher v2's trained variant: mpnet stores, alignment, distillation (cos, res)"
    bash scripts/student_v2.sh --data "$DATA" --out "$OUT/v2" --models models --runs runs --mpnet "$OUT/mpnet"
    step "student v3: mpnet's first layers aligned on the training queries, distilled, SciFact-adapted; query cap"
    bash scripts/student_v3.sh --data "$DATA" --out "$OUT/v3" --models models --runs runs
    bash scripts/query_cap.sh --data "$DATA" --out "$OUT/query-cap" --stores "$OUT/v3/stores"
    step "dense and hybrid first stages (SciFact, the DL19 pool; v3 and mpnet over SciFact), encoding speed, stores"
    bash scripts/dense.sh --data "$DATA" --out "$OUT/dense" --v3-store "$OUT/v3/stores/scifact.mpnet"
    step "your own collection: the default student, its weight, query cap, passage window and pipeline (validation)"
    bash scripts/robust.sh --data "$DATA" --out "$OUT/robust"
    bash scripts/encode_speed.sh --data "$DATA" --out "$OUT/encode-speed"
    rank bench-store --folder "$OUT/scale" --rows 10000 --rows 1000000 --fingerprint-of models/twinbert \
        --queries 1000 --output runs/bench-store.json
else
    step "teacher, bi-encoder and ensemble on DL19 (shipped models)"
    rerank dl19 teacher cross-encoder --model models/teacher
    rerank dl19 biencoder biencoder
    rank fuse --ensemble models/ensemble-msmarco.json --output runs/ensemble.dl19.trec runs/teacher.dl19.trec \
        runs/biencoder.dl19.trec "${CANDIDATES[dl19]}"
    STORES=$OUT/quick-stores
    step "document stores of the shipped students (DL19: the BM25 candidates only; SciFact: twinbert-scifact)"
    [ -d "$STORES/dl19.float16" ] || rank encode --no-windows --model models/twinbert --collection "${TEXT[dl19]}" \
        --candidates "${CANDIDATES[dl19]}" --store "$STORES/dl19.float16"
    [ -d "$STORES/scifact.float16" ] || rank encode --no-windows --model "${MODEL[scifact-test]}" \
        --collection "${TEXT[scifact-test]}" --store "$STORES/scifact.float16"
    for name in dl19 scifact-test; do
        store=$STORES/${STORE[$name]}
        [ -d "$store.int8" ] || rank encode --model "${MODEL[$name]}" --from-store "$store.float16" --dtype int8 \
            --store "$store.int8"
    done
fi

step "student runs: float16 and int8 stores, each query backend, fused with BM25"
for name in dl19 scifact-test; do  # twinbert: the PyTorch float32 reference; int8 store: the same query tower
    rerank "$name" twinbert twinbert --model "${MODEL[$name]}" --store "$STORES/${STORE[$name]}.float16" \
        --query-backend torch
    rerank "$name" twinbert-int8 twinbert --model "${MODEL[$name]}" --store "$STORES/${STORE[$name]}.int8" \
        --query-backend torch
    for backend in onnx onnx-int8 torch-bf16; do
        rerank "$name" "twinbert-$backend" twinbert --model "${MODEL[$name]}" \
            --store "$STORES/${STORE[$name]}.float16" --query-backend "$backend"
    done
    rank fuse --ensemble "models/twinbert-bm25-${FUSION[$name]}.json" --output "runs/twinbert-bm25.$name.trec" \
        "runs/twinbert.$name.trec" "${CANDIDATES[$name]}"
done

step "what a user would run instead: sentence-transformers over cached vectors (DL19)"
# the all-mpnet-base-v2, all-MiniLM-L6-v2 and student v2 stores of DL19's candidates are committed (every use
# checks the store's fingerprint against its model); the full profile rebuilds them (scripts/committed_stores.sh,
# ~19 min on 2 cores)
[ "$PROFILE" = full ] && bash scripts/committed_stores.sh --data "$DATA"
declare -A PEER_STORE=([minilm]=stores/dl19.minilm [mpnet]=stores/dl19.mpnet)
PEERS=(minilm mpnet)
step "student v2 (student v1 distilled further from teacher v2; its own store) and the asymmetric student v2"
rerank dl19 twinbert-v2 twinbert --model models/twinbert-v2 --store stores/dl19.twinbert-v2
# the default pipeline: student v2 fused with BM25 at its recorded weight (scripts/robust.sh picked it; its SciFact
# runs, over v2's store of the whole corpus, are committed)
rank run --topics "${TOPICS[dl19]}" --candidates "${CANDIDATES[dl19]}" --reranker twinbert --model models/twinbert-v2 \
    --store stores/dl19.twinbert-v2 --output runs/twinbert-v2-bm25.dl19.trec
# MiniLM query tower over the all-mpnet-base-v2 store
rerank dl19 twinbert-v2-asym twinbert --model models/twinbert-v2-asym --store "${PEER_STORE[mpnet]}"
rerank dl19 st-twinbert sentence-transformers --model models/twinbert --store "$STORES/dl19.float16"
BENCH_PEERS=(--reranker "sentence-transformers=models/twinbert@$STORES/dl19.float16")
for peer in "${PEERS[@]}"; do
    rerank dl19 "st-$peer" sentence-transformers --model "$peer" --store "${PEER_STORE[$peer]}"
    BENCH_PEERS+=(--reranker "sentence-transformers=$peer@${PEER_STORE[$peer]}")
done

step "benchmark: DL19, all 43 queries, one CPU thread, 100 candidates a query, one process"
# the rerankers that take seconds a query (cross-encoder, ensemble, bi-encoder encoding passages per query) stop
# after 20 s once 10 queries are timed (--budget, --min-queries); the rest get three passes
rank bench --topics "${TOPICS[dl19]}" --candidates "${CANDIDATES[dl19]}" --collection "${TEXT[dl19]}" \
    --store "$STORES/dl19.float16" --threads 1 --repeats 3 --budget 20 --reranker identity --reranker twinbert=models/twinbert --fusion none \
    --query-backend torch --query-backend torch-bf16 --query-backend onnx --query-backend onnx-int8 \
    "${BENCH_PEERS[@]}" --reranker "biencoder=minilm@${PEER_STORE[minilm]}" --reranker biencoder \
    --reranker cross-encoder --reranker ensemble=models/ensemble-msmarco.json --reference cross-encoder \
    --output runs/bench.dl19.json

step "student v2 against student v1 in one benchmark run (DL19, one thread)"
rank bench --topics "${TOPICS[dl19]}" --candidates "${CANDIDATES[dl19]}" --collection "${TEXT[dl19]}" \
    --store "$STORES/dl19.float16" --threads 1 --repeats 3 --reranker identity --reranker twinbert=models/twinbert --fusion none \
    --reranker "twinbert=models/twinbert-v2@stores/dl19.twinbert-v2" \
    --reranker "twinbert=models/twinbert-v2-asym@${PEER_STORE[mpnet]}" --query-backend onnx-int8 --query-backend torch \
    --output runs/bench-v2.dl19.json

step "student v3 (mpnet's own first layer(s) as the query tower over the committed mpnet store) and its benchmark"
rerank dl19 twinbert-v3 twinbert --model models/twinbert-v3 --store "${PEER_STORE[mpnet]}"
rerank dl19 mpnet-int8-query biencoder --model mpnet --biencoder-backend onnx-int8 --store "${PEER_STORE[mpnet]}"
# one run, one thread, all 43 queries x 100 candidates: v1 and v3 on int8 and float32 query towers, the peers
rank bench --topics "${TOPICS[dl19]}" --candidates "${CANDIDATES[dl19]}" --collection "${TEXT[dl19]}" \
    --store "$STORES/dl19.float16" --threads 1 --repeats 3 --reranker identity --reranker twinbert=models/twinbert --fusion none \
    --reranker "twinbert=models/twinbert-v3@${PEER_STORE[mpnet]}" --query-backend onnx-int8 --query-backend torch \
    "${BENCH_PEERS[@]}" --reranker "biencoder[onnx-int8]=mpnet@${PEER_STORE[mpnet]}" --output runs/bench-v3.dl19.json

step "serving: rank serve on a loopback port, closed-loop load at 1, 4, 16, 64 clients, by id and by text"
SOAK=(); [ "$PROFILE" = full ] && SOAK=(--soak 300)  # full: 5 minutes at 32 clients, server memory before and after
rank bench-serve --topics "${TOPICS[dl19]}" --candidates "${CANDIDATES[dl19]}" --collection "${TEXT[dl19]}" \
    --store "$STORES/dl19.float16" --model models/twinbert --seconds 5 --mixed 300 "${SOAK[@]}" --output runs/bench-serve.dl19.json

step "RESULTS.md"
rank report --spec scripts/results.toml --data "$DATA" --stores "$STORES" --output RESULTS.md --plot docs/results.png
step "done, profile $PROFILE"
