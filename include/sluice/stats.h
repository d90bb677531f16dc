// Statistics: the per-pool counters behind SHOW STATS / STATS_TOTALS / STATS_AVERAGES /
// TOTALS, the averages over stats_period, the periodic "stats:" log line, and latency
// histograms for the metrics endpoint.
//
// This header holds plain data types and is included by the pool layer (objects.h embeds
// PoolStats and LatencyHistogram in Pool): it depends on nothing above util. The functions
// that need pools are implemented in src/stats.cpp.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "sluice/util/time.h"

namespace sluice {

struct Pool;

// PgBouncer's PgStats: cumulative counters of one pool (or a sum of pools). Times in µs.
struct PoolStats {
    uint64_t server_assignment_count = 0;
    uint64_t xact_count = 0;
    uint64_t query_count = 0;
    uint64_t client_bytes = 0;  // received from clients (SHOW STATS total_received)
    uint64_t server_bytes = 0;  // received from servers (SHOW STATS total_sent)
    uint64_t xact_time = 0;
    uint64_t query_time = 0;
    uint64_t wait_time = 0;
    uint64_t client_parse_count = 0;
    uint64_t server_parse_count = 0;
    uint64_t bind_count = 0;
    uint64_t client_login_count = 0;

    PoolStats& operator+=(const PoolStats& o) noexcept;
};

// Upper bounds (µs, inclusive) of the latency histogram buckets; one more bucket counts
// everything above the last bound (+Inf). Exported in seconds by the metrics endpoint.
inline constexpr std::array<usec_t, 16> kLatencyBoundsUs = {
    100,   250,    500,    1000,   2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

// Non-cumulative bucket counts (counts[i] = observations in (bound[i-1], bound[i]]) and sum.
struct LatencyHistogram {
    std::array<uint64_t, kLatencyBoundsUs.size() + 1> counts{};
    uint64_t sum_us = 0;

    // No allocation; a few compares for typical values. Negative durations count as 0.
    void observe(usec_t us) noexcept;
    LatencyHistogram& operator+=(const LatencyHistogram& o) noexcept;
    uint64_t count() const noexcept;
};

// Hot-path hooks, one per place where PgBouncer accumulates a time: a transaction ended
// (Server::after_reply), a query ended (same), a waiting client got a server (assign()).
void stats_observe_xact(Pool& p, usec_t us) noexcept;
void stats_observe_query(Pool& p, usec_t us) noexcept;
void stats_observe_wait(Pool& p, usec_t us) noexcept;

// The pool's counters as they are now.
PoolStats pool_stats_now(const Pool& p) noexcept;
// PgBouncer's calc_average: per-second rates of the counts and bytes, per-event averages of
// the times, between `old` (taken at stats_old_stamp()) and `cur` (taken now).
PoolStats stats_average(const PoolStats& cur, const PoolStats& old) noexcept;

// Starts the stats_period timer on rt().base (rotates the snapshots, logs "stats: ..." when
// log_stats is on). Call once at start-up after the event base exists.
void stats_start();
// Frees the timer (at exit, before the event base is freed).
void stats_stop();

}  // namespace sluice
