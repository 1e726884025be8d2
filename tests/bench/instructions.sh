#!/usr/bin/env bash
# Instructions per acquire + release pair, counted by valgrind's callgrind in
# the backend that runs them, against two SELECT 1 in the same run.  Unlike
# the throughput benchmark this does not depend on what else the machine is
# doing: the counts repeat to within a few tenths of a percent, so it shows
# what a change to the hot path costs.  A benchmark, not a test.
#
#   bash tests/bench/instructions.sh            (about a minute)
#
# The server runs under callgrind (slowly); the backends' counts are taken
# from two sessions of N and 5N pairs each, so that connection start-up
# cancels out.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"

PAIRS=${PAIRS:-500}

install_deps
if ! command -v valgrind >/dev/null; then
	is_root || die "valgrind is missing (sudo apt-get install valgrind)"
	apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
build_and_install
dir=$(make_server_dir)
mkdir "$dir/callgrind"
is_root && chown postgres "$dir/callgrind"
as_server_user "$PG_BIN/initdb" -D "$dir/data" -A trust -E UTF8 --no-locale >/dev/null
cat <<CONF | as_server_user tee -a "$dir/data/postgresql.conf" >/dev/null
shared_preload_libraries = 'pg_ratelimit'
ratelimit.database = 'postgres'
listen_addresses = ''
unix_socket_directories = '$dir'
fsync = off
autovacuum = off
CONF
as_server_user valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind/%p" -q \
	"$PG_BIN/postgres" -D "$dir/data" >"$dir/server.log" 2>&1 &
trap 'as_server_user "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
export PGHOST=$dir PGDATABASE=postgres
# the extension lives in the schema ratelimit
export PGOPTIONS="-c search_path=public,ratelimit"
if is_root; then export PGUSER=postgres; fi
for _ in $(seq 120); do "$PG_BIN/pg_isready" -q && break; sleep 1; done
psql -XAtq -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE EXTENSION pg_ratelimit;
SELECT rl_define_model('bench/hot', rpm => 1000000000000, tpm => 1000000000000000,
					   rpd => 10000000000000, tpd => 10000000000000000,
					   max_concurrent => 1000);
SELECT rl_define_model('bench/bucket', rpm => 1000000000000, tpm => 1000000000000000,
					   rpd => 10000000000000, tpd => 10000000000000000,
					   max_concurrent => 1000, window_type => 'bucket');
SQL

# pairs N [MODEL]: N acquire + release pairs, as the throughput benchmark sends them
pairs() {
	for _ in $(seq "$1"); do
		echo "SELECT (rl_acquire('${2:-bench/hot}', tokens => 100)).lease_id \\gset"
		echo "SELECT (rl_release(:lease_id, input_tokens => 60, output_tokens => 20)).released;"
	done
}
bucket_pairs() { pairs "$1" bench/bucket; }
select1() { for _ in $(seq "$1"); do echo "SELECT 1;"; echo "SELECT 1;"; done; }
# session WORKLOAD N: run it in a session of its own; prints the backend's pid
session() { { echo "SELECT 'pid ' || pg_backend_pid();"; "$1" "$2"; } | psql -XAtq | sed -n 's/^pid //p'; }

pairs $((PAIRS * 4)) | psql -XAtq >/dev/null		# the marks settle
bucket_pairs $((PAIRS * 4)) | psql -XAtq >/dev/null
declare -A pid
for workload in pairs bucket_pairs select1; do
	pid[$workload-1]=$(session "$workload" "$PAIRS")
	pid[$workload-5]=$(session "$workload" $((PAIRS * 5)))
done
as_server_user "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
instructions() { sed -n 's/^summary: //p' "$dir/callgrind/$1"; }
per_pair() { echo $((($(instructions "${pid[$1-5]}") - $(instructions "${pid[$1-1]}")) / (PAIRS * 4))); }
limiter=$(per_pair pairs)
bucket=$(per_pair bucket_pairs)
baseline=$(per_pair select1)
echo "instructions in the backend, callgrind, $((PAIRS * 4)) pairs:"
printf 'two SELECT 1                : %8d per pair\n' "$baseline"
printf 'rl_acquire + rl_release     : %8d per pair\n' "$limiter"
printf '  on a bucket model         : %8d per pair\n' "$bucket"
awk -v a="$limiter" -v b="$baseline" 'BEGIN { printf "ratio pg_ratelimit / SELECT 1 pairs: %.3f\n", a / b }'
awk -v a="$bucket" -v b="$limiter" 'BEGIN { printf "ratio bucket model / fixed model: %.3f\n", a / b }'
