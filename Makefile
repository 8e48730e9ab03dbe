# Makefile for plivo_otp: a plain PGXS build.
#
#   make PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
#   make install
#   make installcheck    (as a user other than root; see below)
#
# make installcheck runs every suite on its own: pg_regress and the isolation
# tester each start a private server (in ./tmp_instance) with
# test/regress.conf, which preloads plivo_otp, and the TAP tests start their
# own nodes.  PostgreSQL refuses to run as root; test/run.sh runs all of it
# as the postgres OS user and adds the signature unit tests; see README.md.

EXTENSION = plivo_otp
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" plivo_otp.control)

MODULE_big = plivo_otp
OBJS = \
	src/plivo_otp.o \
	src/common/settings.o \
	src/common/phone.o \
	src/common/phone_info.o \
	src/common/phonenumber_shim.o \
	src/common/spi.o \
	src/common/forced_plans.o \
	src/common/worker.o \
	src/common/url.o \
	src/common/states.o \
	src/common/errors.o \
	src/common/segments.o \
	src/common/templates.o \
	src/common/outbound.o \
	src/common/senders.o \
	src/common/table_cache.o \
	src/common/wait_events.o \
	src/common/ids.o \
	src/common/random_pool.o \
	src/crypto/secret.o \
	src/crypto/key_check.o \
	src/crypto/codes.o \
	src/crypto/answer_token.o \
	src/crypto/signature.o \
	src/shmem/ledger.o \
	src/shmem/send_budget.o \
	src/shmem/dispatcher_state.o \
	src/shmem/commit_wake.o \
	src/shmem/activity.o \
	src/api/args.o \
	src/api/send_locks.o \
	src/api/send_policy.o \
	src/api/destination.o \
	src/api/live_code.o \
	src/api/send.o \
	src/api/verify.o \
	src/api/status.o \
	src/api/resend.o \
	src/api/messages.o \
	src/api/templates_sql.o \
	src/api/stats.o \
	src/api/monitor.o \
	src/api/callback.o \
	src/api/senders_trigger.o \
	src/api/events.o \
	src/api/phone_masked.o \
	src/dispatcher/http.o \
	src/dispatcher/plivo_rest.o \
	src/dispatcher/plivo_response.o \
	src/dispatcher/queue.o \
	src/dispatcher/outcome.o \
	src/dispatcher/rate_limit.o \
	src/dispatcher/inflight_window.o \
	src/dispatcher/retention.o \
	src/dispatcher/expiry.o \
	src/dispatcher/fallback.o \
	src/dispatcher/dispatcher.o \
	src/listener/callback_auth.o \
	src/listener/delivery.o \
	src/listener/voice_answer.o \
	src/listener/server.o \
	src/listener/connections.o \
	src/listener/listener.o

DATA = $(wildcard sql/plivo_otp--*.sql)

REGRESS = setup install phone numbers send_policy verify idempotency status_cancel storage \
	settings privileges signature callbacks voice_callbacks redeliver voice senders templates monitoring upgrade
ISOLATION = $(patsubst specs/%.spec,%,$(wildcard specs/*.spec))
TAP_TESTS = 1
PROVE_TESTS = $(wildcard test/t/*.pl)

TEST_INSTANCE = --temp-instance=./tmp_instance --temp-config=$(srcdir)/test/regress.conf
REGRESS_OPTS = $(TEST_INSTANCE)
ISOLATION_OPTS = $(TEST_INSTANCE)
EXTRA_CLEAN = tmp_instance

PG_CPPFLAGS = -I$(srcdir)/src -DPLIVO_OTP_VERSION='"$(EXTVERSION)"' \
	$(shell pkg-config --cflags libcurl libmicrohttpd openssl)
# libphonenumber (C++, no pkg-config file) behind src/common/phonenumber_shim.cpp.
SHLIB_LINK = $(shell pkg-config --libs libcurl libmicrohttpd openssl) -lphonenumber -lstdc++

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Every object depends on the headers: PGXS tracks them only in a server
# built with --enable-depend, which Debian's is not, and an object built
# against an older struct layout links without a word.
$(OBJS): $(wildcard $(srcdir)/src/*.h $(srcdir)/src/*/*.h)

# After the include: Makefile.global sets it.  The same database as
# pg_regress, the one test/regress.conf names in plivo_otp.database.
ISOLATION_TESTDB = contrib_regression

# The examples/ scripts, each run as a regression test (sql/example_*.sql
# includes it), after the REGRESS list above.
REGRESS += example_login

# make docs: render the state machines' diagram, docs/states.png, from its
# Graphviz source docs/states.dot (Debian package graphviz).  Both are
# committed; the README shows the PNG.
docs: docs/states.png
docs/states.png: docs/states.dot
	dot -Tpng -Gdpi=80 -o $@ $<
.PHONY: docs
