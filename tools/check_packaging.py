#!/usr/bin/env python3
"""Release consistency: the control file, the SQL scripts, the Makefile and
META.json agree (README, "Upgrading").

- every version from 1.0 to the control file's default_version is reached
  by a chain of pg_ratelimit--A--B.sql upgrade scripts, from the one full
  install script pg_ratelimit--1.0.sql;
- the Makefile's DATA installs every one of those scripts;
- META.json is valid JSON and says the same version (X.Y as X.Y.0), and so
  does the library (PGRL_LIBRARY_VERSION, shown by PostgreSQL 18's
  pg_get_loaded_modules()).

Prints TAP lines; exits non-zero when any check fails."""
import glob
import json
import os
import re
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
os.chdir(root)
failures = 0
number = 0


def check(ok, description, detail=''):
    global failures, number
    number += 1
    print(f'{"ok" if ok else "not ok"} {number} - {description}' + ('' if ok else f': {detail}'))
    failures += 0 if ok else 1


control = open('pg_ratelimit.control').read()
default = re.search(r"^default_version\s*=\s*'([^']+)'", control, re.M).group(1)
scripts = sorted(os.path.basename(p) for p in glob.glob('pg_ratelimit--*.sql'))
installs = [s for s in scripts if s.count('--') == 1]
check(installs == ['pg_ratelimit--1.0.sql'], 'one full install script, the historical 1.0',
      ' '.join(installs))

# follow the upgrade chain from 1.0
steps = {}
for s in scripts:
    m = re.fullmatch(r'pg_ratelimit--([0-9.]+)--([0-9.]+)\.sql', s)
    if m:
        steps[m.group(1)] = m.group(2)
version, seen = '1.0', ['1.0']
while version in steps and steps[version] not in seen:
    version = steps[version]
    seen.append(version)
check(version == default, f'upgrade scripts lead from 1.0 to default_version {default}',
      ' -> '.join(seen))

makefile = open('Makefile').read()
data = re.search(r'^DATA\s*=\s*((?:.*\\\n)*.*)$', makefile, re.M).group(1).replace('\\\n', ' ').split()
missing = [s for s in scripts if s not in data]
check(not missing, 'the Makefile installs every script', ' '.join(missing))

try:
    meta = json.load(open('META.json'))
    check(meta['version'] == default + '.0' and
          meta['provides']['pg_ratelimit']['version'] == default + '.0',
          f'META.json says version {default}.0', meta['version'])
except (ValueError, KeyError) as e:
    check(False, 'META.json is valid', str(e))

# the library reports its version to pg_get_loaded_modules() (PostgreSQL 18+)
library = re.search(r'^#define PGRL_LIBRARY_VERSION\s+"([^"]+)"',
                    open('src/pg_ratelimit.h').read(), re.M)
check(library is not None and library.group(1) == default + '.0',
      f'the library says version {default}.0 (PGRL_LIBRARY_VERSION)',
      library.group(1) if library else 'not defined')

sys.exit(1 if failures else 0)
