#!/bin/sh
# The fuzzing campaign (docs/security.md, "Fuzzing"): each target in turn, niced, for RUNS
# executions from its committed corpus; new inputs go to a scratch corpus, which is then merged
# (minimised: only inputs adding coverage are kept) back into fuzz/corpus/<target>. Crash
# reproducers land in fuzz/crashes/. One log per target in $LOG_DIR.
#
#   fuzz/campaign.sh [RUNS] [target …]      (default 1000000 runs, every target)
#
# MAX_TIME=<seconds> caps each target's run as well (libFuzzer -max_total_time); the log's last
# "#<n>" line and "Done <n> runs" are the executions actually made.
set -u
cd "$(dirname "$0")"
RUNS=${1:-1000000}
[ $# -gt 0 ] && shift
TARGETS=${*:-$(ls *.py | grep -v -e '^_' -e '^seed.py$' | sed 's/\.py$//')}
PY=../.venv/bin/python
LOG_DIR=${LOG_DIR:-/tmp/groundplane-fuzz}
mkdir -p "$LOG_DIR" crashes
for target in $TARGETS; do
    scratch="$LOG_DIR/$target.corpus"
    mkdir -p "corpus/$target" "$scratch"
    echo "== $target: $RUNS runs" >&2
    nice -n 10 $PY "$target.py" "$scratch" "corpus/$target" -atheris_runs="$RUNS" \
        -max_len=4096 -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
        -max_total_time="${MAX_TIME:-0}" -artifact_prefix="crashes/$target-" \
        >"$LOG_DIR/$target.log" 2>&1
    echo "   exit $? ($(grep -E '^#[0-9]+' "$LOG_DIR/$target.log" | tail -1 | cut -c1-60); $(grep -E '^Done' "$LOG_DIR/$target.log"))" >&2
    # Minimise: keep only the inputs that add coverage, into a fresh folder.
    fresh="$LOG_DIR/$target.min"
    rm -rf "$fresh" && mkdir -p "$fresh"
    nice -n 10 $PY "$target.py" -merge=1 "$fresh" "corpus/$target" "$scratch" \
        >"$LOG_DIR/$target.merge.log" 2>&1
    if [ -n "$(ls "$fresh")" ]; then rm -rf "corpus/$target" && mv "$fresh" "corpus/$target"; fi
    echo "   corpus: $(ls "corpus/$target" | wc -l) files, $(du -sk "corpus/$target" | cut -f1) KB" >&2
done
