#!/usr/bin/env bash
# Run every pg_ratelimit test on a throwaway server:
#   pg_regress (sql/, expected/), isolation specs (tests/isolation/),
#   the many-client stress test (tests/stress/), TAP tests (tests/t/),
#   failovers under Patroni (tests/ha/) and the provider simulator's own
#   tests (tests/provider/).
#
# Installs missing Debian packages when run as root, builds and installs the
# extension, then runs the suites as the postgres user (as root) or as the
# current user.  Ends with a line "N passed, N failed".
#
# RL_PG_MAJOR=17 or 18 runs the suites against that PostgreSQL (built once
# by scripts/build-postgres.sh); there the default suites are the ones that
# exercise the server (regress, isolation, stress, tap): the others check
# the sources, or run on 15 only to keep CI short (demo, ha).
# scripts/test-matrix.sh runs every version.
#
# While developing, SUITES picks suites and PROVE_TESTS picks TAP files:
#   SUITES="regress tap" PROVE_TESTS=tests/t/004_persistence.pl bash scripts/test.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [ "${1:-}" != "--inner" ]; then
	# tests/t/020_pooler.pl runs PgBouncer and the psycopg example through it
	optional=(pgbouncer python3-psycopg)
	# tests/t/050_prometheus.pl runs contrib/prometheus/queries.yaml through
	# the Prometheus PostgreSQL exporter
	optional+=(prometheus-postgres-exporter)
	# the demo suite draws the demo's picture with gnuplot
	optional+=(gnuplot-nox)
	install_deps "${optional[@]}"
	# tests/t/026_examples.pl runs the README's Python and Node clients (npm
	# installs their pg; some nodejs packages bring their own npm)
	command -v npm >/dev/null || install_deps nodejs npm
	# tests/ha/run.sh runs etcd and three PostgreSQL nodes under Patroni
	install_deps patroni etcd-server
	# the extension's own assertions (lock preconditions) are checked in
	# tests; a compiler warning (-Wall -Wextra) fails the run
	export ASSERTS=1
	# (here, where a failure stops the run: inside the condition below set -e
	# does not apply)
	use_private_postgres
	if ! build_and_install COPT=-Werror; then
		echo "not ok - pg_ratelimit builds for PostgreSQL $PG_MAJOR without warnings"
		echo "0 passed, 1 failed"
		exit 1
	fi
	log "pg_ratelimit built for PostgreSQL $PG_MAJOR without warnings"
	if is_root; then
		# pg_regress writes into the tree and TAP refuses root: run a copy
		work=$(make_server_dir)
		cp -a "$REPO_ROOT/." "$work/src"
		chown -R postgres:postgres "$work/src"
		status=0
		runuser -u postgres -- bash "$work/src/scripts/test.sh" --inner || status=$?
		rm -rf "$work"
		exit $status
	fi
	exec bash "$REPO_ROOT/scripts/test.sh" --inner
fi

cd "$REPO_ROOT"
make -s clean >/dev/null 2>&1 || true
dir=$(make_server_dir)
trap 'stop_server "$dir"; rm -rf "$dir"' EXIT
# the tests move the limiter's clock: a throwaway server may enable it
start_server "$dir" contrib_regression "fsync = off" "ratelimit.enable_test_clock = on"
psql -Xq -c "CREATE DATABASE contrib_regression"
# the launcher starts the background worker once the database exists
for _ in $(seq 50); do
	[ "$(psql -XAtq -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'")" = 1 ] && break
	sleep 0.2
done
log "test server on $dir (database contrib_regression)"

passed=0
failed=0
# count_results LOG: add the suite's per-test results to the totals
count_results() {
	local ok bad
	ok=$(grep -cE '(\.\.\. ok|^ok [0-9]+ |\.\. ok$)' "$1" || true)
	bad=$(grep -cE '(\.\.\. FAILED|^not ok [0-9]+ |\.\. (Dubious|Failed))' "$1" || true)
	passed=$((passed + ok))
	failed=$((failed + bad))
}

