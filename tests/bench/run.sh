#!/usr/bin/env bash
# Benchmarks, each printing ratios against a baseline measured in the same
# run.  A benchmark, not a test: it asserts nothing, and the machines are
# shared and noisy, so run it more than once.
#
#   bash tests/bench/run.sh [throughput] [wake] [persist] [leases] [goodput]   (default: all)
#
# throughput: acquire + release on one hot model with all five limits set (and
#   on the same limits as token buckets, window_type bucket),
#   against two SELECT 1 round trips and a table-based PL/pgSQL fixed-window
#   limiter, with pgbench (-M prepared, 8 clients), round robin.
# wake: from a window reset to (a) blocked rl_acquire calls returning and
#   (b) LISTENing libpq clients being notified, with 100 waiters.
# persist: acquire + release throughput while the worker saves 10,000
#   changed models every second, against the same with saving off.
#
# leases: acquire + release throughput (64 clients) with 100,000 open leases
#   spread over 10,000 models, against the same with none, each as a ratio
#   of two SELECT 1 round trips; and the worker's CPU over 30 s with the
#   100,000 leases open and no traffic, and during the runs.
#
# goodput: 32 clients (psycopg, one connection each) in waves of demand call
#   a provider simulator (tests/provider/simulator.py, token buckets of rpm
#   600 and tpm 60000) through the limiter: acquire waiting in the server,
#   the call (actual usage within +-30 % of the estimate), rl_observe,
#   release.  Per scenario (fixed, bucket, bucket + rl_observe, with a client
#   that bypasses the limiter, ...): the provider's 429s and the utilisation
#   (what the provider accepted / what an ideal replay of the demand gets
#   under its limits; tests/bench/goodput.py explains).  DURATION seconds per
#   scenario, 120 by default (7 scenarios, about 17 minutes); SCENARIOS picks
#   some, NETWORK_MS=MIN:MAX adds a network delay each way.
#
#   DURATION=5 ROUNDS=1 bash tests/bench/run.sh throughput
#   DURATION=30 SCENARIOS="fixed bucket+observe" bash tests/bench/run.sh goodput
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"

# goodput's scenarios last 120 s unless DURATION says otherwise
GOODPUT_DURATION=${DURATION:-120}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-8}
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(throughput wake persist leases goodput)
wants() { [[ " ${sections[*]} " == *" $1 "* ]]; }

# goodput's clients are Python (psycopg 3, Debian's python3-psycopg)
if wants goodput; then install_deps python3-psycopg; else install_deps; fi
build_and_install
dir=$(make_server_dir)
trap 'stop_server "$dir"; rm -rf "$dir"' EXIT
# the wake-latency benchmark moves the test clock across window resets
start_server "$dir" ratelimit_bench "max_connections = 200" "ratelimit.max_models = 22000" \
	"ratelimit.max_leases = 200000" "ratelimit.enable_test_clock = on"
export PGOPTIONS="-c client_min_messages=warning"
# the extension lives in the schema ratelimit
psql -Xq -c "CREATE DATABASE ratelimit_bench" \
	-c "ALTER DATABASE ratelimit_bench SET search_path = public, ratelimit"
export PGDATABASE=ratelimit_bench
# the worker connects to the new database within a second
sleep 1.5
psql -Xq -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
CREATE EXTENSION pg_ratelimit;
SELECT rl_define_model('bench/hot', rpm => 1000000000000, tpm => 1000000000000000,
					   rpd => 10000000000000, tpd => 10000000000000000,
					   max_concurrent => 1000);
-- the same limits as token buckets, refilled on every call
SELECT rl_define_model('bench/bucket', rpm => 1000000000000, tpm => 1000000000000000,
					   rpd => 10000000000000, tpd => 10000000000000000,
					   max_concurrent => 1000, window_type => 'bucket');
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
# the column form on a bucket model
cat >"$scripts/pg_ratelimit_bucket.sql" <<'SQL'
SELECT (rl_acquire('bench/bucket', tokens => 100)).lease_id \gset
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

# tps_of WORKLOAD: its script, with its number of clients
tps_of() {
	pgbench -n -M prepared -c "${clients_of[$1]:-$CLIENTS}" -j 2 -T "$DURATION" \
		-f "$scripts/${script_of[$1]:-$1}.sql" 2>&1 | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}

# round_robin WORKLOAD...: ROUNDS rounds over the workloads (so that a noisy
# neighbour hits every one alike); fills total[WORKLOAD]
declare -A total
round_robin() {
	for w in "$@"; do total[$w]=0; done
	for round in $(seq "$ROUNDS"); do
		for w in "$@"; do
			[ "$(type -t "before_$w")" = function ] && "before_$w"
			t=$(tps_of "$w")
			[ "$(type -t "after_$w")" = function ] && "after_$w"
			printf 'round %d  %-20s %10.0f pairs/s\n' "$round" "$w" "$t"
			total[$w]=$(awk -v a="${total[$w]}" -v b="$t" 'BEGIN { print a + b }')
		done
	done
}
declare -A script_of
declare -A clients_of

