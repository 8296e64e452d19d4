# presence: PGXS build.  The version lives only in presence.control.
EXTENSION = presence
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" presence.control)

MODULE_big = presence
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA = $(wildcard sql/presence--*.sql)

# pg_regress suites (sql/NAME.sql, expected/NAME.out), in this order; as
# root, run them with test/run-regress.sh.
REGRESS = schema sessions permissions activity audit_chain csv tokens privileges timeline errors upgrade drop
REGRESS_OPTS = --temp-config=test/regress.conf --temp-instance=./tmp_check --load-extension=presence --encoding=UTF8 --no-locale
EXTRA_CLEAN = tmp_check results regression.diffs regression.out $(OBJS:.o=.d)

PG_CONFIG ?= pg_config
# -Wno-unused-parameter / -Wno-missing-field-initializers: PostgreSQL's and
# libwebsockets' callback signatures and designated initialisers trip them
# by design.
PG_CPPFLAGS = -Isrc -I$(libpq_srcdir) -Wall -Wextra -Werror -Wno-unused-parameter \
	-Wno-missing-field-initializers -DPRESENCE_VERSION=\"$(EXTVERSION)\" \
	-MMD -MP
SHLIB_LINK = -lwebsockets -luv -lhiredis -ljansson -lssl -lcrypto -lz $(libpq)

# No LLVM bitcode: nothing here benefits from JIT inlining.  Before the
# include, where PGXS decides whether to build and install it.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Each object's header dependencies (-MMD), so a changed struct rebuilds
# every file that uses it.
-include $(OBJS:.o=.d)
