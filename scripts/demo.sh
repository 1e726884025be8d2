#!/usr/bin/env bash
# The main job: a throwaway PostgreSQL (15; RL_PG_MAJOR=17 or 18 for those)
# with pg_ratelimit preloaded, and a demonstration workload against it.  Twelve simulated application workers
# (pgbench clients) share two OpenAI models on one API key for 20 seconds:
# nine run chat jobs (a fixed 70 % share), three summarize (the flexible
# rest).  Each registers as an instance (heartbeats), acquires a lease on
# gpt-4o or gpt-4o-mini, whichever admits first, waiting in the server up
# to MAX_WAIT seconds when neither has room, "calls the provider" for
# 20-80 ms, and releases the lease with the tokens it actually used.
#
# Meanwhile rl_status is sampled once a second; the demo ends with the text
# reports and a picture of admissions, refusals and the use of every limit
# per second (demo_output/demo.png, its data in demo_output/demo.csv;
# DEMO_OUTPUT=dir puts them elsewhere).
#
#   bash scripts/demo.sh            # run, report, stop the server
#   bash scripts/demo.sh --keep     # leave the server running to explore
#   DURATION=60 bash scripts/demo.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DURATION=${DURATION:-20}
WORKERS=${WORKERS:-12}
# how long a worker waits in the server for room before it gives up on a job
MAX_WAIT=${MAX_WAIT:-2}
OUT=${DEMO_OUTPUT:-$REPO_ROOT/demo_output}
keep=false
[ "${1:-}" = "--keep" ] && keep=true

# gnuplot draws the picture: installed when root, else the picture is skipped
if is_root; then install_deps gnuplot-nox; else install_deps; fi
command -v gnuplot >/dev/null ||
	log "gnuplot is not installed: no picture, only its data (sudo apt-get install gnuplot-nox)"
build_and_install
mkdir -p "$OUT"
rm -f "$OUT/demo.png" "$OUT/demo.csv"
dir=$(make_server_dir)
# the sampler and the heartbeats run in the background while the workers run
if $keep; then
	trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
else
	trap 'kill $(jobs -p) 2>/dev/null || true; stop_server "$dir"; rm -rf "$dir"' EXIT
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
-- for the provider clients (README, Matching your provider): counted the
-- way the providers count, as buckets; not used by the demo's workers
SELECT rl_define_model('openai/gpt-4.1-mini', rpm => 500, tpm => 200000, window_type => 'bucket');
SELECT rl_define_model('anthropic/claude-sonnet-4-5', rpm => 50, itpm => 30000, otpm => 8000,
					   window_type => 'bucket');
SELECT rl_define_job_type('chat', est_tokens => 900, est_memory_kb => 50000,
						  ratio => 0.7, flexible => false);
SELECT rl_define_job_type('summarize', est_tokens => 3000, est_memory_kb => 200000);
-- the applications connect as their own role, allowed to take capacity
CREATE ROLE demo_app LOGIN;
GRANT EXECUTE ON FUNCTION rl_acquire, rl_acquire_any, rl_release, rl_observe, rl_heartbeat, rl_unregister
	TO demo_app;
SQL
# the workers announce themselves, each with 2 GB of memory, and keep doing
# so every 5 s (as each application process would, from a timer)
heartbeat="SELECT rl_heartbeat('worker-' || i, memory_kb => 2000000) FROM generate_series(0, $WORKERS - 1) i"
psql -Xq -U demo_app -c "$heartbeat" >/dev/null

# One application job: acquire on gpt-4o or gpt-4o-mini, waiting up to
# MAX_WAIT for whichever frees first (ties go to gpt-4o); call the
# provider; release with the usage the provider reported.  A job refused
# after its wait is dropped.  Every fourth worker summarizes, the others
# chat.
work=$(mktemp -d)
chmod 755 "$work"
cat >"$work/worker.sql" <<'SQL'
\set summarizer (:client_id % 4 = 0)
SELECT granted::int AS granted, lease_id
FROM rl_acquire_any(ARRAY['openai/gpt-4o', 'openai/gpt-4o-mini'],
					job_type => CASE WHEN :summarizer THEN 'summarize' ELSE 'chat' END,
					max_wait => make_interval(secs => :max_wait),
					instance => 'worker-' || :client_id) \gset
