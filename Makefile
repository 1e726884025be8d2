# pg_ratelimit: PGXS build.
#
#   make && make install     build and install into the PostgreSQL that
#                            pg_config names
#   make installcheck        regression, isolation and TAP tests against a
#                            running server with the extension preloaded
#   make test                everything, on throwaway servers of PostgreSQL
#                            15, 17 and 18 (scripts/test-matrix.sh)

MODULE_big = pg_ratelimit
OBJS = \
	src/acquire.o \
	src/api.o \
	src/catalog.o \
	src/clock.o \
	src/config.o \
	src/debug.o \
	src/extsql.o \
	src/grant.o \
	src/holders.o \
	src/instance.o \
	src/launcher.o \
	src/lease.o \
	src/ledger.o \
	src/ledger_marks.o \
	src/ledger_provider.o \
	src/ledger_shares.o \
	src/limits.o \
	src/names.o \
	src/notify.o \
	src/observe.o \
	src/persist.o \
	src/pg_ratelimit.o \
	src/settings.o \
	src/shmem.o \
	src/utility.o \
	src/views.o \
	src/wait.o \
	src/waitevent.o \
	src/worker.o \
	src/workerstate.o

EXTENSION = pg_ratelimit
DATA = pg_ratelimit--1.0.sql pg_ratelimit--1.0--1.1.sql pg_ratelimit--1.1--1.2.sql
PGFILEDESC = "pg_ratelimit - shared-memory rate limiter for LLM API keys"

# The tests use an existing database, the one ratelimit.database names on
# the test server (contrib_regression, see below), with its worker
# connected: the first test re-creates the extension in it.
REGRESS = setup config alter acquire release capacity clock wait usage shares instances holders errors ledger stats bucket observe io_limits
REGRESS_OPTS = --use-existing

ISOLATION = race_rpm race_tpm race_concurrency race_share race_window config_repeatable_read config_serializable wait_lost_wakeup role_cap
ISOLATION_OPTS = --inputdir=tests/isolation --use-existing

