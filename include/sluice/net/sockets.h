// Socket helpers: addresses, resolving a server target, non-blocking connect, socket options.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <string>

namespace sluice {

// A socket address (TCP v4/v6 or unix) with PgBouncer-style formatting.
struct PeerAddr {
    sockaddr_storage ss{};
    socklen_t len = 0;
    bool is_unix() const noexcept { return ss.ss_family == AF_UNIX; }
    std::string host() const;  // "127.0.0.1", "::1", "unix"
    int port() const noexcept;
};

struct TcpOptions {
    bool keepalive = true;
    int keepcnt = 0;
    int keepidle = 0;
    int keepintvl = 0;
    int user_timeout_ms = 0;
    int socket_buffer = 0;
};

// Applies TCP_NODELAY and the keepalive/buffer options (tcp = false: unix socket, buffers only).
void tune_socket(int fd, bool tcp, const TcpOptions& o) noexcept;
[[nodiscard]] bool set_nonblocking(int fd) noexcept;

// Server target from a [databases] host/port: "" = unix socket in default_dir, "/dir" = unix
// socket there, otherwise a host name or address (first address; results cached briefly).
[[nodiscard]] bool resolve_target(const std::string& host, int port,
                                  const std::string& default_dir, PeerAddr& out, std::string& err);
// Starts a non-blocking connect. Returns the fd (>= 0) or -1 with err set.
int connect_nonblocking(const PeerAddr& addr, bool& in_progress, std::string& err);

}  // namespace sluice
