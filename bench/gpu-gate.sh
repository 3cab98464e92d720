#!/usr/bin/env bash
# GPU regression gate (about 2.5 minutes on one H100): runs suites/gpu-gate-layer.toml and
# suites/gpu-gate-train.toml into one results file and gates it against the H100 baseline.
#
#   bash bench/gpu-gate.sh [--out DIR] [--new-baseline] [-- GATE OPTIONS]
#
#   --out DIR        where the sweeps write (default runs/gpu-gate, relative to the repository root):
#                    DIR/N-SUITE/ per suite, their rows together in DIR/results.jsonl, the verdict in
#                    DIR/gate.md. DIR is emptied first, so it must be new, empty or made by this script.
#   --new-baseline   refresh after an intended change: run the suites and write the results to the
#                    baseline file instead of gating (refused when a point did not finish ok)
#   GATE OPTIONS     passed to `python -m poetx_bench gate`, e.g. --allow-different-devices
#
# POETX_GATE_BASELINE / POETX_GATE_RULES override reports/baselines/h100-gate.jsonl and
# reports/baselines/h100-rules.toml; POETX_GATE_SUITES / POETX_GATE_DEVICE the suites and device.
# The training points read the default corpus: on a machine without
# network, prepare it elsewhere (`python -m poetx_bench data prepare`) and carry $POETX_BENCH_CACHE.
#
# Exit status: the gate's (0 pass, 1 regression, 2 nothing comparable, different machines, missing
# baseline or bad input); a sweep that stops early exits with its own status (1 harness, 2, 130).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
baseline=${POETX_GATE_BASELINE:-reports/baselines/h100-gate.jsonl}
rules=${POETX_GATE_RULES:-reports/baselines/h100-rules.toml}
out=runs/gpu-gate
# POETX_GATE_SUITES / POETX_GATE_DEVICE: which suites and device (the script's own test runs tiny CPU suites)
suites=${POETX_GATE_SUITES:-gpu-gate-layer gpu-gate-train}
device=${POETX_GATE_DEVICE:-cuda}
refresh=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#-}" = "$2" ] \
             || { echo "gpu-gate: --out needs a directory (got '${2:-}')" >&2; exit 2; }; out=$2; shift 2 ;;
    --new-baseline) refresh=1; shift ;;
    --) shift; break ;;
    *) echo "gpu-gate: unknown option '$1' (use --out DIR, --new-baseline, -- GATE OPTIONS)" >&2; exit 2 ;;
  esac
done

if [ "$refresh" = 0 ] && [ ! -f "$baseline" ]; then
  echo "gpu-gate: no baseline $baseline yet: record one on an H100 with 'bash bench/gpu-gate.sh --new-baseline'" >&2
  exit 2
fi
[ -f "$rules" ] || { echo "gpu-gate: rules file $rules not found" >&2; exit 2; }
if [ "$refresh" = 1 ] && [ -n "${POETX_BENCH_INJECTED_DELAY_MS:-}" ]; then
  echo "gpu-gate: POETX_BENCH_INJECTED_DELAY_MS is set: a slowed run must not become the baseline (unset it)" >&2
  exit 2
fi
# DIR is emptied before the run: only a folder this script made (it holds .gpu-gate-out) or a new/empty one
if [ -e "$out" ] && [ ! -f "$out/.gpu-gate-out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  echo "gpu-gate: --out $out exists and was not made by this script: not emptying it (choose a new folder)" >&2
  exit 2
fi
set -f  # the suite list is split on whitespace, never glob-expanded
suite_list=($suites)
set +f
[ "${#suite_list[@]}" -gt 0 ] || { echo "gpu-gate: POETX_GATE_SUITES names no suite" >&2; exit 2; }

# the baseline's GPU model must be this machine's (an H200 run is not an H100 baseline): say so now,
# not after the sweeps; the gate checks every pair again
case " $* " in *" --allow-different-devices "*) ;; *)
  if [ "$refresh" = 0 ]; then
    "$py" - "$baseline" <<'PY'
import json, sys
from poetx_bench.env import static_env
here = static_env().get("device_name")  # the GPU model, or the CPU model where no GPU is
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
theirs = sorted({str((r.get("env") or {}).get("device_name")) for r in rows})
if theirs != [str(here)]:
    print(f"gpu-gate: baseline {sys.argv[1]} was measured on {', '.join(theirs)}, this machine is {here}: "
          "not comparable (-- --allow-different-devices to run anyway)", file=sys.stderr)
    sys.exit(2)
PY
  fi ;;
esac

# each suite sweeps into its own folder (a results folder belongs to one run); the gate reads their union
rm -rf -- "$out"
mkdir -p -- "$out"
touch "$out/.gpu-gate-out"
results="$out/results.jsonl"
: > "$results"
i=0
for suite in "${suite_list[@]}"; do
  i=$((i + 1))
  name=$(basename -- "${suite%.toml}")
  "$py" -m poetx_bench sweep --suite "$suite" --device "$device" --out "$out/$i-$name"
  cat "$out/$i-$name/results.jsonl" >> "$results"
done
[ -s "$results" ] || { echo "gpu-gate: the suites wrote no rows to $results" >&2; exit 2; }

if [ "$refresh" = 1 ]; then
  "$py" - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
bad = [f"{r['config']['method']} {r['config'].get('model') or r['config'].get('in_features')}: {r['status']}"
       for r in rows if r["status"] != "ok"]
bad += [f"{r['config']['method']}: injected_delay_ms={r['metrics']['injected_delay_ms']}"
        for r in rows if (r.get("metrics") or {}).get("injected_delay_ms")]
if bad:
    print(f"gpu-gate: not writing the baseline, {len(bad)} points did not finish ok or were slowed on "
          f"purpose: {'; '.join(bad)}",
          file=sys.stderr)
    sys.exit(2)
PY
  mkdir -p "$(dirname "$baseline")"
  cp "$results" "$baseline"
  echo "gpu-gate: wrote $baseline ($(wc -l < "$baseline") rows); commit it with the change it reflects"
  exit 0
fi

"$py" -m poetx_bench gate --baseline "$baseline" --current "$results" --rules "$rules" \
  --summary "$out/gate.md" "$@"
