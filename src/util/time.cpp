// Clock cache: one clock_gettime pair per loop turn instead of one per use.
#include "sluice/util/time.h"

#include <ctime>

namespace sluice {
namespace {
usec_t g_mono = 0;
usec_t g_wall = 0;

usec_t read_clock(clockid_t id) noexcept {
    struct timespec ts;
    clock_gettime(id, &ts);
    return static_cast<usec_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}
}  // namespace

void time_update() noexcept {
    g_mono = read_clock(CLOCK_MONOTONIC);
    g_wall = read_clock(CLOCK_REALTIME);
}

usec_t mono_now() noexcept {
    if (g_mono == 0)
        time_update();
    return g_mono;
}

usec_t wall_now() noexcept {
    if (g_wall == 0)
        time_update();
    return g_wall;
}

}  // namespace sluice
