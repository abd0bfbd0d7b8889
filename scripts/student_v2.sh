#!/usr/bin/env bash
# Student v2 and teacher v2's trained variant (issue 21). The student is an asymmetric TwinBERT: all-mpnet-base-v2
# is the passage side (run once, offline, into stores; frozen) and a 6-layer MiniLM query tower (projected to 768)
# the query side. The query tower is first aligned to mpnet's vectors of short texts (rank align), then distilled
# from teacher v2 with the passage side read from the stores, once with the cosine crossing and once with the
# residual one (both to convergence, the same data). The teacher variant: mpnet's own query side fine-tuned on
# the labels with the same frozen passages (rank distill --loss none).
#
# Usage: bash scripts/student_v2.sh [--data DIR] [--out DIR] [--models DIR] [--runs DIR] [--mpnet DIR]
#   --out     stores, distillation candidates, teacher runs, training runs (default work/v2; rerun to resume)
#   --models  where the student that validation picks goes, as twinbert-v2/ (default OUT/models)
#   --runs    where the test runs go (default OUT/runs; the committed ones were made with --runs runs)
#   --mpnet   scripts/mpnet.sh's --out, whose validation runs the v3 ensemble fuses (default work/mpnet)
# Needs models/ensemble-v2-msmarco.json and models/teacher (scripts/mpnet.sh, scripts/teacher.sh).
# Run time on the 2-core CPU: README ("all-mpnet-base-v2, teacher v2 and student v2"), ~3 h.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data OUT=work/v2 MODELS= RUNS= MPNET=work/mpnet
OPTIONS="data out models runs mpnet"
source scripts/lib.sh
mkdir -p "$OUT/runs" "$MODELS" "$RUNS"
rank models fetch mpnet
S=$OUT/stores V=$OUT/validation D=$OUT/distill
step() { echo "== $* ($(( $(date +%s) - start )) s)"; }
made() { [ -f "$1" ] && [ -f "$1.json" ]; }  # a run and its sidecar: done (both are written atomically)
mpnet_store() {  # mpnet_store NAME ARGS...: an all-mpnet-base-v2 store (an interrupted encode resumes)
    local name=$1
    shift
    [ -f "$S/$name/ranker.json" ] || rank encode --encoder biencoder --model mpnet --store "$S/$name" "$@"
}

step "held-out validation queries and the distillation candidates (dev600: 600 queries x 20)"
[ -d "$V" ] || rank datasets validation --data "$DATA" --output "$V"
[ -d "$D" ] || rank datasets distill --data "$DATA" --sets dev600 --output "$D"

step "mpnet stores: validation candidates, dev600 passages, DL19's BM25 candidates"
mpnet_store msmarco-val.mpnet --collection "$MS/passages/dl20.tsv" --collection "$MS/passages/dl21.tsv" \
    --candidates "$V/msmarco.bm25.trec"
mpnet_store dev600.mpnet --collection "$MS/dev600/passages.tsv"
mpnet_store dl19.mpnet --collection "$MS/passages/dl19.tsv" --candidates "$MS/runs/bm25.dl19.top100.trec"
STORES=(--doc-store "$S/msmarco-val.mpnet" --doc-store "$S/dev600.mpnet")

step "teacher v2 over the distillation candidates: cross-encoder + mpnet (from its store) + BM25, fused"
made "$OUT/runs/dev600.teacher.trec" || rank run --topics "$D/msmarco.topics.tsv" \
    --candidates "$D/msmarco.candidates.trec" --collection "$MS/dev600/passages.tsv" --reranker cross-encoder \
    --model models/teacher --output "$OUT/runs/dev600.teacher.trec"
made "$OUT/runs/dev600.mpnet.trec" || rank run --topics "$D/msmarco.topics.tsv" \
    --candidates "$D/msmarco.candidates.trec" --reranker biencoder --model mpnet --store "$S/dev600.mpnet" \
    --output "$OUT/runs/dev600.mpnet.trec"
# ensemble-v2's MiniLM weight is 0: '-' leaves that component out
rank fuse --ensemble models/ensemble-v2-msmarco.json --output "$OUT/runs/dev600.teacher-v2.trec" \
    "$OUT/runs/dev600.teacher.trec" - "$OUT/runs/dev600.mpnet.trec" "$D/msmarco.candidates.trec"

step "student v2: align the MiniLM query tower to mpnet (queries and passage sentences, 64 query tokens)"
rank align --output "$OUT/align-ms" --doc-store "$S/msmarco-val.mpnet" --doc-encoder mpnet --sets dl20 \
    --sets dl21 --sets dl22 --sets dl23 --sets dev600 --sentences 12000 --max-steps 600 --eval-every 150 \
    --query-max-length 64

