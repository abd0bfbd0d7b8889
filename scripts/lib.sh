# Shared by the reproduction scripts. Set OPTIONS (the option names) and their defaults, then source this file:
# --NAME VALUE sets the variable NAME upper-cased (--data DIR sets DATA) for each NAME in OPTIONS;
# then MODELS and RUNS default to OUT/models and OUT/runs, MS and SF name the data collections, and start is set.
for ((i = 1; i <= $#; i += 2)); do
    name=${!i} value_at=$((i + 1))
    var=$(tr 'a-z-' 'A-Z_' <<< "${name#--}")
    if [[ " $OPTIONS " != *" ${name#--} "* ]]; then
        echo "unknown argument $name (options: $OPTIONS)" >&2
        exit 2
    elif ((value_at > $#)); then
        echo "$name needs a value" >&2
        exit 2
    fi
    printf -v "$var" '%s' "${!value_at}"
done
MODELS=${MODELS:-$OUT/models} RUNS=${RUNS:-$OUT/runs}
MS=$DATA/msmarco-passage SF=$DATA/beir-scifact
start=$(date +%s)

rank() { .venv/bin/rank "$@"; }

ndcg10() {  # ndcg10 QRELS RUN: the run's mean nDCG@10
    rank evaluate --qrels "$1" "$2" --measures "nDCG@10" --format csv | awk -F, 'NR == 2 {print $NF}'
}

ship() {  # ship RUN_FOLDER NAME: the fp16 model folder RUN_FOLDER/model into MODELS/NAME, replaced whole
    rm -rf "$MODELS/$2.tmp" && cp -r "$1/model" "$MODELS/$2.tmp"
    rm -rf "${MODELS:?}/$2" && mv "$MODELS/$2.tmp" "$MODELS/$2"
}
