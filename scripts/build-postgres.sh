#!/usr/bin/env bash
# Build PostgreSQL MAJOR (17 or 18) from Debian's source package into a cache
# outside the clone, once; a later call finds it there and does nothing.
#
#   bash scripts/build-postgres.sh 18      # prints the install's bin directory
#
# Debian 12 packages only PostgreSQL 15; newer majors come as source packages
# of later Debian suites (17 from trixie, 18 from sid).  The deb-src line for
# that suite, naming the mirror this machine's own apt sources use, goes into
# an apt configuration of the cache's own (CACHE/apt-MAJOR): the host's apt
# sources are left alone.  apt-get source downloads the source, checked
# against the suite's signed index.  When the mirror has not yet got the
# revision the index names (404), an earlier minor version with the same
# Debian revision from the mirror's pool is taken instead, and only if its
# .dsc carries a good signature of a Debian developer (debian-keyring), names
# this package and revision, and its files match the .dsc's checksums.
#
# It is built with the build dependencies Debian 12 packages, with TAP tests
# and injection points (for the race tests of the waiting code) enabled.
# Building 18 also installs pgindent and pg_bsd_indent from its source, with
# its typedefs.list, into CACHE/pgindent, for the layout check of
# scripts/test.sh.  CACHE/pgMAJOR/.complete records what was built; a build
# made with other options is made again.
#
# RL_PG_CACHE sets the cache (default /var/cache/pg_ratelimit-postgres).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

major=${1:?usage: build-postgres.sh MAJOR}
case $major in
	17) suite=trixie ;;
	18) suite=sid ;;
	*) die "no source suite known for PostgreSQL $major" ;;
esac
cache=${RL_PG_CACHE:-/var/cache/pg_ratelimit-postgres}
prefix=$cache/pg$major
configure_options=(--enable-tap-tests --enable-injection-points --with-icu --without-llvm)
stamp="configure ${configure_options[*]}"
[ "$major" = 18 ] && stamp="$stamp; pgindent"

is_complete() {
	[ -x "$prefix/bin/postgres" ] && [ "$(cat "$prefix/.complete" 2>/dev/null)" = "$stamp" ] &&
		{ [ "$major" != 18 ] || [ -x "$cache/pgindent/bin/pgindent" ]; }
}
if is_complete; then
	echo "$prefix/bin"
	exit 0
fi
is_root || die "building PostgreSQL $major needs root (apt-get) once: run sudo bash scripts/build-postgres.sh $major"

install -d -m 755 "$cache"
# one build of a version at a time (two checkouts, CI and a developer)
exec 9>"$cache/.lock-$major"
if ! flock -n 9; then
	log "waiting for another build of PostgreSQL $major" >&2
	flock 9
fi
if is_complete; then
	echo "$prefix/bin"
	exit 0
fi

# earlier versions of this script added the deb-src lines to the host's apt
rm -f /etc/apt/sources.list.d/pg_ratelimit-sources.sources
install_deps bison flex libreadline-dev zlib1g-dev libicu-dev pkg-config libipc-run-perl \
	dpkg-dev curl bzip2 xz-utils >&2

# the mirror of this machine's Debian sources, for the deb-src line
mirror=
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
	mirror=$(sed -n 's|^URIs: *\([^ ]*/debian\)/\{0,1\} *$|\1|p' /etc/apt/sources.list.d/debian.sources | head -1)
fi
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
	mirror=$(sed -n 's|^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*/debian\)/\{0,1\} .*|\2|p' /etc/apt/sources.list | head -1)
fi
[ -n "$mirror" ] || die "cannot tell this machine's Debian mirror"

# an apt configuration of our own, with only that suite's sources
apt_dir=$cache/apt-$major
rm -rf "$apt_dir"
mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
cat >"$apt_dir/sources.list.d/debian-src.sources" <<EOF
Types: deb-src
URIs: $mirror
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_options=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
	-o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")
apt-get "${apt_options[@]}" update -qq >&2 || die "apt-get update of the $suite sources failed"