if wants throughput; then
	echo "== throughput"
	round_robin select1 pg_ratelimit pg_ratelimit_column pg_ratelimit_bucket pg_ratelimit_job_type plpgsql
	# the limiter must have granted and released everything it was asked
	psql -XAtq -c "SELECT 'pg_ratelimit status: granted ' || granted || ', denied ' || denied || ', in flight ' || in_flight FROM rl_status WHERE model = 'bench/hot'"
	echo
	echo "pgbench -M prepared, $CLIENTS clients, $ROUNDS x ${DURATION}s per workload, $(nproc) cores"
	awk -v s="${total[select1]}" -v r="${total[pg_ratelimit]}" -v c="${total[pg_ratelimit_column]}" \
		-v j="${total[pg_ratelimit_job_type]}" -v p="${total[plpgsql]}" -v n="$ROUNDS" \
		-v b="${total[pg_ratelimit_bucket]}" 'BEGIN {
		printf "two SELECT 1 round trips          : %10.0f pairs/s\n", s / n
		printf "pg_ratelimit, SELECT * FROM ...   : %10.0f pairs/s\n", r / n
		printf "pg_ratelimit, SELECT (...).column : %10.0f pairs/s\n", c / n
		printf "  the same on a bucket model      : %10.0f pairs/s\n", b / n
		printf "  the same with a job type        : %10.0f pairs/s\n", j / n
		printf "PL/pgSQL table limiter            : %10.0f pairs/s\n", p / n
		printf "ratio pg_ratelimit / SELECT 1 pairs: %.2f (FROM form), %.2f (column form)\n", r / s, c / s
		printf "ratio with a job type / without    : %.2f (column form)\n", j / c
		printf "ratio bucket model / fixed model   : %.2f (column form)\n", b / c
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

# cpu_ticks PID: user + system CPU time of a process so far, in clock ticks
cpu_ticks() {
	awk '{ print $14 + $15 }' "/proc/$1/stat"
}

if wants leases; then
	echo "== open leases"
	LEASE_CLIENTS=${LEASE_CLIENTS:-64}
	IDLE_SECONDS=${IDLE_SECONDS:-30}
	# saving as configured (the persistence benchmark may have turned it down)
	psql -XAtq -c "ALTER SYSTEM RESET ratelimit.persist_interval" -c "SELECT pg_reload_conf()" >/dev/null
	sleep 1
	# no limits on these: no high-water marks to wait for while opening them
	psql -Xq -c "INSERT INTO rl_model (model) SELECT 'open/' || i FROM generate_series(1, 10000) i
				 ON CONFLICT DO NOTHING"
	worker=$(psql -XAtq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ratelimit worker'")
	hz=$(getconf CLK_TCK)
	# open_leases N: release every open lease, then open N (10 per model, an hour long)
	open_leases() {
		psql -XAtq -c "SELECT count(*) FROM rl_leases l WHERE (rl_release(l.lease_id)).released" >/dev/null
		psql -XAtq -v ON_ERROR_STOP=1 -c "SELECT count(*) FROM generate_series(1, $1) i
			WHERE (rl_acquire('open/' || (i % 10000 + 1), ttl => '1 hour')).granted" >/dev/null
		# the worker has saved them before the run starts
		until [ "$(psql -XAtq -c "SELECT count(*) FROM rl_lease_state")" = "$1" ]; do sleep 0.5; done
	}
	for w in select1 no_leases open_leases; do clients_of[$w]=$LEASE_CLIENTS; done
	script_of[no_leases]=pg_ratelimit
	script_of[open_leases]=pg_ratelimit
	before_no_leases() { open_leases 0; t0=$(cpu_ticks "$worker"); }
	before_open_leases() { open_leases 100000; t0=$(cpu_ticks "$worker"); }
	declare -A worker_ticks=([no_leases]=0 [open_leases]=0)
	after_no_leases() { worker_ticks[no_leases]=$((worker_ticks[no_leases] + $(cpu_ticks "$worker") - t0)); }
	after_open_leases() { worker_ticks[open_leases]=$((worker_ticks[open_leases] + $(cpu_ticks "$worker") - t0)); }
	round_robin select1 no_leases open_leases
	psql -XAtq -c "SELECT 'open leases now: ' || count(*) FROM rl_leases"
	# let the worker save what the last run changed, then measure it idle
	sleep 3
	t0=$(cpu_ticks "$worker")
	sleep "$IDLE_SECONDS"
	idle=$(($(cpu_ticks "$worker") - t0))
	awk -v s="${total[select1]}" -v z="${total[no_leases]}" -v o="${total[open_leases]}" -v n="$ROUNDS" \
		-v wz="${worker_ticks[no_leases]}" -v wo="${worker_ticks[open_leases]}" -v idle="$idle" \
		-v hz="$hz" -v d="$DURATION" -v secs="$IDLE_SECONDS" -v c="$LEASE_CLIENTS" 'BEGIN {
		printf "pgbench -M prepared, %d clients, %d x %ds per workload\n", c, n, d
		printf "two SELECT 1 round trips                   : %10.0f pairs/s\n", s / n
		printf "acquire+release, no open leases            : %10.0f pairs/s\n", z / n
		printf "acquire+release, 100,000 open leases       : %10.0f pairs/s\n", o / n
		printf "ratio / SELECT 1 pairs: %.2f (no open leases), %.2f (100,000 open leases)\n", z / s, o / s
		printf "ratio 100,000 open leases / none: %.3f (target >= 0.9)\n", o / z
		printf "worker CPU during the runs: %.1f %% of a core (no open leases), %.1f %% (100,000 open leases)\n",
			100 * wz / hz / (n * d), 100 * wo / hz / (n * d)
		printf "worker CPU with 100,000 open leases and no traffic, over %d s: %.2f %% of a core\n",
			secs, 100 * idle / hz / secs
	}'
fi

if wants goodput; then
	echo "== goodput"
	# the Python that has psycopg (Debian's, when another python3 comes first)
	python=""
	for p in python3 /usr/bin/python3; do
		if "$p" -c 'import psycopg' >/dev/null 2>&1; then python=$p; break; fi
	done
	if [ -z "$python" ]; then
		echo "goodput: skipped, psycopg 3 is not installed (apt-get install python3-psycopg)"
	else
		DURATION=$GOODPUT_DURATION "$python" "$REPO_ROOT/tests/bench/goodput.py" ||
			echo "goodput: ended with an error (exit $?)"
	fi
	echo
fi
