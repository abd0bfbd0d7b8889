#!/usr/bin/env bash
# Install, then reproduce the BM25 figures: index SciFact, BM25 on its test queries, evaluate; DL19 BM25 run.
# Usage: bash scripts/reproduce.sh [DATA_DIR]   (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${RANKER_DATA:-../shared/data}}
bash scripts/setup.sh
rank() { .venv/bin/rank "$@"; }
SCIFACT=$DATA/beir-scifact
MSMARCO=$DATA/msmarco-passage

rank index --collection "$SCIFACT/corpus.jsonl" --index indexes/scifact
rank run --topics "$SCIFACT/queries.jsonl" --judged-only "$SCIFACT/qrels/test.tsv" --index indexes/scifact \
    --k 100 --k1 0.9 --b 0.4 --remove-query-id --output runs/bm25.scifact-test.trec
# the train queries' candidates: negatives for the teacher, unlabeled pairs for distillation
rank run --topics "$SCIFACT/queries.jsonl" --judged-only "$SCIFACT/qrels/train.tsv" --index indexes/scifact \
    --k 100 --k1 0.9 --b 0.4 --remove-query-id --output runs/bm25.scifact-train.trec

echo "== SciFact test (300 queries)"
rank evaluate --qrels "$SCIFACT/qrels/test.tsv" runs/bm25.scifact-test.trec
echo "== TREC DL19 (43 queries; BM25 top-100 over the full MS MARCO corpus, from $MSMARCO/runs)"
rank evaluate --qrels "$MSMARCO/qrels/dl19.txt" "$MSMARCO/runs/bm25.dl19.top100.trec"
