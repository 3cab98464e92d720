#!/usr/bin/env bash
# One GPU call of a campaign that spans several: run a queue of sweeps under a deadline, resuming what
# earlier calls left, and pack the results after every sweep so a killed call loses at most one point.
#
#   bash bench/device_round.sh QUEUE DEADLINE_S [PREVIOUS_DIR]
#
#   QUEUE          a text file, one sweep per line: NAME ARGS... (ARGS go to `python -m poetx_bench sweep`),
#                  '#' starts a comment; e.g.  pm-8b --suite paper-memory --filter model=8b --timeout 150
#   DEADLINE_S     seconds this call may use; a sweep starts only while more than MIN_LEFT_S (default 60)
#                  is left, and runs under `timeout` of what is left (its points resume next call)
#   PREVIOUS_DIR   results of earlier calls (NAME/results.jsonl), copied in first so --resume skips them
#
# Writes W=${W:-/tmp/w}/NAME/ per sweep and, when $OUT is set (the device tool), $OUT/bundle.tgz of W.
# Exit 0 when the queue finished, 3 when the deadline stopped it (call again with the bundle as PREVIOUS_DIR).
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: bash bench/device_round.sh QUEUE DEADLINE_S [PREVIOUS_DIR]" >&2; exit 2; }
queue=$1; deadline=$2; previous=${3:-}
[ -f "$queue" ] || { echo "device_round: queue $queue: not a file" >&2; exit 2; }
case "$deadline" in ''|*[!0-9]*) echo "device_round: DEADLINE_S '$deadline': not a whole number" >&2; exit 2 ;; esac
py=${PYTHON:-python3}
W=${W:-/tmp/w}
mkdir -p "$W"
start=$(date +%s)
pack() { [ -n "${OUT:-}" ] && tar czf "$OUT/bundle.tgz" -C "$W" . ; return 0; }
if [ -n "$previous" ] && [ -d "$previous" ]; then
  cp -rn "$previous"/. "$W"/ 2>/dev/null || true
fi
min_left=${MIN_LEFT_S:-60}
status=0
while read -r name args; do
  case "$name" in ''|'#'*) continue ;; esac
  left=$(( deadline - ($(date +%s) - start) ))
  if [ "$left" -le "$min_left" ]; then
    echo "device_round: ${left}s left, not starting $name" | tee -a "$W/rounds.log"
    status=3
    break
  fi
  t0=$(date +%s)
  # shellcheck disable=SC2086  # ARGS are meant to split
  timeout "$left" "$py" -m poetx_bench sweep $args --out "$W/$name" --resume --quiet > "$W/$name.log" 2>&1 < /dev/null
  rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$W/rounds.log"
  if [ "$rc" -eq 124 ]; then
    status=3
    # the point the deadline killed has a log and no row: keep where it got (its last progress lines)
    killed=""
    for log in $(ls -t "$W/$name"/points/*.log 2>/dev/null); do
      id=$(basename "$log" .log)
      grep -q "\"$id\"" "$W/$name/results.jsonl" 2>/dev/null || { killed=$log; break; }
    done
    if [ -n "$killed" ]; then
      { echo "  killed point $(basename "$killed" .log):"
        { grep '^progress:' "$killed" || tail -n 3 "$killed"; } | tail -n 3 | sed 's/^/    /'; } | tee -a "$W/rounds.log"
    fi
  fi
  pack
done < "$queue"
pack
exit $status
