// Cached wall and monotonic clocks: read once per loop turn (time_update), used everywhere.
#pragma once

#include <cstdint>

namespace sluice {

using usec_t = int64_t;

// Refreshes the cache; called at the top of every event callback batch.
void time_update() noexcept;
// Monotonic microseconds (for timeouts and durations).
usec_t mono_now() noexcept;
// Wall-clock microseconds since the epoch (for SHOW timestamps).
usec_t wall_now() noexcept;

}  // namespace sluice
