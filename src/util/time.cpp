// Clock cache: at most one clock read per loop turn instead of one per use.
#include "sluice/util/time.h"

#include <ctime>

namespace sluice {
namespace {
// g_mono_cache and g_wall: 0 = stale, the next reader fetches the clock. The loop marks both
// stale when epoll_wait returns, so the first use in a turn reads the clock and the rest of
// the turn shares that value (a turn that uses no time costs no clock read).
usec_t g_wall = 0;
usec_t g_mono_last = 0;  // the last monotonic reading, never marked stale

usec_t read_clock(clockid_t id) noexcept {
    struct timespec ts;
    clock_gettime(id, &ts);
    return static_cast<usec_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}
}  // namespace

usec_t g_mono_cache = 0;

void time_update() noexcept {
    mono_read();
    g_wall = 0;
}

void time_invalidate() noexcept {
    g_mono_cache = 0;
    g_wall = 0;
}

usec_t mono_read() noexcept {
    return g_mono_cache = g_mono_last = read_clock(CLOCK_MONOTONIC);
}

usec_t mono_recent() noexcept {
    return g_mono_last != 0 ? g_mono_last : mono_read();
}

usec_t wall_now() noexcept {
    if (g_wall == 0) [[unlikely]]
        g_wall = read_clock(CLOCK_REALTIME);
    return g_wall;
}

}  // namespace sluice