if [ "$PG_MAJOR" = "$SYSTEM_PG_MAJOR" ]; then
	SUITES=${SUITES:-structure provider regress isolation stress tap ha demo}
else
	SUITES=${SUITES:-regress isolation stress tap}
fi
log "PostgreSQL $(postgres --version | sed 's/^postgres (PostgreSQL) //'): $SUITES"

run_suite() {
	local name=$1
	shift
	[[ " $SUITES " == *" $name "* ]] || return 0
	log "$name"
	local out="$dir/$name.log"
	if ! "$@" 2>&1 | tee "$out"; then
		failed=$((failed + 1))
		[ -f regression.diffs ] && cat regression.diffs
		[ -f output_iso/regression.diffs ] && cat output_iso/regression.diffs
	fi
	count_results "$out"
}

# the modules call each other without cycles (src/README.md)
run_suite structure bash -c 'make -s with_llvm=no >/dev/null && python3 tools/module_graph.py'
# the control file, upgrade scripts, Makefile and META.json agree
run_suite structure python3 tools/check_packaging.py
# the C sources are laid out as pgindent lays them out, with pgindent from a
# PostgreSQL source tree (scripts/build-postgres.sh installs it)
check_layout() {
	local tools=${RL_PG_CACHE:-/var/cache/pg_ratelimit-postgres}/pgindent
	if [ ! -x "$tools/bin/pgindent" ]; then
		echo "ok 1 # skip pgindent is not installed (scripts/build-postgres.sh installs it)"
	elif PATH="$tools/bin:$PATH" make -s pgindent-check PGINDENT="$tools/bin/pgindent"; then
		echo "ok 1 - the C sources are as pgindent lays them out, typedefs.list is current"
	else
		echo "not ok 1 - the C sources are as pgindent lays them out, typedefs.list is current"
	fi
}
run_suite structure check_layout
# the fake LLM provider the benchmarks and tests/t/028 call (no server needed)
run_suite provider python3 tests/provider/test_simulator.py
run_suite regress make -s installcheck ISOLATION= TAP_TESTS=
run_suite isolation make -s installcheck REGRESS= TAP_TESTS=
run_suite stress bash tests/stress/run.sh
run_suite tap make -s installcheck REGRESS= ISOLATION= PROVE_FLAGS=--verbose
# failovers under Patroni, on servers of its own (about 80 s)
run_suite ha bash tests/ha/run.sh

# scripts/demo.sh, shortened to 5 s, on a server of its own: it runs, finds no
# admission past a limit, and draws its picture from its per-second samples
check_demo() {
	local out="$dir/demo_output" rows
	if DURATION=5 DEMO_OUTPUT="$out" bash scripts/demo.sh >"$dir/demo_run.log" 2>&1 &&
		grep -q '^ok: requests and concurrency within their limits' "$dir/demo_run.log"; then
		echo "ok 1 - scripts/demo.sh runs and no admission passed a limit"
	else
		cat "$dir/demo_run.log"
		echo "not ok 1 - scripts/demo.sh runs and no admission passed a limit"
	fi
	rows=$(awk -F, 'NR > 1 && $2 + $3 > 0' "$out/demo.csv" 2>/dev/null | wc -l)
	if [ "$rows" -ge 1 ]; then
		echo "ok 2 - demo.csv has samples with admissions: $rows"
	else
		echo "not ok 2 - demo.csv has samples with admissions: ${rows:-none}"
	fi
	if ! command -v gnuplot >/dev/null; then
		echo "ok 3 # skip gnuplot is not installed"
	elif [ "$(head -c 8 "$out/demo.png" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then
		echo "ok 3 - demo.png is a PNG"
	else
		echo "not ok 3 - demo.png is a PNG"
	fi
}
run_suite demo check_demo

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
