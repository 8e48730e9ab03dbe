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
	src/settings.o \
	src/secret.o \
	src/codes.o \
	src/phone.o \
	src/shared_state.o \
	src/commit_wake.o \
	src/spi_util.o \
	src/api_args.o \
	src/api_send.o \
	src/api_verify.o \
	src/api_status.o \
	src/api_stats.o \
	src/http_multi.o \
	src/plivo_api.o \
	src/worker_common.o \
	src/dispatcher.o \
	src/signature.o \
	src/callback_auth.o \
	src/delivery.o \
	src/api_callback.o \
	src/listener.o

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
