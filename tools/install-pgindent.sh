#!/usr/bin/env bash
# Build and install pgindent and pg_bsd_indent (PostgreSQL 16 and later keep
# both in their source tree; PostgreSQL 15's has neither) for "make pgindent".
#
#   tools/install-pgindent.sh PGSRC [TYPEDEFS]
#
# PGSRC     a PostgreSQL 16+ source tree, e.g. from
#           "apt-get source postgresql-17" (needs a deb-src line for trixie)
# TYPEDEFS  PostgreSQL's typedefs.list to install for "make pgindent"
#           (default: PGSRC's src/tools/pgindent/typedefs.list; the one of
#           the PostgreSQL we build against, 15, fits our sources best)
#
# Installs PREFIX/bin/pg_bsd_indent, PREFIX/bin/pgindent and
# PREFIX/share/pgindent/typedefs.list (PREFIX: /usr/local unless set).
# pg_bsd_indent is compiled against the server headers of the PostgreSQL
# that PG_CONFIG (default pg_config) names, and linked with its libpgport.
set -euo pipefail

[ $# -ge 1 ] && [ $# -le 2 ] || { sed -n '4,10p' "$0" >&2; exit 2; }
src=$1
typedefs=${2:-$src/src/tools/pgindent/typedefs.list}
prefix=${PREFIX:-/usr/local}
pg_config=${PG_CONFIG:-pg_config}
indent_dir=$src/src/tools/pg_bsd_indent

[ -f "$indent_dir/indent.c" ] || { echo "no $indent_dir/indent.c: PGSRC must be PostgreSQL 16 or later" >&2; exit 1; }
[ -f "$src/src/tools/pgindent/pgindent" ] || { echo "no pgindent in $src/src/tools/pgindent" >&2; exit 1; }
[ -f "$typedefs" ] || { echo "no typedefs list $typedefs" >&2; exit 1; }

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
# PostgreSQL 18's err.h says pg_noreturn, which older c.h lacks
${CC:-cc} -O2 -D'pg_noreturn=__attribute__((noreturn))' \
	-I"$indent_dir" -I"$("$pg_config" --includedir-server)" -I"$("$pg_config" --includedir)/internal" \
	-o "$build/pg_bsd_indent" "$indent_dir"/{args,err,indent,io,lexi,parse,pr_comment}.c \
	-L"$("$pg_config" --pkglibdir)" -L"$("$pg_config" --libdir)" -lpgcommon -lpgport

# pg_bsd_indent's own tests (those of its t/001_pg_bsd_indent.pl)
cp "$indent_dir"/tests/*.list "$build/" 2>/dev/null || true
for t in "$indent_dir"/tests/*.0; do
	name=$(basename "$t" .0)
	(cd "$build" && ./pg_bsd_indent "$t" "$name.out" -P"$indent_dir/tests/$name.pro") \
		&& diff -u "$t.stdout" "$build/$name.out" \
		|| { echo "pg_bsd_indent fails its test $name" >&2; exit 1; }
done

install -d "$prefix/bin" "$prefix/share/pgindent"
install -m 755 "$build/pg_bsd_indent" "$src/src/tools/pgindent/pgindent" "$prefix/bin/"
install -m 644 "$typedefs" "$prefix/share/pgindent/typedefs.list"
echo "installed: $("$prefix/bin/pg_bsd_indent" --version);" \
	"pgindent wants $(grep -o 'INDENT_VERSION = "[^"]*"' "$prefix/bin/pgindent");" \
	"$(wc -l <"$prefix/share/pgindent/typedefs.list") PostgreSQL typedefs"