TAP_TESTS = 1
PROVE_TESTS ?= tests/t/*.pl
# the TAP tests find the clients and examples under $TESTDIR, which PGXS
# sets before PostgreSQL 17 only
installcheck: export TESTDIR = $(CURDIR)

PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter

# make ASSERTS=1 checks the extension's own Assert()s (the lock each
# function needs is held, ...) even against a server built without
# assertions, as Debian's is; the test command builds this way.
ifeq ($(ASSERTS),1)
PG_CPPFLAGS += -DUSE_ASSERT_CHECKING
endif

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifeq ($(PGXS),)
$(error pg_config was not found: install postgresql-server-dev-15, or run scripts/test.sh)
endif
include $(PGXS)

# Objects built the other way (assertions, COPT=-Werror, or another
# PostgreSQL: 15, 17 and 18 from one checkout) are rebuilt: the stamp
# changes (at parse time: PGXS makes every file .SECONDARY, so a missing one
# forces nothing)
BUILD_STAMP = src/.build
BUILD_VALUE := asserts=$(if $(filter 1,$(ASSERTS)),on,off) postgresql=$(VERSION) copt=$(COPT)
ifneq ($(shell cat $(BUILD_STAMP) 2>/dev/null),$(BUILD_VALUE))
$(shell echo '$(BUILD_VALUE)' >$(BUILD_STAMP))
endif

# On a server built with injection points (PostgreSQL 17+, as
# scripts/build-postgres.sh builds them), the race tests of the waiting
# code run a second time, driven by injection points (src/debug.h)
ifeq ($(enable_injection_points),yes)
ISOLATION += inj_lost_wakeup inj_race_window
endif

# Symbol visibility: the library exports only what PostgreSQL looks up by
# name (Pg_magic_func, _PG_init, the SQL-callable functions and their
# pg_finfo_ records, rl_launcher_main and rl_worker_main), all declared PGDLLEXPORT;
# every other name stays inside it (tests/t/024_exports.pl).  PostgreSQL 16+
# does this itself: PGXS compiles with -fvisibility=hidden (CFLAGS_SL_MODULE)
# and PGDLLEXPORT means visibility("default").  Before 16, PGDLLEXPORT is
# empty and PG_FUNCTION_INFO_V1 does not mark the function itself: we hide
# by default and compat/pg15_visibility.h, forced ahead of every source file,
# does what 16's headers do.
VISIBILITY_H = $(srcdir)/compat/pg15_visibility.h
ifeq ($(findstring -fvisibility=hidden,$(CFLAGS_SL_MODULE)),)
ifeq ($(filter win32 cygwin,$(PORTNAME)),)
override CFLAGS += -fvisibility=hidden
override CPPFLAGS += -include $(VISIBILITY_H)
$(OBJS) $(OBJS:.o=.bc): $(VISIBILITY_H)
endif
endif

# The regression and isolation suites share one database, the one named by
# ratelimit.database on the test server; it must exist.
CONTRIB_TESTDB = contrib_regression
ISOLATION_TESTDB = contrib_regression

.PHONY: test demo bench
test:
	bash scripts/test-matrix.sh
demo:
	bash scripts/demo.sh
bench:
	bash tests/bench/run.sh

# PGXS does not track header dependencies
$(OBJS): $(wildcard src/*.h) $(BUILD_STAMP)
EXTRA_CLEAN += $(BUILD_STAMP)

# The libpq client used by the TAP tests and shown in the README
tests/clients/rl_listen: tests/clients/rl_listen.c $(BUILD_STAMP)
	$(CC) $(CFLAGS) -I$(shell $(PG_CONFIG) --includedir) -o $@ $< -L$(shell $(PG_CONFIG) --libdir) -lpq
installcheck: tests/clients/rl_listen

# The TAP tests start servers of their own, and initdb refuses to run as
# root: say so before any test runs (scripts/test.sh runs them as postgres)
ifdef TAP_TESTS
installcheck: installcheck-not-root
endif
.PHONY: installcheck-not-root
installcheck-not-root:
	@if [ "$$(id -u)" = 0 ]; then \
		echo "make installcheck cannot run as root: its TAP tests run initdb, which refuses root." >&2; \
		echo "Run it as the user that owns the checkout (README.md, Testing), or run scripts/test.sh." >&2; \
		exit 1; \
	fi
EXTRA_CLEAN += tests/clients/rl_listen
tests/bench/wake_latency: tests/bench/wake_latency.c $(BUILD_STAMP)
	$(CC) $(CFLAGS) -I$(shell $(PG_CONFIG) --includedir) -o $@ $< -L$(shell $(PG_CONFIG) --libdir) -lpq
EXTRA_CLEAN += tests/bench/wake_latency

# pgindent, PostgreSQL's C layout (a developer tool, not part of the tests):
#   make pgindent          refresh typedefs.list, then re-indent the sources
#   make pgindent-check    change nothing; show what pgindent would change and
#                          fail if anything would, or if typedefs.list is stale
# pgindent and pg_bsd_indent come with PostgreSQL 16+'s source tree:
# tools/install-pgindent.sh installs them (README, "Development: code layout
# and formatting").  PGINDENT names the script (default: pgindent on PATH),
# PG_TYPEDEFS PostgreSQL's own typedefs.list (Datum, TimestampTz, LWLock...;
# default: the one install-pgindent.sh puts next to pgindent), merged with
# ours for the run.
# (not from the environment: there pgindent itself reads PGINDENT as the
# path of pg_bsd_indent)
ifneq ($(origin PGINDENT),command line)
PGINDENT := $(shell command -v pgindent 2>/dev/null)
endif
PG_TYPEDEFS ?= $(firstword $(wildcard $(dir $(PGINDENT))../share/pgindent/typedefs.list /usr/local/etc/typedefs.list))
PGINDENT_DIRS = src tests/clients

.PHONY: pgindent pgindent-check typedefs
typedefs:
	tools/typedefs.sh

# pgindent reads $PGINDENT and $INDENT as the path of pg_bsd_indent: unset them
define run_pgindent
	@if [ -z "$(PGINDENT)" ] || ! command -v "$(PGINDENT)" >/dev/null; then \
		echo "pgindent is not installed (nothing done): run tools/install-pgindent.sh on a"; \
		echo "PostgreSQL 16+ source tree (see README.md), or name it with PGINDENT=/path/to/pgindent"; \
		exit 0; \
	fi; \
	if [ ! -f "$(PG_TYPEDEFS)" ]; then \
		echo "PostgreSQL's typedefs.list not found: set PG_TYPEDEFS=/path/to/src/tools/pgindent/typedefs.list" >&2; \
		exit 1; \
	fi; \
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(1) \
	sort -u typedefs.list "$(PG_TYPEDEFS)" >"$$tmp/typedefs.list"; \
	$(2)
endef

pgindent:
	$(call run_pgindent,tools/typedefs.sh;,\
		env -u PGINDENT -u INDENT "$(PGINDENT)" --typedefs="$$tmp/typedefs.list" $(PGINDENT_DIRS))

pgindent-check:
	$(call run_pgindent,status=0; tools/typedefs.sh --check || status=1;,\
		env -u PGINDENT -u INDENT "$(PGINDENT)" --typedefs="$$tmp/typedefs.list" --check --diff $(PGINDENT_DIRS) >"$$tmp/diff" || [ $$? -eq 2 ]; \
		cat "$$tmp/diff"; \
		n=$$(grep -c '^--- ' "$$tmp/diff" || true); \
		if [ "$$n" -gt 0 ]; then \
			echo "pgindent would change $$n file(s):" $$(sed -n 's/^--- \([^	]*\).*/\1/p' "$$tmp/diff"); status=1; \
		else echo "pgindent: the tree is clean"; fi; \
		exit $$status)
