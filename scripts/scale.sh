#!/usr/bin/env bash
# Peak memory of `rank index`, `rank encode` and `rank run` on SciFact and on SciFact ten times over (every
# document repeated under new ids: 51,830 documents), to show that they stream their input.
#
# Usage: bash scripts/scale.sh [--data DIR] [--out DIR]   (default work/scale; 186 s on the 2-core CPU)
# Encoding uses a 1-layer TwinBERT (random weights, passages cut to 64 tokens) so that ten SciFacts encode in
# minutes: the memory it shows is the pipeline's, the model's own weights being a constant. Writes OUT/memory.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${RANKER_DATA:-../shared/data} OUT=work/scale
OPTIONS="data out"
source scripts/lib.sh
mkdir -p "$OUT"
rm -rf "$OUT/x1" "$OUT/x10"

.venv/bin/python - "$SF/corpus.jsonl" "$OUT" <<'EOF'
import json, sys
from pathlib import Path

from ranker.twinbert import TwinBert, TwinBertConfig

corpus, out = Path(sys.argv[1]), Path(sys.argv[2])
lines = corpus.read_text(encoding="utf-8").splitlines()
with open(out / "corpus-x10.jsonl", "w", encoding="utf-8") as f:
    for copy in range(10):
        for line in lines:
            doc = json.loads(line)
            f.write(json.dumps({**doc, "_id": f"{doc['_id']}-{copy}"}) + "\n")
if not (out / "model").is_dir():
    TwinBert(TwinBertConfig(num_layers=1, doc_max_length=64)).save(out / "model")
EOF

measure() {  # measure SIZE STEP COMMAND...: append SIZE, STEP, peak RSS (MB), seconds to memory.tsv
    local size=$1 what=$2
    shift 2
    /usr/bin/time -f "%M %e" -o "$OUT/time.txt" "$@" > /dev/null
    read -r kb seconds < "$OUT/time.txt"
    printf '%s\t%s\t%d\t%s\n' "$size" "$what" $((kb / 1024)) "$seconds" | tee -a "$OUT/memory.tsv"
}
printf 'collection\tcommand\tpeak_rss_mb\tseconds\n' > "$OUT/memory.tsv"
declare -A CORPUS=([x1]=$SF/corpus.jsonl [x10]=$OUT/corpus-x10.jsonl)
for size in x1 x10; do
    measure "$size" index .venv/bin/rank index --collection "${CORPUS[$size]}" --index "$OUT/$size/index"
    measure "$size" encode .venv/bin/rank encode --no-windows --collection "${CORPUS[$size]}" --model "$OUT/model" \
        --store "$OUT/$size/store"
    measure "$size" "run (BM25 >> twinbert)" .venv/bin/rank run --topics "$SF/queries.jsonl" \
        --judged-only "$SF/qrels/test.tsv" --index "$OUT/$size/index" --k 100 --reranker twinbert --fusion none \
        --model "$OUT/model" --store "$OUT/$size/store" --output "$OUT/$size/twinbert.trec"
done
echo "== $OUT/memory.tsv ($(( $(date +%s) - start )) s)"
