# pg_ratelimit: PGXS build.
#
#   make && make install     build and install into the PostgreSQL that
#                            pg_config names
#   make installcheck        regression, isolation and TAP tests against a
#                            running server with the extension preloaded
#   make test                everything, on a throwaway server (scripts/test.sh)

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
	src/lease.o \
	src/ledger.o \
	src/ledger_marks.o \
	src/ledger_shares.o \
	src/limits.o \
	src/names.o \
	src/notify.o \
	src/persist.o \
	src/pg_ratelimit.o \
	src/settings.o \
	src/shmem.o \
	src/views.o \
	src/wait.o \
	src/worker.o

EXTENSION = pg_ratelimit
DATA = pg_ratelimit--1.0.sql
PGFILEDESC = "pg_ratelimit - shared-memory rate limiter for LLM API keys"

# The background worker stays connected to ratelimit.database, which
# pg_regress therefore cannot drop and re-create: the tests use an existing
# database (contrib_regression, see below), and the first test re-creates
# the extension in it.
REGRESS = setup config acquire release capacity clock wait usage shares instances holders errors
REGRESS_OPTS = --use-existing

ISOLATION = race_rpm race_tpm race_concurrency race_share race_window config_repeatable_read config_serializable wait_lost_wakeup role_cap
ISOLATION_OPTS = --inputdir=tests/isolation --use-existing

TAP_TESTS = 1
PROVE_TESTS = tests/t/*.pl

PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifeq ($(PGXS),)
$(error pg_config was not found: install postgresql-server-dev-15, or run scripts/test.sh)
endif
include $(PGXS)

# The regression and isolation suites share one database, the one named by
# ratelimit.database on the test server; it must exist.
CONTRIB_TESTDB = contrib_regression
ISOLATION_TESTDB = contrib_regression

.PHONY: test demo bench
test:
	bash scripts/test.sh
demo:
	bash scripts/demo.sh
bench:
	bash tests/bench/run.sh

# PGXS does not track header dependencies
$(OBJS): $(wildcard src/*.h)

# The libpq client used by the TAP tests and shown in the README
tests/clients/rl_listen: tests/clients/rl_listen.c
	$(CC) $(CFLAGS) -I$(shell $(PG_CONFIG) --includedir) -o $@ $< -L$(shell $(PG_CONFIG) --libdir) -lpq
installcheck: tests/clients/rl_listen
EXTRA_CLEAN = tests/clients/rl_listen
tests/bench/wake_latency: tests/bench/wake_latency.c
	$(CC) $(CFLAGS) -I$(shell $(PG_CONFIG) --includedir) -o $@ $< -L$(shell $(PG_CONFIG) --libdir) -lpq
EXTRA_CLEAN += tests/bench/wake_latency
