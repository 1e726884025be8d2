#!/usr/bin/env bash
# pg_ratelimit under Patroni: etcd and three PostgreSQL 15 nodes on loopback
# ports, clients that follow the leader, and failovers by SIGKILL of the
# leader (tests/ha/failover.py says what is checked and measured).
#
# Installs patroni, etcd-server and python3-psycopg when run as root and
# missing, builds and installs the extension into the private copy of
# PostgreSQL, and runs everything as the postgres user (as root) in a
# temporary directory that is removed at the end, with every process it
# started.  Ends with "N passed, N failed".
#
#   bash tests/ha/run.sh
#   HA_FAILOVERS=5 HA_SYNC=strict bash tests/ha/run.sh
#
# HA_FAILOVERS (2), HA_SYNC (on, strict, off), HA_TTL (10), HA_LOOP_WAIT (2),
# HA_RETRY_TIMEOUT (4), HA_CLIENTS (4): see tests/ha/failover.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/common.sh"

# the Debian packages may start their own services (etcd, patroni): this
# script never uses them, it runs its own on other ports
install_deps patroni etcd-server python3-psycopg
for cmd in patroni etcd; do
	if ! command -v "$cmd" >/dev/null; then
		log "$cmd is not installed: skipping the high-availability test"
		echo "0 passed, 0 failed"
		exit 0
	fi
done
if ! /usr/bin/python3 -c 'import psycopg' 2>/dev/null; then
	log "python3-psycopg is not installed: skipping the high-availability test"
	echo "0 passed, 0 failed"
	exit 0
fi
[ -n "${RL_PG_BIN:-}" ] || build_and_install

dir=$(make_server_dir)
# every process the run started, also when it fails or is interrupted: the
# pids it recorded (etcd, Patroni, the clients; the file is gone after a clean
# stop) and the postmasters of the nodes' data directories, each only while
# its command line still names this run's directory
ours() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF "$dir/"; }
orchestrator=
cleanup() {
	local pid f
	# interrupted: the run stops what it started itself, given time (its
	# own pid: runuser does not pass signals on)
	if [ -n "$orchestrator" ] && [ -f "$dir/orchestrator.pid" ]; then
		pid=$(cat "$dir/orchestrator.pid")
		if ours "$pid" && kill -TERM "$pid" 2>/dev/null; then
			for _ in $(seq 30); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 1
			done
			ours "$pid" && kill -KILL "$pid" 2>/dev/null
		fi
	fi
	if [ -f "$dir/pids" ]; then
		while read -r pid; do
			ours "$pid" && kill -KILL "$pid" 2>/dev/null || true
		done <"$dir/pids"
	fi
	for sig in QUIT KILL; do
		for f in "$dir"/node*/data/postmaster.pid; do
			[ -f "$f" ] || continue
			pid=$(head -1 "$f")
			{ ours "$pid" && kill -$sig "$pid" 2>/dev/null && sleep 1; } || true
		done
	done
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# the postgres user may not be able to read the checkout
cp "$REPO_ROOT/tests/ha/failover.py" "$REPO_ROOT/tests/ha/client.py" "$dir/"
is_root && chown postgres:postgres "$dir"/*.py

log "high availability: etcd and three Patroni nodes in $dir"
status=0
# in the background, so that a signal to this script is handled at once
as_server_user /usr/bin/python3 "$dir/failover.py" "$dir" "$PG_BIN" &
orchestrator=$!
wait "$orchestrator" || status=$?
orchestrator=
if [ $status -ne 0 ] && [ -n "${HA_KEEP_LOGS:-}" ]; then
	rm -rf "$HA_KEEP_LOGS"
	cp -a "$dir" "$HA_KEEP_LOGS"
	log "logs kept in $HA_KEEP_LOGS"
fi
exit $status
