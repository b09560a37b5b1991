#!/usr/bin/env bash
# Runs the fault scenarios of docs/fault-matrix.md that have a runner here,
# each for a bounded time, and writes docs/faults-report.md: one table row per
# scenario (scenario, iterations, seed, duration, result, figures).
#
#   hack/faults.sh                  # every scenario, 120 s per fuzz target
#   FUZZ_SECS=60 hack/faults.sh     # shorter fuzzing
#   hack/faults.sh fuzz_ops f1      # only these scenarios (function names minus scenario_)
#   MATRIX_FILTER=faults_c hack/faults.sh matrix   # only the C tests, full counts
#   FAULTS_FULL=0 hack/faults.sh matrix            # every fault test at CI counts (quick)
#
# Fuzzing needs cargo-fuzz (installed from crates.io if missing) and nightly
# flags, which RUSTC_BOOTSTRAP=1 enables on the stable toolchain.
#
# Adding a scenario: write a `scenario_NAME` function that runs it and calls
# `row SCENARIO ITERATIONS SEED DURATION RESULT FIGURES` once, then add NAME
# to SCENARIOS. A scenario that fails still writes its row; the script exits
# non-zero at the end if any row says fail.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

FUZZ_SECS=${FUZZ_SECS:-120}
SEED=${SEED:-1}
REPORT=${REPORT:-docs/faults-report.md}
# Private target directories so a run does not disturb other builds.
FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}-libfuzzer}
BENCH_TARGET_DIR=${BENCH_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}-release}
WORK=$(mktemp -d -t bosh-faults.XXXXXX)
ROWS=$WORK/rows
: >"$ROWS"
FAILED=0

SCENARIOS=(matrix fuzz_manifest fuzz_configs fuzz_ops fuzz_release_tarball fuzz_agent_message f1)

# row SCENARIO ITERATIONS SEED DURATION RESULT FIGURES: one line of the table.
row() {
  printf '| %s | %s | %s | %s | %s | %s |\n' "$@" >>"$ROWS"
  [[ $5 == pass ]] || FAILED=1
  echo "faults: $1: $5 ($6)"
}

ensure_cargo_fuzz() {
  command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
}

# fuzz TARGET SCENARIO-LABEL: runs one cargo-fuzz target for FUZZ_SECS from a
# scratch copy of its committed corpus (libFuzzer adds to its first corpus
# directory; the committed seeds stay as they are).
fuzz() {
  local target=$1 label=$2 corpus=$WORK/corpus-$1 log=$WORK/fuzz-$1.log
  ensure_cargo_fuzz || { row "$label" 0 "$SEED" 0s fail "cargo-fuzz not installable"; return; }
  mkdir -p "$corpus" "$WORK/artifacts-$target"
  cp fuzz/corpus/"$target"/* "$corpus"/
  if ! (cd fuzz && RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$FUZZ_TARGET_DIR cargo fuzz build -O \
    "$target") >"$log" 2>&1; then
    row "$label" 0 "$SEED" 0s fail "build failed; log $log"
    return
  fi
  local start=$SECONDS
  (cd fuzz && RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$FUZZ_TARGET_DIR cargo fuzz run -O "$target" \
    "$corpus" -- -max_total_time="$FUZZ_SECS" -seed="$SEED" -rss_limit_mb=2048 \
    -max_len=65536 -artifact_prefix="$WORK/artifacts-$target/" -print_final_stats=1) \
    >"$log" 2>&1
  local rc=$? took=$((SECONDS - start))
  local execs cov
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1)
  if [[ $rc -eq 0 ]]; then
    row "$label" "${execs:-?}" "$SEED" "${took}s" pass "$cov; 0 crashes"
  else
    local crash
    crash=$(ls "$WORK/artifacts-$target" 2>/dev/null | head -1)
    mkdir -p fuzz/artifacts/"$target"
    [[ -n $crash ]] && cp "$WORK/artifacts-$target/$crash" fuzz/artifacts/"$target"/
    row "$label" "${execs:-?}" "$SEED" "${took}s" fail \
      "exit $rc; input fuzz/artifacts/$target/${crash:-none}; log $log"
  fi
}

scenario_fuzz_manifest() { fuzz manifest "fuzz: deployment manifest parse + validate"; }
scenario_fuzz_configs() { fuzz configs "fuzz: cloud + runtime config parse + validate"; }
scenario_fuzz_ops() { fuzz ops "fuzz: ops files + vars applied to a document"; }
scenario_fuzz_release_tarball() { fuzz release_tarball "fuzz: release tarball read + verify"; }
scenario_fuzz_agent_message() { fuzz agent_message "fuzz: agent messages + settings decode"; }

# The fault tests (controllers/tests/integration_tests/faults/) with the
# matrix's iteration counts (FAULTS_FULL=1), one at a time so their timings
# are their own. Each passing test prints one `FAULT-REPORT|id|iterations|
# seed|figures` line, which becomes its row; a test that fails gets a row
# saying so, with its seed from the `seed N` line it logged.
scenario_matrix() {
  local log=$WORK/matrix.log filter=${MATRIX_FILTER:-}
  FAULTS_FULL=${FAULTS_FULL:-1} FAULTS_SEED=${FAULTS_SEED:-} cargo nextest run -p bosh-controllers \
    --features failpoints --profile faults-full --no-capture --no-fail-fast \
    -E "test(/^integration_tests::faults::.*${filter}/)" >"$log" 2>&1
  local rc=$?
  grep -a '^FAULT-REPORT|' "$log" | while IFS='|' read -r _ id n seed figures; do
    row "$id" "$n" "$seed" "-" pass "$figures"
  done
  # nextest prints `FAIL [ 12.3s] bosh-controllers::test_all integration_tests::faults::...`.
  local failed
  failed=$(grep -aoE 'FAIL \[ *[0-9.]+s\] .*integration_tests::faults::[a-z0-9_:]+' "$log" | sort -u)
  while read -r line; do
    [[ -z $line ]] && continue
    local name=${line##*::} took
    took=$(sed -E 's/FAIL \[ *([0-9.]+)s\].*/\1/' <<<"$line")
    row "$name" "-" "${FAULTS_SEED:-see log}" "${took}s" fail "log $log"
  done <<<"$failed"
  if [[ $rc -ne 0 && -z $failed ]]; then
    row "fault tests" 0 "-" "-" fail "nextest exit $rc; log $log"
  fi
}