work=$cache/src-$major
rm -rf "$work"
mkdir -p "$work"
cd "$work"
package=postgresql-$major
# the .dsc file names are checked, not trusted: a name is a plain file name
plain_name='^[A-Za-z0-9][A-Za-z0-9.+_~-]*$'
if apt-get "${apt_options[@]}" source -qq --download-only "$package" >"$work/apt-source.log" 2>&1; then
	dscs=(./*.dsc)
	[ -f "${dscs[0]}" ] || die "apt-get source fetched no .dsc"
	dsc=${dscs[0]}
	signature=()
else
	cat "$work/apt-source.log" >&2
	# only files the mirror does not have (404): a file that does not match
	# the signed index is an error, not a reason to look elsewhere
	grep -q '404 *Not Found' "$work/apt-source.log" || die "apt-get source $package failed"
	# the index may name a revision the mirror has not got yet: take the
	# newest earlier one it has, if a Debian developer signed it
	version=$(apt-cache "${apt_options[@]}" showsrc "$package" | sed -n 's/^Version: //p' | head -1)
	[ -n "$version" ] || die "the $suite index has no $package"
	upstream=${version%%-*}
	minor=${upstream#*.}
	revision=${version#*-}
	[[ $minor =~ ^[0-9]+$ ]] || die "cannot look for revisions before $version"
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
	log "the index names $version, the mirror has $found: building that, if its signature is good" >&2
	install_deps gpgv debian-keyring >&2
	gpgv --keyring /usr/share/keyrings/debian-keyring.gpg \
		--output "$package.dsc.signed" "$package.dsc" >&2 ||
		die "the signature of ${package}_$found.dsc does not verify"
	# signed, and for this package and revision (not another signed .dsc)
	grep -qx "Source: $package" "$package.dsc.signed" && grep -qxF "Version: $found" "$package.dsc.signed" ||
		die "${package}_$found.dsc is not the source of $package $found"
	while read -r file; do
		[[ $file =~ $plain_name ]] || die "the .dsc names a file \"$file\""
		curl -fsS -o "$file" "$pool/$file"
	done < <(sed -n '/^Files:/,/^[^ ]/s/^ [0-9a-f]* [0-9]* //p' "$package.dsc.signed")
	dsc=$package.dsc
	signature=(--require-valid-signature)
fi
[[ $(basename "$dsc") =~ $plain_name ]] || die "unexpected source file name $dsc"
# checks every file against the .dsc's checksums (and, for a revision the
# index did not name, the signature); Debian's patches are not applied
dpkg-source "${signature[@]}" --require-strong-checksums -x --skip-patches "$dsc" "$work/tree" \
	>"$work/dpkg-source.log" 2>&1 || { cat "$work/dpkg-source.log" >&2; die "the source does not verify"; }
cd "$work/tree"
log "building PostgreSQL $(sed -n 's/^Version: //p' "$work/$dsc") into $prefix" >&2
rm -rf "$prefix"
./configure --prefix="$prefix" "${configure_options[@]}" >"$work/configure.log" 2>&1 ||
	{ tail -30 "$work/configure.log" >&2; die "configure failed"; }
make -s -j"$(nproc)" >"$work/make.log" 2>&1 || { tail -30 "$work/make.log" >&2; die "make failed"; }
make -s install >>"$work/make.log" 2>&1 || die "make install failed"
# the TAP modules (PostgreSQL::Test::Cluster) and the isolation tester for
# extensions; injection points (17+) drive the race tests of the waiting code
for dir in src/test/perl src/test/isolation src/test/modules/injection_points; do
	make -s -C "$dir" install >>"$work/make.log" 2>&1 || { tail -30 "$work/make.log" >&2; die "installing $dir failed"; }
done
if [ "$major" = 18 ]; then
	PREFIX=$cache/pgindent PG_CONFIG=$prefix/bin/pg_config \
		bash "$REPO_ROOT/tools/install-pgindent.sh" "$work/tree" >&2 || die "installing pgindent failed"
	chmod -R a+rX "$cache/pgindent"
fi
echo "$stamp" >"$prefix/.complete"
chmod -R a+rX "$prefix"
cd "$cache"
rm -rf "$work" "$apt_dir"
echo "$prefix/bin"
