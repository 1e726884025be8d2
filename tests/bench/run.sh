#!/usr/bin/env bash
# Benchmarks, each printing ratios against a baseline measured in the same
# run.  A benchmark, not a test: it asserts nothing, and the machines are
# shared and noisy, so run it more than once.
#
#   bash tests/bench/run.sh [throughput] [wake] [persist]     (default: all)
#
# throughput: acquire + release on one hot model with all five limits set,
#   against two SELECT 1 round trips and a table-based PL/pgSQL fixed-window
#   limiter, with pgbench (-M prepared, 8 clients), round robin.
# wake: from a window reset to (a) blocked rl_acquire calls returning and
#   (b) LISTENing libpq clients being notified, with 100 waiters.
# persist: acquire + release throughput while the worker saves 10,000
#   changed models every second, against the same with saving off.
#
#   DURATION=5 ROUNDS=1 bash tests/bench/run.sh throughput
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-8}
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(throughput wake persist)
wants() { [[ " ${sections[*]} " == *" $1 "* ]]; }

install_deps
build_and_install
dir=$(make_server_dir)
trap 'stop_server "$dir"; rm -rf "$dir"' EXIT
# the wake-latency benchmark moves the test clock across window resets
start_server "$dir" ratelimit_bench "max_connections = 200" "ratelimit.max_models = 12000" \
	"ratelimit.max_leases = 100000" "ratelimit.enable_test_clock = on"
export PGOPTIONS="-c client_min_messages=warning"
psql -Xq -c "CREATE DATABASE ratelimit_bench"
export PGDATABASE=ratelimit_bench
# the worker connects to the new database within a second
sleep 1.5
psql -Xq -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
CREATE EXTENSION pg_ratelimit;
SELECT rl_define_model('bench/hot', rpm => 1000000000000, tpm => 1000000000000000,
					   rpd => 10000000000000, tpd => 10000000000000000,
					   max_concurrent => 1000);
-- two job types share it: a flexible one (the workload below) and a fixed one
SELECT rl_define_job_type('bench_chat', ratio => 0.5);
SELECT rl_define_job_type('bench_batch', ratio => 0.3, flexible => false);
SQL
psql -Xq -v ON_ERROR_STOP=1 -f "$REPO_ROOT/tests/bench/plpgsql_limiter.sql" >/dev/null

scripts=$(mktemp -d)
chmod 755 "$scripts"
trap 'stop_server "$dir"; rm -rf "$dir" "$scripts"' EXIT
cat >"$scripts/select1.sql" <<'SQL'
SELECT 1;
SELECT 1;
SQL
cat >"$scripts/pg_ratelimit.sql" <<'SQL'
SELECT lease_id FROM rl_acquire('bench/hot', tokens => 100) \gset
SELECT released FROM rl_release(:lease_id, input_tokens => 60, output_tokens => 20);
SQL
# the same pair, reading the one column it needs instead of a FROM-clause
# function scan (which materializes its row in a tuplestore)
cat >"$scripts/pg_ratelimit_column.sql" <<'SQL'
SELECT (rl_acquire('bench/hot', tokens => 100)).lease_id \gset
SELECT (rl_release(:lease_id, input_tokens => 60, output_tokens => 20)).released;
SQL
# the column form again, naming a job type: its share is checked and counted too
cat >"$scripts/pg_ratelimit_job_type.sql" <<'SQL'
SELECT (rl_acquire('bench/hot', 'bench_chat', tokens => 100)).lease_id \gset
SELECT (rl_release(:lease_id, input_tokens => 60, output_tokens => 20)).released;
SQL
cat >"$scripts/plpgsql.sql" <<'SQL'
SELECT pl_acquire('bench/hot', 100) AS lease_id \gset
SELECT pl_release(:lease_id, 80);
SQL
chmod -R a+r "$scripts"

# tps NAME: one pgbench run, prints transactions per second
tps() {
	pgbench -n -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" -f "$scripts/$1.sql" 2>&1 |
		sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}

