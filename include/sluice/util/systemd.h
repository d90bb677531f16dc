// The two systemd service protocols sluice speaks without libsystemd: readiness and state
// notifications (Type=notify / notify-reload units: $NOTIFY_SOCKET) and socket activation
// (listening sockets handed over as fds 3.. with $LISTEN_FDS / $LISTEN_PID).
#pragma once

#include <string_view>

namespace sluice {

// Sends one notification ("READY=1", "STOPPING=1", ...) to $NOTIFY_SOCKET; nothing when the
// variable is unset. Failures are logged at debug level only: as with sd_notify(3), a
// service manager that does not listen is not an error of ours.
void sd_notify_state(std::string_view state);
// "RELOADING=1" with MONOTONIC_USEC (required by Type=notify-reload units).
void sd_notify_reloading();

// The number of listening sockets passed by the service manager to this process (fds 3 to
// 3 + n - 1, made close-on-exec), 0 when none: $LISTEN_PID must name this process.
int sd_listen_fd_count();
inline constexpr int kSdListenFdsStart = 3;

}  // namespace sluice
