#!/usr/bin/env bash
# Run the whole suite on every PostgreSQL pg_ratelimit supports: 15
# (Debian 12's package: every suite, scripts/test.sh) and 17 and 18 (built
# once from Debian's source packages into a cache outside the clone,
# scripts/build-postgres.sh: pg_regress, isolation, stress and TAP).  The
# extension is built against each with -Wall -Wextra, and a warning fails
# the version (scripts/test.sh).  Ends with one line "N passed, N failed"
# over all versions.
#
#   bash scripts/test-matrix.sh                   # 15, 17 and 18
#   RL_PG_VERSIONS="15 18" bash scripts/test-matrix.sh
#
# Building 17 and 18 needs root (apt-get) once; after that any user can run
# the matrix.  SUITES and PROVE_TESTS pass on to each version's run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

versions=${RL_PG_VERSIONS:-15 17 18}
logs=$(mktemp -d /tmp/pg_ratelimit-matrix.XXXXXX)
trap 'rm -rf "$logs"' EXIT
started=$SECONDS

# the servers first, so that a missing one fails before any test runs
for v in $versions; do
	[ "$v" = "$SYSTEM_PG_MAJOR" ] && continue
	t=$SECONDS
	bash scripts/build-postgres.sh "$v" >/dev/null
	log "PostgreSQL $v: ready ($((SECONDS - t)) s)"
done

passed=0
failed=0
summary=()
for v in $versions; do
	t=$SECONDS
	log "PostgreSQL $v: the suite"
	status=0
	env -u RL_PG_BIN RL_PG_MAJOR="$v" bash scripts/test.sh 2>&1 | tee "$logs/$v.log" || status=$?
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$logs/$v.log" | tail -1 || true)
	if [ -z "$line" ]; then
		# it stopped before counting: that is one failure at least
		line="0 passed, 1 failed"
	elif [ "$status" -ne 0 ] && [ "${line#* passed, }" = "0 failed" ]; then
		line="${line%%,*}, 1 failed"
	fi
	read -r p _ f _ <<<"${line//,/}"
	passed=$((passed + p))
	failed=$((failed + f))
	summary+=("PostgreSQL $v: $line ($((SECONDS - t)) s)")
done

log "the matrix took $((SECONDS - started)) s"
for s in "${summary[@]}"; do log "$s"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
