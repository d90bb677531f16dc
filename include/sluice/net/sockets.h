// Socket helpers: addresses, host lists, unix targets, non-blocking connect, socket options.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sluice {

// A socket address (TCP v4/v6 or unix) with PgBouncer-style formatting.
struct PeerAddr {
    sockaddr_storage ss{};
    socklen_t len = 0;
    bool is_unix() const noexcept { return ss.ss_family == AF_UNIX; }
    std::string host() const;  // "127.0.0.1", "::1", "unix"
    int port() const noexcept;
    // PgBouncer's form in log lines: "127.0.0.1:5432", "[::1]:5432".
    std::string host_port() const;
};

// An accepted client's address in 20 bytes where PeerAddr takes 136 (one per client): the
// IPv4/IPv6 address and port, or only the family AF_UNIX (a unix-socket peer has no address).
struct ClientAddr {
    std::array<uint8_t, 16> ip{};  // network byte order; AF_INET uses the first 4 bytes
    uint16_t port_num = 0;         // host byte order
    uint8_t family = 0;            // AF_INET, AF_INET6, AF_UNIX, or 0 (unknown)

    // Keeps the address of an AF_INET/AF_INET6 peer; any other family only as a family.
    static ClientAddr from(const PeerAddr& a) noexcept;
    bool is_unix() const noexcept { return family == AF_UNIX; }
    std::string host() const;  // as PeerAddr::host()
    int port() const noexcept { return port_num; }
    // The full socket address (for code that formats or matches a PeerAddr).
    PeerAddr to_peer() const noexcept;
};

// The same IPv4/IPv6 address, whatever the ports (false for any other family).
bool same_ip(const PeerAddr& a, const PeerAddr& b) noexcept;

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

// A [databases] host may be a comma-separated list: how many hosts, and the one at index
// (modulo the count, blanks around it removed).
size_t host_count(std::string_view host_list) noexcept;
std::string host_at(std::string_view host_list, size_t index);
// Every host of the list, in order.
std::vector<std::string> hosts_of(std::string_view host_list);
// A server host that names a unix socket: "" (in default_dir), "/dir", or "@name" (abstract
// namespace). Anything else is a host name or address, resolved by net/dns.h.
bool is_unix_target(std::string_view host) noexcept;
// The unix socket address of such a host and the port.
[[nodiscard]] bool unix_target(const std::string& host, int port, const std::string& default_dir,
                               PeerAddr& out, std::string& err);
// Starts a non-blocking connect. Returns the fd (>= 0) or -1 with err set.
int connect_nonblocking(const PeerAddr& addr, bool& in_progress, std::string& err);

}  // namespace sluice