step "student v2: distil from teacher v2 against the frozen passages, cos and res crossings (1,000 steps each)"
# lr 1e-5 (the query encoder; 5e-5, the symmetric student's, lost to the aligned start: docs/student-experiments.md)
TEACHER_RUN=(--teacher-run "msmarco=$OUT/runs/dev600.teacher-v2.trec" --sets dev600 --init "$OUT/align-ms/model")
COMMON=("${TEACHER_RUN[@]}" "${STORES[@]}" --scores "$OUT/scores-teacher-v2" --max-steps 1000 --eval-every 100 --lr 1e-5)
rank distill --output "$OUT/distill-cos" "${COMMON[@]}" --head-lr 1e-4 --label-weight 0.5
rank distill --output "$OUT/distill-res" "${COMMON[@]}" --reset-crossing --crossing res --head-warmup-steps 200

step "teacher v2, trained variant: mpnet's query side fine-tuned on the labels (cross-encoder-mined negatives)"
rank distill --output "$OUT/mpnet-labels" --scores "$OUT/scores-teacher" \
    --teacher-run "msmarco=$OUT/runs/dev600.teacher.trec" --sets dev600 "${STORES[@]}" --doc-encoder mpnet \
    --encoder mpnet --num-layers 12 --loss none --label-weight 1 --lr 1e-5 --max-steps 300 --eval-every 50

step "ship the crossing validation picks (cos or res) as twinbert-v2"
pick=$(.venv/bin/python -c 'import json, sys
best = {c: json.load(open(f"{sys.argv[1]}/distill-{c}/model/training.json"))["best"]["val_ndcg10"] for c in ("cos", "res")}
print(max(best, key=best.get))' "$OUT")
echo "validation picks $pick"
ship "$OUT/distill-$pick" twinbert-v2

step "test runs (DL19, BM25 top-100, from the DL19 mpnet store)"
declare -A FOLDER=([twinbert-v2-aligned]=align-ms [twinbert-v2-cos]=distill-cos [twinbert-v2-res]=distill-res
                   [mpnet-labels]=mpnet-labels)
for name in "${!FOLDER[@]}"; do
    backend=onnx-int8
    [ "$name" = mpnet-labels ] && backend=torch  # a 12-layer teacher: the PyTorch tower
    made "$RUNS/$name.dl19.trec" || rank run --topics "$MS/topics/dl19.tsv" \
        --candidates "$MS/runs/bm25.dl19.top100.trec" --reranker twinbert --model "$OUT/${FOLDER[$name]}/model" \
        --store "$S/dl19.mpnet" --query-backend "$backend" --output "$RUNS/$name.dl19.trec"
done
ship "$OUT/mpnet-labels" mpnet-labels  # 220 MB: rebuilt here, never committed (.gitignore)

step "teacher v2 by validation: the ensemble with the label-trained mpnet (cross-encoder, MiniLM, mpnet, it, BM25)"
made "$OUT/runs/msmarco-val.mpnet-labels.trec" || rank run --topics "$V/msmarco.topics.tsv" \
    --candidates "$V/msmarco.bm25.trec" --reranker twinbert --model "$OUT/mpnet-labels/model" \
    --store "$S/msmarco-val.mpnet" --query-backend torch --output "$OUT/runs/msmarco-val.mpnet-labels.trec"
# the other components' validation runs are scripts/mpnet.sh's
rank ensemble --qrels "$V/msmarco.qrels.txt" --component cross-encoder=teacher --component biencoder \
    --component biencoder=mpnet --component twinbert=mpnet-labels --component identity \
    --output "$MODELS/ensemble-v3-msmarco.json" "$MPNET/val/msmarco.teacher.trec" \
    "$MPNET/val/msmarco.biencoder.trec" "$MPNET/val/msmarco.mpnet.trec" "$OUT/runs/msmarco-val.mpnet-labels.trec" \
    "$V/msmarco.bm25.trec"
rank fuse --ensemble "$MODELS/ensemble-v3-msmarco.json" --output "$RUNS/ensemble-v3.dl19.trec" runs/teacher.dl19.trec \
    runs/biencoder.dl19.trec runs/mpnet.dl19.trec "$RUNS/mpnet-labels.dl19.trec" "$MS/runs/bm25.dl19.top100.trec"
echo "== done ($(( $(date +%s) - start )) s)"