# round_robin WORKLOAD...: ROUNDS rounds over the workloads (so that a noisy
# neighbour hits every one alike); fills total[WORKLOAD]
declare -A total
round_robin() {
	for w in "$@"; do total[$w]=0; done
	for round in $(seq "$ROUNDS"); do
		for w in "$@"; do
			[ "$(type -t "before_$w")" = function ] && "before_$w"
			t=$(tps "${script_of[$w]:-$w}")
			printf 'round %d  %-20s %10.0f pairs/s\n' "$round" "$w" "$t"
			total[$w]=$(awk -v a="${total[$w]}" -v b="$t" 'BEGIN { print a + b }')
		done
	done
}
declare -A script_of

if wants throughput; then
	echo "== throughput"
	round_robin select1 pg_ratelimit pg_ratelimit_column pg_ratelimit_job_type plpgsql
	# the limiter must have granted and released everything it was asked
	psql -XAtq -c "SELECT 'pg_ratelimit status: granted ' || granted || ', denied ' || denied || ', in flight ' || in_flight FROM rl_status WHERE model = 'bench/hot'"
	echo
	echo "pgbench -M prepared, $CLIENTS clients, $ROUNDS x ${DURATION}s per workload, $(nproc) cores"
	awk -v s="${total[select1]}" -v r="${total[pg_ratelimit]}" -v c="${total[pg_ratelimit_column]}" \
		-v j="${total[pg_ratelimit_job_type]}" -v p="${total[plpgsql]}" -v n="$ROUNDS" 'BEGIN {
		printf "two SELECT 1 round trips          : %10.0f pairs/s\n", s / n
		printf "pg_ratelimit, SELECT * FROM ...   : %10.0f pairs/s\n", r / n
		printf "pg_ratelimit, SELECT (...).column : %10.0f pairs/s\n", c / n
		printf "  the same with a job type        : %10.0f pairs/s\n", j / n
		printf "PL/pgSQL table limiter            : %10.0f pairs/s\n", p / n
		printf "ratio pg_ratelimit / SELECT 1 pairs: %.2f (FROM form), %.2f (column form)\n", r / s, c / s
		printf "ratio with a job type / without    : %.2f (column form)\n", j / c
		printf "ratio pg_ratelimit / PL/pgSQL      : %.1f (FROM form), %.1f (column form)\n", r / p, c / p
	}'
	echo
fi

if wants wake; then
	echo "== wake latency"
	make -C "$REPO_ROOT" -s tests/bench/wake_latency PG_CONFIG="$PG_BIN/pg_config" >/dev/null
	"$REPO_ROOT/tests/bench/wake_latency" "host=$PGHOST port=$PGPORT user=$PGUSER dbname=$PGDATABASE" \
		"${WAITERS:-100}" "${LISTENERS:-10}" "${RESETS:-10}"
	echo "targets: p99 under 5 ms (blocked acquire), under 20 ms (notification)"
	echo
fi

if wants persist; then
	echo "== persistence overhead"
	psql -Xq -c "INSERT INTO rl_model (model, rpm) SELECT 'bulk/' || i, 1000000000 FROM generate_series(1, 10000) i"
	# every second, change the counters of all 10,000 models
	(
		while :; do
			psql -XAtq -c "SELECT count(*) FROM rl_model m WHERE m.model LIKE 'bulk/%'
						   AND (rl_release((rl_acquire(m.model)).lease_id)).released" >/dev/null || exit
			sleep 1
		done
	) &
	churn=$!
	before_saving() { psql -XAtq -c "ALTER SYSTEM SET ratelimit.persist_interval = '1s'" -c "SELECT pg_reload_conf()" >/dev/null; sleep 1; }
	before_not_saving() { psql -XAtq -c "ALTER SYSTEM SET ratelimit.persist_interval = '1h'" -c "SELECT pg_reload_conf()" >/dev/null; sleep 1; }
	script_of[saving]=pg_ratelimit
	script_of[not_saving]=pg_ratelimit
	round_robin saving not_saving
	kill "$churn" 2>/dev/null || true
	wait "$churn" 2>/dev/null || true
	psql -XAtq -c "SELECT 'rows saved in rl_counter: ' || count(*) FROM rl_counter"
	awk -v a="${total[saving]}" -v b="${total[not_saving]}" -v n="$ROUNDS" 'BEGIN {
		printf "acquire+release, saving 10,000 models every second: %10.0f pairs/s\n", a / n
		printf "acquire+release, saving off                       : %10.0f pairs/s\n", b / n
		printf "ratio saving / not saving: %.3f (target >= 0.9)\n", a / b
	}'
fi
