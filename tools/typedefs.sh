#!/usr/bin/env bash
# Regenerate typedefs.list (the project's own typedef names, for pgindent)
# from the sources: every "typedef ... Name;" and the tag of every
# "typedef struct|union|enum Tag" in src/ and tests/clients/, sorted, one
# a line.
#
#   tools/typedefs.sh            rewrite typedefs.list at the repository root
#   tools/typedefs.sh --check    exit 1 (and show the difference) if it is stale
#   tools/typedefs.sh -          print the list instead
#
# PostgreSQL's own names (Datum, TimestampTz, ...) are not listed here:
# "make pgindent" adds PostgreSQL's typedefs.list (see PG_TYPEDEFS there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# every C source and header under src/ (subdirectories too) and tests/clients/
mapfile -t files < <(find src tests/clients -name '*.[ch]' -type f | LC_ALL=C sort)

list=$(perl -e '
	my %names;
	for my $file (@ARGV)
	{
		open(my $fh, "<", $file) or die "$file: $!\n";
		local $/;
		my $src = <$fh>;
		close($fh);
		# blank out comments, string and character literals
		$src =~ s{/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|\x27(?:\\.|[^\x27\\\n])*\x27}{ }gs;
		# and preprocessor lines (with their continuations)
		$src =~ s{^[ \t]*#(?:[^\n]*\\\n)*[^\n]*}{}gm;
		while ($src =~ /\btypedef\b/g)
		{
			my $start = pos($src);
			# the statement ends at the first ";" outside braces and parentheses
			my ($depth, $i) = (0, $start);
			for (; $i < length($src); $i++)
			{
				my $c = substr($src, $i, 1);
				$depth++ if $c eq "{" || $c eq "(";
				$depth-- if $c eq "}" || $c eq ")";
				last if $c eq ";" && $depth == 0;
			}
			my $decl = substr($src, $start, $i - $start);
			pos($src) = $i;
			# the tag: typedef struct|union|enum Tag
			$names{$1} = 1 if $decl =~ /^\s*(?:struct|union|enum)\s+([A-Za-z_]\w*)/;
			# a pointer to function: typedef R (*Name) (args)
			if ($decl =~ /\(\s*\*\s*([A-Za-z_]\w*)\s*\)\s*\(/)
			{
				$names{$1} = 1;
				next;
			}
			# otherwise the last identifier outside braces and brackets,
			# for each comma-separated declarator
			(my $flat = $decl) =~ s/\{(?:[^{}]++|(?0))*\}//gs;
			1 while $flat =~ s/\{[^{}]*\}//gs;
			$flat =~ s/\[[^\]]*\]//g;
			$flat =~ s/\([^()]*\)//g;
			for my $declarator (split /,/, $flat)
			{
				$names{$1} = 1 if $declarator =~ /([A-Za-z_]\w*)\s*$/;
			}
		}
	}
	print "$_\n" for sort keys %names;
' "${files[@]}")

case "${1:-}" in
	-)
		printf '%s\n' "$list"
		;;
	--check)
		if ! diff -u typedefs.list <(printf '%s\n' "$list"); then
			echo "typedefs.list is stale: run tools/typedefs.sh" >&2
			exit 1
		fi
		;;
	"")
		printf '%s\n' "$list" >typedefs.list
		echo "typedefs.list: $(wc -l <typedefs.list) names"
		;;
	*)
		echo "usage: $0 [- | --check]" >&2
		exit 2
		;;
esac
