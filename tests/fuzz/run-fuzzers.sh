#!/bin/sh
# run-fuzzers.sh - run libFuzzer targets for a while (`make fuzz`).
#
#   run-fuzzers.sh BUILD_FUZZ_DIR SEED_CORPUS_DIR LSAN_SUPPRESSIONS TARGET...
#
# Each fuzz_TARGET first replays its seed corpus (SEED_CORPUS_DIR/TARGET,
# never written to) and what earlier runs found (BUILD_FUZZ_DIR/work/
# corpus/TARGET, where new inputs go), then fuzzes for FUZZ_SECONDS
# (default 20); FUZZ_JOBS targets run at once (default 2).  A crash, a
# leak, a sanitizer report or a failed check fails the target; its input
# is kept as BUILD_FUZZ_DIR/work/crash-TARGET-*.  Writes one line per
# target ("PASS: fuzz_conn ...", "FAIL: ...") to stdout and to
# BUILD_FUZZ_DIR/fuzz-suite.log, with "# PASS: N" and "# FAIL: N" lines
# as automake's test-suite.log has; exits 1 if any target failed.
set -u
dir=$1 seeds=$2 supp=$3
shift 3
secs=${FUZZ_SECONDS:-20}
jobs=${FUZZ_JOBS:-2}
work=$dir/work
mkdir -p "$work"
rm -f "$work"/*.result

run_one() {
	t=$1
	mkdir -p "$work/corpus/$t"
	# -rss_limit_mb: the config parser may map up to 4 MiB per file and
	# libconfig more; -timeout: one input never takes a second
	LSAN_OPTIONS="suppressions=$supp:print_suppressions=0:${LSAN_OPTIONS-}" \
	"$dir/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-max_len=8192 -print_final_stats=1 -artifact_prefix="$work/crash-$t-" \
		"$work/corpus/$t" "$seeds/$t" >"$work/$t.log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -n 1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$t.log" | tail -n 1)
	cov=$(grep -o 'cov: [0-9]*' "$work/$t.log" | tail -n 1)
	if [ $rc -eq 0 ]; then
		res=PASS
	else
		res=FAIL
	fi
	echo "$res: fuzz_$t ($secs s: ${execs:-?} execs, ${rate:-?} exec/s, ${cov:-cov: ?}, exit $rc)" \
		>"$work/$t.result"
	if [ $rc -ne 0 ]; then
		{
			echo "--- fuzz_$t: last lines of $work/$t.log"
			tail -n 40 "$work/$t.log"
		} >>"$work/$t.result"
	fi
}

# at most $jobs at once, without bash or xargs -P tricks
running=0
for t in "$@"; do
	run_one "$t" &
	running=$((running + 1))
	if [ $running -ge "$jobs" ]; then
		wait
		running=0
	fi
done
wait

pass=0 fail=0
: >"$dir/fuzz-suite.log"
for t in "$@"; do
	if [ -f "$work/$t.result" ] && head -n 1 "$work/$t.result" | grep -q '^PASS'; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
		[ -f "$work/$t.result" ] || echo "FAIL: fuzz_$t (no result)" >"$work/$t.result"
	fi
	cat "$work/$t.result" | tee -a "$dir/fuzz-suite.log"
done
{
	echo "# TOTAL: $((pass + fail))"
	echo "# PASS:  $pass"
	echo "# FAIL:  $fail"
} | tee -a "$dir/fuzz-suite.log"
[ $fail -eq 0 ]
