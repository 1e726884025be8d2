#!/usr/bin/env bash
# The main job: a throwaway PostgreSQL 15 with pg_ratelimit preloaded, and a
# demonstration workload against it.  Twelve simulated application workers
# (pgbench clients) share two OpenAI models on one API key for 20 seconds.
# Each registers as an instance (heartbeats), acquires a lease for a chat
# job (a fixed 70 % share) or a summary job (the flexible rest), falling
# back from gpt-4o to gpt-4o-mini when the first is exhausted, "calls the
# provider" for 20-80 ms, and releases the lease with the tokens it actually
# used.
#
#   bash scripts/demo.sh            # run, report, stop the server
#   bash scripts/demo.sh --keep     # leave the server running to explore
#   DURATION=60 bash scripts/demo.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DURATION=${DURATION:-20}
WORKERS=${WORKERS:-12}
keep=false
[ "${1:-}" = "--keep" ] && keep=true

install_deps
build_and_install
dir=$(make_server_dir)
if ! $keep; then
	trap 'stop_server "$dir"; rm -rf "$dir"' EXIT
fi
# a throwaway server: with --keep, rl_debug_set_clock() can be tried on it
start_server "$dir" ratelimit_demo "ratelimit.enable_test_clock = on"
export PGOPTIONS="-c client_min_messages=warning"
# the extension lives in the schema ratelimit: every session of the demo
# (and of a kept server) finds it through the database's search_path
psql -Xq -c "CREATE DATABASE ratelimit_demo" \
	-c "ALTER DATABASE ratelimit_demo SET search_path = public, ratelimit"
export PGDATABASE=ratelimit_demo

log "configuring two models and two job types"
psql -Xq -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
CREATE EXTENSION pg_ratelimit;
-- limits of one API key (small, so that the demo hits them)
SELECT rl_define_model('openai/gpt-4o', rpm => 500, tpm => 400000, rpd => 10000,
					   max_concurrent => 6,
					   price_input => 2.50, price_output => 10.00, price_cached => 1.25);
SELECT rl_define_model('openai/gpt-4o-mini', rpm => 1500, tpm => 2000000,
					   max_concurrent => 10,
					   price_input => 0.15, price_output => 0.60, price_cached => 0.075);
SELECT rl_define_job_type('chat', est_tokens => 900, est_memory_kb => 50000,
						  ratio => 0.7, flexible => false);
SELECT rl_define_job_type('summarize', est_tokens => 3000, est_memory_kb => 200000);
-- the applications connect as their own role, allowed to take capacity
CREATE ROLE demo_app LOGIN;
GRANT EXECUTE ON FUNCTION rl_acquire, rl_acquire_any, rl_release, rl_heartbeat, rl_unregister
	TO demo_app;
SQL
# the workers announce themselves, each with 2 GB of memory
psql -Xq -U demo_app -c "SELECT rl_heartbeat('worker-' || i, memory_kb => 2000000) FROM generate_series(0, $WORKERS - 1) i" >/dev/null

# One application job: acquire on gpt-4o or, failing that, gpt-4o-mini;
# call the provider; release with the usage the provider reported.
work=$(mktemp -d)
chmod 755 "$work"
cat >"$work/worker.sql" <<'SQL'
\set heartbeat random(0, 19)
\if :heartbeat = 0
SELECT rl_heartbeat('worker-' || :client_id, memory_kb => 2000000) AS live \gset
\endif
\set kind random(0, 3)
SELECT granted::int AS granted, lease_id
FROM rl_acquire_any(ARRAY['openai/gpt-4o', 'openai/gpt-4o-mini'],
					job_type => CASE WHEN :kind = 0 THEN 'summarize' ELSE 'chat' END,
					instance => 'worker-' || :client_id) \gset
\if :granted
\set call_ms random(20, 80)
\sleep :call_ms ms
\if :kind = 0
\set input random(1800, 2800)
\set output random(150, 450)
\else
\set input random(200, 700)
\set output random(50, 250)
\endif
\set cached random(0, 100)
SELECT released FROM rl_release(:lease_id, input_tokens => :input, output_tokens => :output, cached_tokens => :cached);
\else
\sleep 10 ms
\endif
SQL

log "running $WORKERS workers for ${DURATION}s"
pgbench -n -U demo_app -c "$WORKERS" -j 2 -T "$DURATION" -P 5 -f "$work/worker.sql" >"$work/pgbench.log" 2>&1 ||
	{ cat "$work/pgbench.log"; die "the workload failed"; }
grep -E '^progress|^number of transactions actually|^tps' "$work/pgbench.log" | sed 's/^/  /'
rm -rf "$work"

echo
echo "== rl_status: what each model admitted, denied and cost"
psql -X -c "SELECT model, rpm, max_concurrent AS max_conc, requests_minute AS req_min,
				   tokens_minute AS tok_min, requests_day AS req_day, in_flight,
				   granted, denied, overage_events AS overages, cost_today
			FROM rl_status"

echo "== rl_job_status: each job type's share of each model"
psql -X -c "SELECT model, job_type, round(ratio::numeric, 3) AS ratio, flexible, slots, limited_by,
				   rpm_share, requests_minute AS req_min, concurrency_share AS conc_share,
				   granted, denied
			FROM rl_job_status"

echo "== rl_allocation: the fair share of one of the $WORKERS instances, for local admission"
psql -X -c "SELECT * FROM rl_allocation('worker-0')"

echo "== rl_capacity of gpt-4o for a chat job, now"
psql -X -c "SELECT * FROM rl_capacity('openai/gpt-4o', job_type => 'chat')"

echo "== rl_usage: usage and cost per day and job type, as the background worker saved them"
sleep 1.2
psql -X -c "SELECT day, model, job_type, requests, input_tokens, output_tokens, cached_tokens, cost FROM rl_usage ORDER BY model, job_type"

echo "== no admission ever passed a limit"
psql -XAt -c "SELECT CASE WHEN bool_and(requests_minute <= rpm AND in_flight <= max_concurrent
								  AND tokens_minute - overage_tokens <= tpm)
				   THEN 'ok: requests and concurrency within their limits; tokens past tpm come only from overages (actual usage above the estimate, charged after the call)'
				   ELSE 'LIMIT EXCEEDED' END
			FROM rl_status"

if $keep; then
	url="postgresql://$PGUSER@/ratelimit_demo?host=$PGHOST&port=$PGPORT"
	echo
	echo "The server keeps running. Its connection string, for psql, the examples and any client:"
	echo "  export DATABASE_URL=\"$url\""
	echo "  psql \"\$DATABASE_URL\""
	echo "Stop it with:"
	echo "  $(is_root && echo 'runuser -u postgres -- ')$PG_BIN/pg_ctl -D $dir/data stop"
fi
