// Statistics: snapshots of the pool counters every stats_period, the averages SHOW STATS
// reports, the "stats:" log line, and the latency histograms the metrics endpoint exports.
#include "sluice/stats.h"

#include <algorithm>
#include <bit>
#include <cinttypes>

#include <event2/event.h>

#include "sluice/net/loop.h"
#include "sluice/pool/pool.h"

namespace sluice {
namespace {

constexpr uint64_t kUsec = 1000000;

event* g_timer = nullptr;
usec_t g_old_stamp = 0;  // when Pool::stats_older was taken
usec_t g_new_stamp = 0;  // when Pool::stats_newer was taken

uint64_t delta(uint64_t cur, uint64_t old) noexcept {
    return cur > old ? cur - old : 0;  // counters never go back; guard anyway
}

void arm_timer() {
    int period = settings().stats_period > 0 ? settings().stats_period : 60;
    timeval tv{period, 0};
    if (loop_timer_add(g_timer, tv) != 0)
        log_warning("stats: cannot arm the stats_period timer");
}

void on_timer(evutil_socket_t, short, void*) noexcept {
    time_update();
    g_old_stamp = g_new_stamp;
    g_new_stamp = mono_now();
    PoolStats cur;
    PoolStats old;
    for (auto& p : rt().pools) {
        p->stats_older = p->stats_newer;
        p->stats_newer = pool_stats_now(*p);
        cur += p->stats_newer;
        old += p->stats_older;
    }
    if (settings().log_stats) {
        PoolStats avg = stats_average(cur, old);
        log_info("stats: %" PRIu64 " xacts/s, %" PRIu64 " queries/s, %" PRIu64
                 " client parses/s, %" PRIu64 " server parses/s, %" PRIu64 " binds/s, in %" PRIu64
                 " B/s, out %" PRIu64 " B/s, xact %" PRIu64 " us, query %" PRIu64
                 " us, wait %" PRIu64 " us",
                 avg.xact_count, avg.query_count, avg.client_parse_count, avg.server_parse_count,
                 avg.bind_count, avg.client_bytes, avg.server_bytes, avg.xact_time, avg.query_time,
                 avg.wait_time);
    }
    arm_timer();  // re-read stats_period each time: SET/RELOAD apply from the next period
}

}  // namespace

PoolStats& PoolStats::operator+=(const PoolStats& o) noexcept {
    server_assignment_count += o.server_assignment_count;
    xact_count += o.xact_count;
    query_count += o.query_count;
    client_bytes += o.client_bytes;
    server_bytes += o.server_bytes;
    xact_time += o.xact_time;
    query_time += o.query_time;
    wait_time += o.wait_time;
    client_parse_count += o.client_parse_count;
    server_parse_count += o.server_parse_count;
    bind_count += o.bind_count;
    client_login_count += o.client_login_count;
    return *this;
}

namespace {

// kFirstBucket[b]: the first bucket a value of bit length b (in [2^(b-1), 2^b)) can fall in.
// Consecutive bounds grow by 2x or more, so such a range holds at most one bound: the value
// is in that bucket or the next, one compare against kBoundAt[bucket] tells.
constexpr std::array<uint8_t, 65> make_first_bucket() {
    std::array<uint8_t, 65> t{};
    for (size_t b = 0; b < t.size(); ++b) {
        uint64_t lo = b == 0 ? 0 : uint64_t{1} << (b - 1);
        uint8_t i = 0;
        while (i < kLatencyBoundsUs.size() && lo > static_cast<uint64_t>(kLatencyBoundsUs[i]))
            ++i;
        t[b] = i;
    }
    return t;
}
constexpr std::array<uint8_t, 65> kFirstBucket = make_first_bucket();

// The bounds with the +Inf bucket's as the largest value: the compare needs no range check.
constexpr std::array<uint64_t, kLatencyBoundsUs.size() + 1> make_bound_at() {
    std::array<uint64_t, kLatencyBoundsUs.size() + 1> t{};
    for (size_t i = 0; i < kLatencyBoundsUs.size(); ++i)
        t[i] = static_cast<uint64_t>(kLatencyBoundsUs[i]);
    t.back() = UINT64_MAX;
    return t;
}
constexpr std::array<uint64_t, kLatencyBoundsUs.size() + 1> kBoundAt = make_bound_at();

constexpr bool one_bound_per_bit_length() {
    for (size_t i = 1; i < kLatencyBoundsUs.size(); ++i)
        if (kLatencyBoundsUs[i] < 2 * kLatencyBoundsUs[i - 1])
            return false;
    return true;
}
static_assert(one_bound_per_bit_length(), "observe() compares against one bound only");

}  // namespace

void LatencyHistogram::observe(usec_t us) noexcept {
    uint64_t v = us < 0 ? 0 : static_cast<uint64_t>(us);
    // Twice per transaction: a table by bit length, then one compare, no branch on the value.
    size_t i = kFirstBucket[std::bit_width(v)];
    i += v > kBoundAt[i];
    counts[i]++;
    sum_us += v;
}

LatencyHistogram& LatencyHistogram::operator+=(const LatencyHistogram& o) noexcept {
    for (size_t i = 0; i < counts.size(); ++i)
        counts[i] += o.counts[i];
    sum_us += o.sum_us;
    return *this;
}

uint64_t LatencyHistogram::count() const noexcept {
    uint64_t n = 0;
    for (uint64_t c : counts)
        n += c;
    return n;
}

void stats_observe_xact(Pool& p, usec_t us) noexcept {
    p.xact_hist.observe(us);
}

void stats_observe_query(Pool& p, usec_t us) noexcept {
    p.query_hist.observe(us);
}

void stats_observe_wait(Pool& p, usec_t us) noexcept {
    p.wait_hist.observe(us);
}

PoolStats pool_stats_now(const Pool& p) noexcept {
    return PoolStats{
        .server_assignment_count = p.server_assignments,
        .xact_count = p.xact_count,
        .query_count = p.query_count,
        .client_bytes = p.bytes_in,
        .server_bytes = p.bytes_out,
        .xact_time = p.xact_time,
        .query_time = p.query_time,
        .wait_time = p.wait_time,
        .client_parse_count = p.client_parse_count,
        .server_parse_count = p.server_parse_count,
        .bind_count = p.bind_count,
        .client_login_count = p.client_login_count,
    };
}

PoolStats stats_average(const PoolStats& cur, const PoolStats& old) noexcept {
    PoolStats avg;
    if (g_new_stamp == 0) {  // stats_start() not called (unit tests): measure from now - 1 s
        g_new_stamp = mono_now();
        g_old_stamp = g_new_stamp - static_cast<usec_t>(kUsec);
    }
    usec_t dur_signed = mono_now() - g_old_stamp;
    if (dur_signed <= 0)
        return avg;
    auto dur = static_cast<uint64_t>(dur_signed);
    auto rate = [dur](uint64_t c, uint64_t o) { return kUsec * delta(c, o) / dur; };
    avg.server_assignment_count = rate(cur.server_assignment_count, old.server_assignment_count);
    avg.xact_count = rate(cur.xact_count, old.xact_count);
    avg.query_count = rate(cur.query_count, old.query_count);
    avg.client_bytes = rate(cur.client_bytes, old.client_bytes);
    avg.server_bytes = rate(cur.server_bytes, old.server_bytes);
    avg.client_parse_count = rate(cur.client_parse_count, old.client_parse_count);
    avg.server_parse_count = rate(cur.server_parse_count, old.server_parse_count);
    avg.bind_count = rate(cur.bind_count, old.bind_count);
    avg.client_login_count = rate(cur.client_login_count, old.client_login_count);
    uint64_t queries = delta(cur.query_count, old.query_count);
    uint64_t xacts = delta(cur.xact_count, old.xact_count);
    uint64_t assignments = delta(cur.server_assignment_count, old.server_assignment_count);
    if (queries > 0)
        avg.query_time = delta(cur.query_time, old.query_time) / queries;
    if (xacts > 0)
        avg.xact_time = delta(cur.xact_time, old.xact_time) / xacts;
    if (assignments > 0)
        avg.wait_time = delta(cur.wait_time, old.wait_time) / assignments;
    return avg;
}

void stats_start() {
    g_new_stamp = mono_now();
    g_old_stamp = g_new_stamp - static_cast<usec_t>(kUsec);
    g_timer = evtimer_new(rt().base, on_timer, nullptr);
    if (!g_timer)
        die("cannot create the stats timer");
    arm_timer();
}

void stats_stop() {
    if (g_timer) {
        loop_timer_forget(g_timer);
        event_free(g_timer);
    }
    g_timer = nullptr;
}

}  // namespace sluice
