#!/usr/bin/env bash
# Build PostgreSQL MAJOR (17 or 18) from Debian's source package into a cache
# outside the clone, once; a later call finds it there and does nothing.
#
#   bash scripts/build-postgres.sh 18      # prints the install's bin directory
#
# Debian 12 packages only PostgreSQL 15; newer majors come as source packages
# of later Debian suites (trixie: 17, sid: 18).  This adds deb-src lines for
# them, naming the mirror this machine's own apt sources use, downloads the
# source with apt-get source (falling back to the newest earlier revision the
# mirror has when the index names one it has not synced yet), and builds it
# with the build dependencies Debian 12 packages, with TAP tests and injection
# points (for the race tests of the waiting code) enabled.  The first build
# also installs pgindent and pg_bsd_indent from its source into
# CACHE/pgindent, for the layout check of scripts/test.sh.
#
# RL_PG_CACHE sets the cache (default /var/cache/pg_ratelimit-postgres).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

major=${1:?usage: build-postgres.sh MAJOR}
cache=${RL_PG_CACHE:-/var/cache/pg_ratelimit-postgres}
prefix=$cache/pg$major
if [ -x "$prefix/bin/postgres" ] && [ -f "$prefix/.complete" ]; then
	echo "$prefix/bin"
	exit 0
fi
is_root || die "building PostgreSQL $major needs root (apt-get); or set RL_PG_CACHE to a built one"

case $major in
	17) suite=trixie ;;
	18) suite=sid ;;
	*) die "no source suite known for PostgreSQL $major" ;;
esac

install_deps bison flex libreadline-dev zlib1g-dev libicu-dev pkg-config libipc-run-perl \
	dpkg-dev curl bzip2 xz-utils >&2

# the mirror of this machine's Debian sources, for the deb-src lines
mirror=$(sed -n 's/^URIs: *\(.*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=$(sed -n 's/^deb \([^ ]*\/debian\) .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1)
[ -n "$mirror" ] || die "cannot tell this machine's Debian mirror"
list=/etc/apt/sources.list.d/pg_ratelimit-sources.sources
if [ ! -f "$list" ]; then
	cat >"$list" <<EOF
Types: deb-src
URIs: $mirror
Suites: trixie sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	apt-get update -qq >&2
fi

work=$cache/src-$major
rm -rf "$work"
mkdir -p "$work"
cd "$work"
package=postgresql-$major
if ! apt-get source -qq --download-only "$package" >&2 2>/dev/null; then
	# the index may name a revision the mirror has not got yet: take the
	# newest earlier one it has (its .dsc lists the other files)
	version=$(apt-cache showsrc "$package" | sed -n 's/^Version: //p' | head -1)
	upstream=${version%%-*}
	minor=${upstream#*.}
	revision=${version#*-}
	pool=$mirror/pool/main/p/$package
	found=
	for ((m = minor - 1; m >= 0 && m >= minor - 6; m--)); do
		candidate="${major}.${m}-${revision}"
		if curl -fsS -o "$package.dsc" "$pool/${package}_${candidate//+/%2b}.dsc" 2>/dev/null; then
			found=$candidate
			break
		fi
	done
	[ -n "$found" ] || die "no source of $package on the mirror"
	log "the index names $version, the mirror has $found: building that" >&2
	for file in $(sed -n '/^Files:/,/^[^ ]/s/^ [0-9a-f]* [0-9]* //p' "$package.dsc"); do
		curl -fsS -o "$file" "$pool/$file"
	done
fi
orig=$(ls ./*.orig.tar.* | head -1)
tar xf "$orig"
srcdir=$(find . -maxdepth 1 -type d -name 'postgresql-*' | head -1)
cd "$srcdir"
log "building PostgreSQL $(basename "$srcdir") into $prefix" >&2
./configure --prefix="$prefix" --enable-tap-tests --enable-injection-points --with-icu \
	--without-llvm >"$work/configure.log" 2>&1 || { tail -30 "$work/configure.log" >&2; die "configure failed"; }
make -s -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -30 "$work/make.log" >&2; die "make failed"; }
make -s -C contrib -j"$(nproc)" >>"$work/make.log" 2>&1 || true
make -s install >>"$work/make.log" 2>&1
# the TAP modules (PostgreSQL::Test::Cluster) and pg_regress for extensions
make -s -C src/test/perl install >>"$work/make.log" 2>&1 || true
make -s -C src/test/isolation install >>"$work/make.log" 2>&1 || true
# injection points (17+) drive the deterministic race tests of the waiting code
make -s -C src/test/modules/injection_points install >>"$work/make.log" 2>&1 ||
	die "injection_points did not build"
# pgindent and pg_bsd_indent come with the source (16+): the structure
# suite of scripts/test.sh checks the C layout with them (make pgindent-check)
if [ ! -x "$cache/pgindent/bin/pgindent" ]; then
	PREFIX=$cache/pgindent PG_CONFIG=$prefix/bin/pg_config \
		bash "$REPO_ROOT/tools/install-pgindent.sh" "$work/$srcdir" >&2 ||
		log "pgindent was not installed" >&2
	chmod -R a+rX "$cache/pgindent" 2>/dev/null || true
fi
chmod -R a+rX "$prefix"
touch "$prefix/.complete"
cd "$cache"
rm -rf "$work"
echo "$prefix/bin"