\if :granted
\set call_ms random(20, 80)
\sleep :call_ms ms
\if :summarizer
\set input random(1800, 2800)
\set output random(150, 450)
\else
\set input random(200, 700)
\set output random(50, 250)
\endif
\set cached random(0, 100)
SELECT released FROM rl_release(:lease_id, input_tokens => :input, output_tokens => :output, cached_tokens => :cached);
\endif
SQL

# The limits are per minute: so that the picture shows a minute ending and
# its window resetting, the limiter's clock (the test clock of this
# throwaway server) is moved ahead, by less than a minute, to half the
# run before the end of a minute
psql -XAt -c "SELECT 'the limiter''s clock: ' || to_char(t, 'HH24:MI:SS') || ', a minute ends in ' || $DURATION / 2 || ' s'
			  FROM (SELECT date_trunc('minute', clock_timestamp() + make_interval(secs => $DURATION / 2))
						   + interval '1 minute' - make_interval(secs => $DURATION / 2) AS t) c,
				   rl_debug_set_clock(t)" | sed 's/^/== /' >&2

# Sample rl_status once a second into demo_samples, from before the
# workers connect until they have all gone (each sample committed at once)
psql -Xq -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE demo_samples AS
	SELECT clock_timestamp() AS at, rl_clock() AS clock, model, rpm, tpm, rpd, max_concurrent,
		   requests_minute, tokens_minute, requests_day, in_flight, waiting, granted, denied
	FROM rl_status WITH NO DATA;
COMMENT ON TABLE demo_samples IS 'rl_status sampled once a second by scripts/demo.sh';
SQL
psql -Xq -v ON_ERROR_STOP=1 -c "DO \$\$
DECLARE
	started timestamptz := clock_timestamp();
	workers_seen boolean := false;
	workers boolean;
	sampled timestamptz;
BEGIN
	FOR tick IN 1 .. $DURATION + 120 LOOP
		SELECT count(*) > 0 INTO workers FROM pg_stat_activity WHERE application_name = 'pgbench';
		workers_seen := workers_seen OR workers;
		sampled := clock_timestamp();
		INSERT INTO demo_samples
			SELECT sampled, rl_clock(), model, rpm, tpm, rpd, max_concurrent, requests_minute,
				   tokens_minute, requests_day, in_flight, waiting, granted, denied
			FROM rl_status;
		COMMIT;
		EXIT WHEN workers_seen AND NOT workers;
		PERFORM pg_sleep_until(started + make_interval(secs => tick));
	END LOOP;
END \$\$" &
sampler=$!
while sleep 5 && psql -Xq -U demo_app -c "$heartbeat" >/dev/null; do :; done &
heartbeats=$!

log "running $WORKERS workers for ${DURATION}s"
pgbench -n -U demo_app -c "$WORKERS" -j 2 -T "$DURATION" -P 5 -D max_wait="$MAX_WAIT" \
	-f "$work/worker.sql" >"$work/pgbench.log" 2>&1 ||
	{ cat "$work/pgbench.log"; die "the workload failed"; }
grep -E '^progress|^number of transactions actually|^tps' "$work/pgbench.log" | sed 's/^/  /'
# a refused call counts on both models (it waited on both)
psql -XAt -c "SELECT '  ' || sum(granted) || ' jobs admitted, ' || max(denied)
				   || ' refused after waiting up to $MAX_WAIT s' FROM rl_status"
kill "$heartbeats"
wait "$sampler" || die "sampling rl_status failed"
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

