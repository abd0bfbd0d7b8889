#!/usr/bin/env bash
# Reproduce every reported figure from a fresh clone and write RESULTS.md: `rank reproduce` re-makes the runs that
# scripts/reproduce.toml names (each one's commands, expected figures and recipe are data there), checks every
# figure (OK / close / FAIL), re-runs the benchmarks, then `rank report` writes RESULTS.md from runs/.
#
# Usage: bash scripts/reproduce.sh [--profile quick|full] [--data DIR] [--out DIR]
#   --profile quick (default; no training; docs/reproduce.md gives its time): the runs the shipped models make,
#             their stores and SciFact's index; every other figure is checked against its committed run.
#   --profile full: first every training recipe of scripts/reproduce.toml (teacher.sh, student.sh, mpnet.sh,
#             student_v2.sh, student_v3.sh, query_cap.sh, dense.sh, robust.sh, committed_stores.sh,
#             encode_speed.sh), then the same. A GPU is used when present.
#   --data    the shared data folder (default ../shared/data)
#   --out     work folder: index, stores, training runs, reproduce.json (default work/reproduce; rerun to resume)
# Runs go to runs/ and models to models/, over the committed ones: `git diff --stat runs/ models/` then shows
# whatever came out differently. `rank reproduce --dry-run [--profile full]` prints every command in order.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=quick DATA=${RANKER_DATA:-../shared/data} OUT=work/reproduce
OPTIONS="profile data out"
source scripts/lib.sh
case $PROFILE in quick) STORES=$OUT/quick-stores ;; full) STORES=$OUT/student/stores ;;
    *) echo "--profile must be quick or full, not '$PROFILE'" >&2; exit 2 ;; esac
[ -x .venv/bin/rank ] || bash scripts/setup.sh
status=0
rank reproduce --profile "$PROFILE" --bench --data "$DATA" --work "$OUT" || status=$?
# a FAIL (status 1) still gets its RESULTS.md, which then shows the figures as they came out
if [ "$status" -le 1 ]; then
    rank report --spec scripts/results.toml --data "$DATA" --stores "$STORES" --output RESULTS.md --plot docs/results.png
fi
echo "== done, profile $PROFILE, $(( $(date +%s) - start )) s"
exit "$status"
