# sluice top-level Makefile (hand-written). configure writes config.mk, included below;
# it is regenerated automatically when missing or older than configure.ac.
#   make            build ./build/sluice
#   make check      unit tests + protocol + integration tests against a scratch PostgreSQL
#   make run        scratch PostgreSQL + sluice on 127.0.0.1:6432 with etc/sluice.ini
#   make deps       install missing Debian packages (root) or print the command
#   make bench      side-by-side benchmark with PgBouncer and a direct connection
#   SANITIZE=1      ASan + UBSan build in ./build-san

.DEFAULT_GOAL := all
SHELL := /bin/bash

ifeq ($(filter deps clean distclean,$(MAKECMDGOALS)),)
-include config.mk
endif

config.mk: configure.ac config.mk.in
	@command -v autoreconf >/dev/null || ./build-aux/deps.sh
	autoreconf -fi
	./configure --quiet

ifeq ($(SANITIZE),1)
BUILD := build-san
OPTFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
LDOPT := -fsanitize=address,undefined
else
BUILD := build
# Link-time optimization: the hot path crosses files (loop -> sbuf -> client/server -> pool,
# the clock, settings); inlining across them saves ~5 % of the instructions per transaction.
OPTFLAGS := -O2 -g -flto=auto
LDOPT := -O2 -g -flto=auto
endif

WARNINGS := -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast \
            -Wcast-align -Wnull-dereference -Wformat=2 -Wimplicit-fallthrough \
            -Wmissing-declarations -Wundef -Wvla -Wconversion -Wsign-conversion
CXXFLAGS_ALL := -std=c++20 $(WARNINGS) -Werror $(OPTFLAGS) -Iinclude -MMD -MP \
                -DSLUICE_VERSION='"$(PACKAGE_VERSION)"' -DSLUICE_CASSERT=$(CASSERT) \
                $(LIBEVENT_CFLAGS) $(OPENSSL_CFLAGS) $(INIH_CFLAGS) $(PAM_CFLAGS) $(CXXFLAGS)
LIBS_ALL := $(LIBEVENT_LIBS) $(OPENSSL_LIBS) $(INIH_LIBS) $(PAM_LIBS) -pthread

SRCS := $(shell find src -name '*.cpp' | sort)
LIB_SRCS := $(filter-out src/main.cpp,$(SRCS))
OBJS := $(SRCS:%.cpp=$(BUILD)/%.o)
LIB_OBJS := $(LIB_SRCS:%.cpp=$(BUILD)/%.o)
UNIT_SRCS := $(wildcard test/unit/test_*.cpp)
UNIT_BINS := $(UNIT_SRCS:test/unit/%.cpp=$(BUILD)/test/%)

PYTHON := /usr/bin/python3

.PHONY: all check check-pgbouncer unit integration integration-proactor run deps bench bench-relays clean distclean format

all: $(BUILD)/sluice

$(BUILD)/%.o: %.cpp config.mk
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS_ALL) -c $< -o $@

$(BUILD)/libsluice.a: $(LIB_OBJS)
	@rm -f $@
	gcc-ar rcs $@ $^

$(BUILD)/sluice: $(BUILD)/src/main.o $(BUILD)/libsluice.a
	$(CXX) $(LDOPT) -o $@ $^ $(LIBS_ALL)

$(BUILD)/test/%: $(BUILD)/test/unit/%.o $(BUILD)/libsluice.a
	@mkdir -p $(dir $@)
	$(CXX) $(LDOPT) -o $@ $^ $(LIBS_ALL) $(CMOCKA_LIBS)

$(BUILD)/test/unit/%.o: test/unit/%.cpp config.mk
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS_ALL) $(CMOCKA_CFLAGS) -c $< -o $@

unit: $(UNIT_BINS)
	@fail=0; for t in $(UNIT_BINS); do echo "== $$t"; $$t || fail=1; done; exit $$fail

integration: $(BUILD)/sluice
	SLUICE_BIN=$(abspath $(BUILD)/sluice) $(PYTHON) -m pytest -q -p no:cacheprovider test/proto test/integration $(PYTEST_ARGS)

# The same tests against Debian's PgBouncer: those marked differs_from_pgbouncer_1_18 must
# fail there (strict xfail), every other one must pass. Not part of check.
PGBOUNCER ?= /usr/sbin/pgbouncer
check-pgbouncer: deps-quiet
	SLUICE_BIN=$(PGBOUNCER) $(PYTHON) -m pytest -q -p no:cacheprovider -rxXf test/proto test/integration $(PYTEST_ARGS)

# The tests closest to the socket read path again with sockets read through io_uring (the
# proactor): sluice chooses it at start-up only where a system call is dear, so on a machine
# with cheap calls the run above reads through epoll (doc/pooling.md, "Reads").
PROACTOR_TESTS := test/proto/test_txn_disconnect.py test/proto/test_txn_copy.py \
	test/integration/test_flow_control.py test/integration/test_copy_big.py \
	test/integration/test_fast_close.py test/integration/test_sockets.py \
	test/integration/test_tls.py test/integration/test_bad_input.py \
	test/integration/test_signals.py
integration-proactor: $(BUILD)/sluice
	SLUICE_PROACTOR=1 SLUICE_BIN=$(abspath $(BUILD)/sluice) $(PYTHON) -m pytest -q -p no:cacheprovider $(PROACTOR_TESTS) $(PYTEST_ARGS)

check: deps-quiet all
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory integration
	$(MAKE) --no-print-directory integration-proactor

deps-quiet:
	@./build-aux/deps.sh >/dev/null || ./build-aux/deps.sh

deps:
	./build-aux/deps.sh

run: deps-quiet all
	SLUICE_BIN=$(abspath $(BUILD)/sluice) $(PYTHON) test/lib/run_demo.py

# The bench's floor: a byte relay with no protocol work (test/bench/relay.cpp, figure 2).
$(BUILD)/bench/relay: test/bench/relay.cpp config.mk
	@mkdir -p $(dir $@)
	$(CXX) -std=c++20 $(WARNINGS) -Werror -O2 -o $@ $<

bench: deps-quiet all $(BUILD)/bench/relay
	SLUICE_BIN=$(abspath $(BUILD)/sluice) RELAY_BIN=$(abspath $(BUILD)/bench/relay) \
	    $(PYTHON) test/bench/bench.py $(BENCH_ARGS)

# The relay on epoll against the relay on io_uring, in interleaved pairs (doc/bench.md).
bench-relays: deps-quiet $(BUILD)/bench/relay
	RELAY_BIN=$(abspath $(BUILD)/bench/relay) $(PYTHON) test/bench/relay_ab.py $(BENCH_ARGS)

format:
	clang-format -i $(shell find src include test/unit -name '*.cpp' -o -name '*.h')

clean:
	rm -rf build build-san

distclean: clean
	rm -rf config.mk config.log config.status configure autom4te.cache aclocal.m4

-include $(OBJS:.o=.d) $(UNIT_BINS:$(BUILD)/test/%=$(BUILD)/test/unit/%.d)
