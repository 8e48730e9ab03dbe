# Makefile for plivo_otp: a plain PGXS build.
#
#   make PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
#   make install
#   make installcheck    (against a server that preloads plivo_otp)
#
# test/run.sh runs every suite against private clusters; see README.md.

EXTENSION = plivo_otp
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" plivo_otp.control)

MODULE_big = plivo_otp
OBJS = \
	src/plivo_otp.o \
	src/common/settings.o \
	src/common/phone.o \
	src/common/spi.o \
	src/common/worker.o \
	src/crypto/secret.o \
	src/crypto/codes.o \
	src/crypto/signature.o \
	src/shmem/ledger.o \
	src/shmem/commit_wake.o \
	src/api/args.o \
	src/api/send.o \
	src/api/verify.o \
	src/api/status.o \
	src/api/stats.o \
	src/api/callback.o \
	src/dispatcher/http.o \
	src/dispatcher/plivo_rest.o \
	src/dispatcher/dispatcher.o \
	src/listener/callback_auth.o \
	src/listener/delivery.o \
	src/listener/listener.o

DATA = $(wildcard sql/plivo_otp--*.sql)

REGRESS = setup install phone send_policy verify idempotency status_cancel storage \
	settings privileges signature callbacks
ISOLATION = $(patsubst specs/%.spec,%,$(wildcard specs/*.spec))
TAP_TESTS = 1
PROVE_TESTS = $(wildcard test/t/*.pl)

PG_CPPFLAGS = -I$(srcdir)/src -DPLIVO_OTP_VERSION='"$(EXTVERSION)"' \
	$(shell pkg-config --cflags libcurl libmicrohttpd openssl)
SHLIB_LINK = $(shell pkg-config --libs libcurl libmicrohttpd openssl)

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
