# Shared set-up for scripts/test.sh, scripts/demo.sh and tests/bench/run.sh:
# install what is missing, build and install the extension, and start or
# stop a throwaway PostgreSQL server with pg_ratelimit preloaded.
#
# RL_PG_MAJOR picks the PostgreSQL: 15 (the default) is Debian 12's own
# package; 17 and 18 are built from Debian's source packages into a cache
# by scripts/build-postgres.sh (README, "PostgreSQL versions").
#
# PostgreSQL refuses to run as root: when we are root the server (and
# everything that starts servers) runs as the postgres user.

PG_MAJOR=${RL_PG_MAJOR:-15}
SYSTEM_PG_MAJOR=15
if [ "$PG_MAJOR" = "$SYSTEM_PG_MAJOR" ]; then
	SYSTEM_PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
else
	# the install scripts/build-postgres.sh makes (use_private_postgres
	# builds it when missing)
	SYSTEM_PG_BIN=${RL_PG_CACHE:-/var/cache/pg_ratelimit-postgres}/pg$PG_MAJOR/bin
fi
# build_and_install switches to a private copy of PostgreSQL; the choice is
# passed on to child scripts through RL_PG_BIN
PG_BIN=${RL_PG_BIN:-$SYSTEM_PG_BIN}
export PATH="$PG_BIN:$PATH"
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as the user that owns the servers
as_server_user() {
	if is_root; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# install_deps [OPTIONAL...]: apt-get what is missing (when root); otherwise
# say what to install.  OPTIONAL packages are installed too when root, but
# without them (not root) the tests that need them skip instead of failing.
install_deps() {
	local pkgs=(postgresql-$SYSTEM_PG_MAJOR postgresql-server-dev-$SYSTEM_PG_MAJOR
				postgresql-client-$SYSTEM_PG_MAJOR libpq-dev libipc-run-perl make gcc)
	local missing=() optional=()
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || optional+=("$p")
	done
	if [ ${#optional[@]} -gt 0 ]; then
		if is_root; then
			missing+=("${optional[@]}")
		else
			log "not installed: ${optional[*]} (the tests that need them skip)"
		fi
	fi
	[ ${#missing[@]} -eq 0 ] && return 0
	if is_root; then
		log "installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >/dev/null
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	else
		die "missing packages: ${missing[*]} (run as root once, or: sudo apt-get install ${missing[*]})"
	fi
}

# The extension is never installed into the system's PostgreSQL: on a host
# whose live cluster uses pg_ratelimit, that would swap the library under it.
# It goes into a private copy of PostgreSQL instead (45 MB, made once and
# refreshed when the system's is upgraded).  PostgreSQL finds its share and
# lib directories relative to its binaries, so the copy runs our extension
# like the original.  The copy is $REPO_ROOT/tmp_install, or, as root (whose
# checkout the postgres user may not be able to read), a directory named
# after the checkout under the root-owned cache of scripts/build-postgres.sh
# (not under a world-writable directory, where another user could put a
# PostgreSQL of theirs first); for 17 and 18 the name ends in -pg17 or
# -pg18.  RL_PREFIX overrides the place.  A copy carries a marker file: an
# existing directory RL_PREFIX names without it is never removed.
COPY_MARKER=.pg_ratelimit-copy
private_postgres_root() {
	local suffix=
	[ "$PG_MAJOR" = "$SYSTEM_PG_MAJOR" ] || suffix=-pg$PG_MAJOR
	if [ -n "${RL_PREFIX:-}" ]; then
		echo "$RL_PREFIX$suffix"
	elif is_root; then
		echo "${RL_PG_CACHE:-/var/cache/pg_ratelimit-postgres}/copies/$(printf '%s' "$REPO_ROOT" | md5sum | cut -c1-12)$suffix"
	else
		echo "$REPO_ROOT/tmp_install$suffix"
	fi
}

use_private_postgres() {
	local root bin
	root=$(private_postgres_root)
	if [ "$PG_MAJOR" = "$SYSTEM_PG_MAJOR" ]; then
		bin=$root$SYSTEM_PG_BIN
	else
		# returns at once when it is built
		bash "$REPO_ROOT/scripts/build-postgres.sh" "$PG_MAJOR" >/dev/null
		bin=$root/bin
	fi
	if [ ! -x "$bin/postgres" ] || [ "$SYSTEM_PG_BIN/postgres" -nt "$bin/postgres" ]; then
		log "copying PostgreSQL $PG_MAJOR into $root (the extension is installed there)"
		if [ -n "${RL_PREFIX:-}" ] && [ -e "$root" ] && [ ! -f "$root/$COPY_MARKER" ]; then
			die "RL_PREFIX: $root exists and is not a copy these scripts made: name a new directory"
		fi
		rm -rf "$root"
		install -d -m 755 "$(dirname "$root")" "$root"
		# first, so that a copy cut short is still known as ours
		touch "$root/$COPY_MARKER"
		if [ "$PG_MAJOR" = "$SYSTEM_PG_MAJOR" ]; then
			mkdir -p "$root/usr/lib/postgresql" "$root/usr/share/postgresql" "$root/usr/include"
			cp -a "/usr/lib/postgresql/$PG_MAJOR" "$root/usr/lib/postgresql/"
			cp -a "/usr/share/postgresql/$PG_MAJOR" "$root/usr/share/postgresql/"
			ln -s /usr/include/postgresql "$root/usr/include/postgresql"
		else
			# a whole source build: bin, lib, share and include under one prefix
			cp -a "$(dirname "$SYSTEM_PG_BIN")/." "$root/"
			rm -f "$root/.complete"
		fi
	fi
	PG_BIN=$bin
	export RL_PG_BIN=$bin PATH="$bin:$PATH"
}

# build_and_install [MAKE ARGUMENTS...]: build the extension and install it
# into the private copy of PostgreSQL; returns non-zero when the build fails
build_and_install() {
	log "building pg_ratelimit for PostgreSQL $PG_MAJOR"
	use_private_postgres
	make -C "$REPO_ROOT" -s PG_CONFIG="$PG_BIN/pg_config" "$@" >/dev/null || return 1
	# files of earlier builds (an upgrade script since renamed) must not linger
	rm -f "$("$PG_BIN/pg_config" --sharedir)"/extension/pg_ratelimit[-.]*
	make -C "$REPO_ROOT" -s install PG_CONFIG="$PG_BIN/pg_config" "$@" >/dev/null || return 1
	log "installed into $(private_postgres_root) (the system's PostgreSQL is left alone)"
}

# A directory the server user can write to
make_server_dir() {
	local dir
	dir=$(mktemp -d /tmp/pg_ratelimit.XXXXXX)
	chmod 755 "$dir"
	is_root && chown postgres:postgres "$dir"
	echo "$dir"
}

# start_server DIR DATABASE [extra postgresql.conf lines...]
# Initialises DIR/data, listens only on a Unix socket in DIR, and sets
# PGHOST, PGPORT and PGUSER for the clients that follow.
start_server() {
	local dir=$1 database=$2
	shift 2
	as_server_user "$PG_BIN/initdb" -D "$dir/data" -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
		|| { cat "$dir/initdb.log"; die "initdb failed"; }
	{
		echo "shared_preload_libraries = 'pg_ratelimit'"
		echo "ratelimit.database = '$database'"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$dir'"
		echo "port = 5432"
		echo "max_connections = 120"
		for line in "$@"; do echo "$line"; done
	} | as_server_user tee -a "$dir/data/postgresql.conf" >/dev/null
	as_server_user "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null \
		|| { cat "$dir/server.log"; die "the server did not start"; }
	export PGHOST=$dir PGPORT=5432
	if is_root; then export PGUSER=postgres; else export PGUSER=$(id -un); fi
	export PGDATABASE=postgres
}

stop_server() {
	local dir=$1
	[ -d "$dir/data" ] && as_server_user "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}