# F1: 1,000 fuzzed manifests, timed in release mode (e2e/src/bin/bench-validate.rs).
scenario_f1() {
  local log=$WORK/f1.log start=$SECONDS f1_seed=${F1_SEED:-15802406}
  if ! CARGO_TARGET_DIR=$BENCH_TARGET_DIR cargo build --release -q -p bosh-e2e \
    --bin bench-validate >"$log" 2>&1; then
    row "F1 fuzzed manifests" 0 "$f1_seed" 0s fail "build failed; log $log"
    return
  fi
  "$BENCH_TARGET_DIR"/release/bench-validate --cases 1000 --seed "$f1_seed" >>"$log" 2>&1
  local rc=$? took=$((SECONDS - start)) line
  line=$(grep '^F1 cases=' "$log" | tail -1)
  field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
  local panics unnamed p99 peak result=pass
  panics=$(field panics) unnamed=$(field unnamed) p99=$(field p99_ms) peak=$(field peak_rss_mib)
  if [[ $rc -ne 0 || -z $line || $panics != 0 || $unnamed != 0 ]] ||
    awk -v p="$p99" -v r="$peak" 'BEGIN { exit !(p >= 100 || r >= 256) }'; then
    result=fail
  fi
  row "F1 fuzzed manifests (type flips, missing keys, unicode, 10 MB strings, alias bombs)" \
    1000 "$f1_seed" "${took}s" "$result" \
    "panics $panics; rejections without path/line $unnamed; p99 $p99 ms (target < 100), max $(field max_ms) ms; baseline p99 $(field baseline_p99_ms) ms; ratio $(field ratio)x; peak RSS $peak MiB (target < 256)"
}

wanted=("$@")
[[ ${#wanted[@]} -eq 0 ]] && wanted=("${SCENARIOS[@]}")
for s in "${wanted[@]}"; do
  "scenario_$s"
done

mkdir -p "$(dirname "$REPORT")"
# Rows of scenarios not run this time stay as the last run left them.
if [[ -f $REPORT ]]; then
  awk -F'|' 'NR == FNR { run[$2] = 1; next }
    /^\| / && !/^\| scenario / && !/^\| --- / && !($2 in run) { print }' \
    "$ROWS" "$REPORT" >"$WORK/kept"
  cat "$WORK/kept" >>"$ROWS"
fi
{
  echo "# Fault scenarios: report"
  echo
  echo "Written by \`hack/faults.sh\` (scenarios from docs/fault-matrix.md)."
  echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), FUZZ_SECS=$FUZZ_SECS, FAULTS_FULL=${FAULTS_FULL:-1}, $(nproc) cores,"
  echo "$(rustc --version). Fuzz iterations are libFuzzer's executed units;"
  echo "rows of scenarios not re-run in this run keep their earlier figures."
  echo
  echo "| scenario | iterations | seed | duration | result | figures |"
  echo "| --- | --- | --- | --- | --- | --- |"
  cat "$ROWS"
} >"$REPORT"
echo "faults: report in $REPORT (logs in $WORK)"
exit "$FAILED"