# The per-second data: what each model admitted, how many calls were
# refused (a refused call counts on both models: it waited on both), how
# many workers waited, and each model's use of each of its limits
psql -XAq -v ON_ERROR_STOP=1 >"$OUT/demo.csv" <<'SQL'
COPY (
	WITH rates AS (
		SELECT extract(epoch FROM at - min(at) OVER ()) AS second, model, waiting,
			   coalesce((granted - lag(granted) OVER w) / extract(epoch FROM at - lag(at) OVER w), 0) AS admitted,
			   coalesce((denied - lag(denied) OVER w) / extract(epoch FROM at - lag(at) OVER w), 0) AS refused,
			   100.0 * requests_minute / rpm AS rpm, 100.0 * tokens_minute / tpm AS tpm,
			   100.0 * requests_day / rpd AS rpd, 100.0 * in_flight / max_concurrent AS concurrency
		FROM demo_samples
		WINDOW w AS (PARTITION BY model ORDER BY at))
	SELECT round(second, 2) AS second,
		   round(max(admitted) FILTER (WHERE model = 'openai/gpt-4o'), 1) AS "gpt-4o admitted/s",
		   round(max(admitted) FILTER (WHERE model = 'openai/gpt-4o-mini'), 1) AS "gpt-4o-mini admitted/s",
		   round(max(refused) FILTER (WHERE model = 'openai/gpt-4o'), 1) AS "refused/s",
		   max(waiting) FILTER (WHERE model = 'openai/gpt-4o') AS "waiting",
		   round(max(rpm) FILTER (WHERE model = 'openai/gpt-4o'), 1) AS "gpt-4o rpm %",
		   round(max(tpm) FILTER (WHERE model = 'openai/gpt-4o'), 1) AS "gpt-4o tpm %",
		   round(max(rpd) FILTER (WHERE model = 'openai/gpt-4o'), 1) AS "gpt-4o rpd %",
		   round(max(concurrency) FILTER (WHERE model = 'openai/gpt-4o'), 1) AS "gpt-4o concurrency %",
		   round(max(rpm) FILTER (WHERE model = 'openai/gpt-4o-mini'), 1) AS "gpt-4o-mini rpm %",
		   round(max(tpm) FILTER (WHERE model = 'openai/gpt-4o-mini'), 1) AS "gpt-4o-mini tpm %",
		   round(max(concurrency) FILTER (WHERE model = 'openai/gpt-4o-mini'), 1) AS "gpt-4o-mini concurrency %"
	FROM rates GROUP BY second ORDER BY second
) TO STDOUT WITH (FORMAT csv, HEADER)
SQL

# The picture of that data (scripts/demo.gp)
render_picture() {
	local boundaries limits_4o limits_mini
	# the minute boundaries of the limiter's clock, in seconds since the start
	boundaries=$(psql -XAt -c "SELECT string_agg(round(extract(epoch FROM b - c0), 2)::text, ' ')
							   FROM (SELECT min(clock) AS c0, max(clock) AS c1 FROM demo_samples) c,
									generate_series(date_trunc('minute', c0) + interval '1 minute', c1,
													interval '1 minute') b")
	limits() {
		psql -XAt -c "SELECT concat_ws(', ', 'rpm ' || rpm, 'tpm ' || tpm, 'rpd ' || rpd,
										 'tpd ' || tpd, max_concurrent || ' concurrent')
					  FROM rl_status WHERE model = '$1'"
	}
	limits_4o=$(limits openai/gpt-4o)
	limits_mini=$(limits openai/gpt-4o-mini)
	gnuplot -e "csv = '$OUT/demo.csv'; png = '$OUT/demo.png'; workers = $WORKERS; max_wait = $MAX_WAIT" \
		-e "boundaries = '$boundaries'; limits_4o = '$limits_4o'; limits_mini = '$limits_mini'" \
		"$REPO_ROOT/scripts/demo.gp"
}
echo
if command -v gnuplot >/dev/null; then
	render_picture || die "gnuplot failed"
	echo "== the picture: $OUT/demo.png (its data: $OUT/demo.csv)"
else
	echo "== the per-second data: $OUT/demo.csv (install gnuplot-nox for its picture)"
fi

if $keep; then
	url="postgresql://$PGUSER@/ratelimit_demo?host=$PGHOST&port=$PGPORT"
	echo
	echo "The server keeps running. Its connection string, for psql, the examples and any client:"
	echo "  export DATABASE_URL=\"$url\""
	echo "  psql \"\$DATABASE_URL\""
	echo "The samples behind the picture are in its table demo_samples."
	echo "Stop it with:"
	echo "  $(is_root && echo 'runuser -u postgres -- ')$PG_BIN/pg_ctl -D $dir/data stop"
fi
