# Makefile -- build, install and test parflow with PGXS.
#
# `make demo`, `make test` and `make bench` work on a fresh Debian 12 machine
# that has only make, gcc and git: they first run test/bootstrap.sh (which
# installs whatever PostgreSQL 15 packages are missing), then build and install
# in a fresh make so that the freshly installed pg_config is the one used.
# Everything else (all, install, installcheck, clean) is plain PGXS and needs
# the server headers; without them it says how to get them.

PG_MAJOR ?= 15
PG_MAJOR_CONFIG := /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config
PG_CONFIG ?= $(firstword $(wildcard $(PG_MAJOR_CONFIG)) pg_config)

# The pg_config the bootstrap targets hand to their sub-makes and scripts:
# the caller's if given on the command line or in the environment, else the
# PostgreSQL 15 one that bootstrap.sh installs.
ifneq ($(filter command line environment environment override,$(origin PG_CONFIG)),)
PF_PG_CONFIG := $(PG_CONFIG)
else
PF_PG_CONFIG := $(PG_MAJOR_CONFIG)
endif

# Installing into the PostgreSQL tree needs root: use sudo when not root.
PF_SUDO := $(shell [ "$$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && echo sudo; })

.DEFAULT_GOAL := all

# --- the extension -----------------------------------------------------------

MODULE_big = parflow
OBJS = $(patsubst %.c,%.o,$(wildcard src/*.c))
EXTENSION = parflow
DATA = $(wildcard sql/parflow--*.sql)
PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wmissing-prototypes -Werror=implicit-function-declaration

# Regression tests: every sql/*.sql that is not an extension script, run by
# pg_regress in database parflow_regression (the tests CREATE EXTENSION
# themselves).  PGXS appends --dbname=$(CONTRIB_TESTDB) to REGRESS_OPTS: it is
# set to the same name after the include (which would otherwise override it),
# so pg_regress does not also create an unused contrib_regression.
REGRESS := $(sort $(patsubst sql/%.sql,%,$(filter-out sql/parflow--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --inputdir=. --outputdir=. --dbname=parflow_regression

# Isolation tests (concurrent sessions): every test/isolation/specs/*.spec, run
# by pg_isolation_regress against test/isolation/expected/*.out, results and
# regression.diffs in output_iso/, in database parflow_isolation
# (ISOLATION_TESTDB, set after the include like CONTRIB_TESTDB).
ISOLATION := $(sort $(patsubst test/isolation/specs/%.spec,%,$(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test/isolation

# Removed by `make clean` besides what PGXS knows (set before the include:
# pgxs.mk tests it when read), and everything when PGXS is not available.
EXTRA_CLEAN = parflow-agent results/ regression.diffs regression.out log/ test/tmp/ output_iso/
PF_CLEAN = src/*.o src/*.bc parflow.so $(EXTRA_CLEAN)

PF_SERVER_INCLUDEDIR := $(shell $(PG_CONFIG) --includedir-server 2>/dev/null)
PF_HAVE_SERVER_HEADERS := $(if $(PF_SERVER_INCLUDEDIR),$(wildcard $(PF_SERVER_INCLUDEDIR)/postgres.h))

ifneq ($(PF_HAVE_SERVER_HEADERS),)

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

CONTRIB_TESTDB = parflow_regression
ISOLATION_TESTDB = parflow_isolation

# PGXS has no header dependency tracking: rebuild on any header change.
$(OBJS) $(OBJS:.o=.bc): $(wildcard src/*.h)

# --- second program: the reference agent `parflow-agent` -----------------------
# Built from src/agent/*.c against libpq (not part of the server module: the
# src/*.c wildcard of OBJS does not descend into src/agent/), added to `all`,
# installed into `pg_config --bindir`.  Only when src/agent/ has sources.

AGENT = parflow-agent
AGENT_SRCS := $(wildcard src/agent/*.c)
AGENT_HDRS := $(wildcard src/agent/*.h)

ifneq ($(AGENT_SRCS),)
all: $(AGENT)
install: install-agent
uninstall: uninstall-agent

$(AGENT): $(AGENT_SRCS) $(AGENT_HDRS)
	$(CC) $(CFLAGS) -I$(srcdir)/src/agent -I$(shell $(PG_CONFIG) --includedir) \
		-o $@ $(AGENT_SRCS) \
		$(LDFLAGS) -L$(shell $(PG_CONFIG) --libdir) -lpq

install-agent: $(AGENT)
	$(MKDIR_P) '$(DESTDIR)$(shell $(PG_CONFIG) --bindir)'
	$(INSTALL_PROGRAM) $(AGENT) '$(DESTDIR)$(shell $(PG_CONFIG) --bindir)/$(AGENT)'

uninstall-agent:
	rm -f '$(DESTDIR)$(shell $(PG_CONFIG) --bindir)/$(AGENT)'

.PHONY: install-agent uninstall-agent
endif
# --- end of the agent ----------------------------------------------------------

else # no server headers: explain instead of failing obscurely

all install installcheck uninstall:
	@echo "parflow: PostgreSQL $(PG_MAJOR) server headers not found (no postgres.h under '$(PG_CONFIG) --includedir-server')." >&2
	@echo "parflow: run 'make test' or 'make demo' (they install what is missing first)," >&2
	@echo "parflow: or 'bash test/bootstrap.sh', or pass PG_CONFIG=/path/to/pg_config." >&2
	@exit 1

clean:
	rm -rf $(PF_CLEAN)

.PHONY: all install installcheck uninstall clean
endif

# --- bootstrap targets: always available --------------------------------------
# Each installs what is missing, builds and installs in a fresh make (so a
# pg_config installed a moment ago is used), then runs its script.  $(MAKE)
# must appear literally in these lines for make to treat them as recursive.

PF_SUBMAKE_ARGS = -C '$(CURDIR)' --no-print-directory PG_CONFIG='$(PF_PG_CONFIG)'

test:
	bash test/bootstrap.sh
	$(MAKE) $(PF_SUBMAKE_ARGS) all
	$(PF_SUDO) $(MAKE) $(PF_SUBMAKE_ARGS) install
	PG_CONFIG='$(PF_PG_CONFIG)' bash test/run.sh

demo:
	bash test/bootstrap.sh
	$(MAKE) $(PF_SUBMAKE_ARGS) all
	$(PF_SUDO) $(MAKE) $(PF_SUBMAKE_ARGS) install
	PG_CONFIG='$(PF_PG_CONFIG)' bash test/demo.sh

bench:
	bash test/bootstrap.sh
	$(MAKE) $(PF_SUBMAKE_ARGS) all
	$(PF_SUDO) $(MAKE) $(PF_SUBMAKE_ARGS) install
	PG_CONFIG='$(PF_PG_CONFIG)' bash test/bench/run.sh

.PHONY: test demo bench
