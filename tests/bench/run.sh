#!/usr/bin/env bash
# Benchmark: acquire + release on one hot model with all five limits set,
# against two SELECT 1 round trips and against a table-based PL/pgSQL
# fixed-window limiter, measured side by side in one run with pgbench
# (-M prepared, 8 clients).  Prints the throughput of each and the ratios.
#
#   bash tests/bench/run.sh            # 3 rounds of 10 s per workload
#   DURATION=5 ROUNDS=1 bash tests/bench/run.sh
#
# A benchmark, not a test: it asserts nothing and timings vary between runs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-8}

install_deps
build_and_install
dir=$(make_server_dir)
trap 'stop_server "$dir"; rm -rf "$dir"' EXIT
start_server "$dir" ratelimit_bench
export PGOPTIONS="-c client_min_messages=warning"
psql -Xq -c "CREATE DATABASE ratelimit_bench"
export PGDATABASE=ratelimit_bench
psql -Xq -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
CREATE EXTENSION pg_ratelimit;
SELECT rl_define_model('bench/hot', rpm => 1000000000000, tpm => 1000000000000000,
					   rpd => 10000000000000, tpd => 10000000000000000,
					   max_concurrent => 1000);
SQL
psql -Xq -v ON_ERROR_STOP=1 -f "$REPO_ROOT/tests/bench/plpgsql_limiter.sql" >/dev/null

scripts=$(mktemp -d)
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

workloads=(select1 pg_ratelimit pg_ratelimit_column plpgsql)
declare -A total
for w in "${workloads[@]}"; do total[$w]=0; done
# round robin, so that a noisy neighbour hits every workload alike
for round in $(seq "$ROUNDS"); do
	for w in "${workloads[@]}"; do
		t=$(tps "$w")
		printf 'round %d  %-20s %10.0f pairs/s\n' "$round" "$w" "$t"
		total[$w]=$(awk -v a="${total[$w]}" -v b="$t" 'BEGIN { print a + b }')
	done
done

# the limiter must have granted and released everything it was asked
psql -XAtq -c "SELECT 'pg_ratelimit status: granted ' || granted || ', denied ' || denied || ', in flight ' || in_flight FROM rl_status WHERE model = 'bench/hot'"

echo
echo "pgbench -M prepared, $CLIENTS clients, $ROUNDS x ${DURATION}s per workload, $(nproc) cores"
awk -v s="${total[select1]}" -v r="${total[pg_ratelimit]}" -v c="${total[pg_ratelimit_column]}" \
	-v p="${total[plpgsql]}" -v n="$ROUNDS" 'BEGIN {
	printf "two SELECT 1 round trips          : %10.0f pairs/s\n", s / n
	printf "pg_ratelimit, SELECT * FROM ...   : %10.0f pairs/s\n", r / n
	printf "pg_ratelimit, SELECT (...).column : %10.0f pairs/s\n", c / n
	printf "PL/pgSQL table limiter            : %10.0f pairs/s\n", p / n
	printf "ratio pg_ratelimit / SELECT 1 pairs: %.2f (FROM form), %.2f (column form)\n", r / s, c / s
	printf "ratio pg_ratelimit / PL/pgSQL      : %.1f (FROM form), %.1f (column form)\n", r / p, c / p
}'
rm -rf "$scripts"
