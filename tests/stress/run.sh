#!/usr/bin/env bash
# Stress test: many concurrent clients (pgbench) race for each limit, and the
# number admitted must equal the limit exactly: never more, never fewer.
#
# Runs against the server named by PGHOST/PGPORT/PGUSER, in the database
# named by its ratelimit.database setting.  Prints one "ok"/"not ok" line per
# check and exits non-zero when any fails.
set -euo pipefail

CLIENTS=${CLIENTS:-16}
db=$(psql -XAtq -d postgres -c "SHOW ratelimit.database")
# the extension lives in the schema ratelimit
export PGDATABASE=$db PGOPTIONS="-c client_min_messages=warning -c search_path=public,ratelimit"
sql() { psql -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
quietly() { sql "$1" >/dev/null; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

quietly "CREATE EXTENSION IF NOT EXISTS pg_ratelimit"
# The whole run happens inside one minute of the limiter's clock
quietly "SELECT rl_debug_set_clock('2030-01-01 00:00:01+00')"
quietly "DROP TABLE IF EXISTS rl_stress_log;
	 CREATE UNLOGGED TABLE rl_stress_log (phase text, granted boolean, model text, open_leases bigint)"

checks=0
failures=0
check() {
	local description=$1 actual=$2 expected=$3
	checks=$((checks + 1))
	if [ "$actual" = "$expected" ]; then
		echo "ok $checks - $description: $actual"
	else
		echo "not ok $checks - $description: got $actual, expected $expected"
		failures=$((failures + 1))
	fi
}

# race PHASE TRANSACTIONS_PER_CLIENT SQL: every client runs SQL that many times
race() {
	local phase=$1 per_client=$2 statement=$3
	printf '%s\n' "$statement" >"$work/$phase.sql"
	pgbench -n -c "$CLIENTS" -j 2 -t "$per_client" -f "$work/$phase.sql" >"$work/$phase.log" 2>&1 \
		|| { cat "$work/$phase.log"; exit 1; }
	# every attempt ran and was logged
	check "$phase: attempts logged" \
		"$(sql "SELECT count(*) FROM rl_stress_log WHERE phase = '$phase'")" \
		"$((CLIENTS * per_client))"
}

admitted() {
	sql "SELECT count(*) FILTER (WHERE granted) FROM rl_stress_log WHERE phase = '$1'"
}

# rpm: 500 requests a minute, 1600 attempts
quietly "SELECT rl_define_model('stress/rpm', rpm => 500)"
race rpm 100 "INSERT INTO rl_stress_log SELECT 'rpm', granted FROM rl_acquire('stress/rpm');"
check "rpm: admitted" "$(admitted rpm)" 500
check "rpm: limiter's own count" \
	"$(sql "SELECT requests_minute || '/' || granted FROM rl_status WHERE model = 'stress/rpm'")" "500/500"

# tpm: 10000 tokens a minute in requests of 25 tokens -> exactly 400
quietly "SELECT rl_define_model('stress/tpm', tpm => 10000)"
race tpm 60 "INSERT INTO rl_stress_log SELECT 'tpm', granted FROM rl_acquire('stress/tpm', tokens => 25);"
check "tpm: admitted" "$(admitted tpm)" 400
check "tpm: tokens reserved" "$(sql "SELECT tokens_minute FROM rl_status WHERE model = 'stress/tpm'")" 10000

# rpd: 250 a day
quietly "SELECT rl_define_model('stress/rpd', rpd => 250)"
race rpd 40 "INSERT INTO rl_stress_log SELECT 'rpd', granted FROM rl_acquire('stress/rpd');"
check "rpd: admitted" "$(admitted rpd)" 250

# concurrency: 37 slots, nobody releases
quietly "SELECT rl_define_model('stress/conc', max_concurrent => 37)"
race conc 20 "INSERT INTO rl_stress_log SELECT 'conc', granted FROM rl_acquire('stress/conc');"
check "concurrency: admitted" "$(admitted conc)" 37
check "concurrency: in flight" "$(sql "SELECT in_flight FROM rl_status WHERE model = 'stress/conc'")" 37

# concurrency with churn: 8 slots, every client acquires and releases; right
# after each grant the leases in flight are counted (rl_status, at one
# instant: rl_leases reads the leases a batch at a time), and never pass the
# limit
quietly "SELECT rl_define_model('stress/churn', max_concurrent => 8)"
race churn 200 "INSERT INTO rl_stress_log (phase, granted, open_leases)
SELECT 'churn', g.granted, (SELECT in_flight FROM rl_status WHERE model = 'stress/churn')
FROM rl_acquire('stress/churn') g;
SELECT count(rl_release(lease_id)) FROM rl_leases WHERE pid = pg_backend_pid() AND model = 'stress/churn';"
check "churn: most leases open at once <= 8" \
	"$(sql "SELECT max(open_leases) <= 8 AND max(open_leases) > 1 FROM rl_stress_log WHERE phase = 'churn' AND granted")" t
check "churn: all slots free again" "$(sql "SELECT in_flight FROM rl_status WHERE model = 'stress/churn'")" 0
check "churn: grants + denials = attempts" \
	"$(sql "SELECT granted + denied FROM rl_status WHERE model = 'stress/churn'")" "$((CLIENTS * 200))"

# all five limits at once: tpm allows 3000/20 = 150, rpm 200, rpd 1000,
# tpd 100000/20 = 5000, concurrency 400: tpm binds at 150
quietly "SELECT rl_define_model('stress/all', rpm => 200, tpm => 3000, rpd => 1000, tpd => 100000, max_concurrent => 400)"
race all 30 "INSERT INTO rl_stress_log SELECT 'all', granted FROM rl_acquire('stress/all', tokens => 20);"
check "all limits: admitted" "$(admitted all)" 150
check "all limits: tpm spent, 150 in flight" \
	"$(sql "SELECT count(*) FROM rl_status WHERE model = 'stress/all' AND tokens_minute = 3000 AND in_flight = 150")" 1

# rl_acquire_any over three models of rpm 100: 300 admitted, 100 on each
quietly "SELECT rl_define_model('stress/any' || i, rpm => 100) FROM generate_series(1, 3) i"
race any 40 "INSERT INTO rl_stress_log SELECT 'any', granted, model FROM rl_acquire_any(ARRAY['stress/any1', 'stress/any2', 'stress/any3']);"
check "acquire_any: admitted" "$(admitted any)" 300
check "acquire_any: per model" \
	"$(sql "SELECT string_agg(n::text, ',' ORDER BY model) FROM (SELECT model, count(*) n FROM rl_stress_log WHERE phase = 'any' AND granted GROUP BY model) s")" \
	"100,100,100"

# job type shares of one model (rpm 1000): 'stress_fixed' has 0.3 (fixed),
# 'stress_flex' 0.2 (flexible); half the clients run each, 480 attempts
# apiece: exactly floor(1000 x 0.3) = 300 and floor(1000 x 0.2) = 200
quietly "SELECT rl_define_model('stress/share', rpm => 1000);
	 SELECT rl_define_job_type('stress_fixed', ratio => 0.3, flexible => false);
	 SELECT rl_define_job_type('stress_flex', ratio => 0.2)"
race share 60 "INSERT INTO rl_stress_log SELECT 'share', granted, job_type
FROM (SELECT CASE WHEN :client_id % 2 = 0 THEN 'stress_fixed' ELSE 'stress_flex' END AS job_type) j,
	 rl_acquire('stress/share', j.job_type);"
check "shares: admitted per job type" \
	"$(sql "SELECT string_agg(model || '=' || n, ',' ORDER BY model) FROM (SELECT model, count(*) n FROM rl_stress_log WHERE phase = 'share' AND granted GROUP BY model) s")" \
	"stress_fixed=300,stress_flex=200"
check "shares: the job types' own counts" \
	"$(sql "SELECT string_agg(job_type || '=' || requests_minute || '/' || granted, ',' ORDER BY job_type) FROM rl_job_status WHERE model = 'stress/share'")" \
	"stress_fixed=300/300,stress_flex=200/200"

quietly "DROP TABLE rl_stress_log; DELETE FROM rl_model WHERE model LIKE 'stress/%';
	 DELETE FROM rl_job_type WHERE job_type LIKE 'stress_%'; SELECT rl_debug_set_clock(NULL)"
echo "$((checks - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
