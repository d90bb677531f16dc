// Cached wall and monotonic clocks: read at most once per loop turn, used everywhere.
#pragma once

#include <cstdint>

namespace sluice {

using usec_t = int64_t;

// Marks the cache stale: the next mono_now()/wall_now() reads the clock. Called by the loop
// when epoll_wait returns and before each libevent pass.
void time_invalidate() noexcept;
// Reads the monotonic clock now (timer callbacks that must not use a value from earlier in
// the turn); the wall clock is read again on its next use.
void time_update() noexcept;
// The cached monotonic reading; 0 = stale (time.cpp). Read through mono_now().
extern usec_t g_mono_cache;
usec_t mono_read() noexcept;  // reads the clock into the cache
// Monotonic microseconds (for timeouts and durations). Inline: asked ~10 times per
// transaction, read from the clock once per loop turn.
inline usec_t mono_now() noexcept {
    return g_mono_cache != 0 ? g_mono_cache : mono_read();
}
// The monotonic value last read, stale by at most one turn's work (no clock read when one
// was made already): for deciding how long the loop may sleep.
usec_t mono_recent() noexcept;
// Wall-clock microseconds since the epoch (for SHOW timestamps).
usec_t wall_now() noexcept;

}  // namespace sluice
