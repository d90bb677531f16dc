// What authentication needs to know about one client connection: transport, peer address,
// TLS state and certificate, unix-socket peer uid. The client layer fills it in
// (Client::conn_info()); hba matching and the peer/cert checks read only this, so they stay
// testable without sockets.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <sys/socket.h>

namespace sluice {

struct ConnInfo {
    bool unix_socket = false;        // came in on the unix socket (hba "local" lines)
    int family = 0;                  // AF_INET / AF_INET6 for TCP peers, 0 otherwise
    std::array<uint8_t, 16> addr{};  // peer address, network byte order (AF_INET: 4 bytes)
    bool tls = false;                // TLS is active on the connection
    std::string cert_cn;             // subject CN of the client certificate ("" = none)
    bool have_peer_uid = false;      // unix socket and SO_PEERCRED answered
    uint32_t peer_uid = 0;           // the peer process's effective uid
    bool replication = false;        // physical replication connection
};

// Copies the address of an AF_INET/AF_INET6 socket address into ci.family/ci.addr; any other
// family sets ci.family = 0 (no "host" line can match it).
void conn_info_set_addr(ConnInfo& ci, const sockaddr_storage& ss) noexcept;
// Same from numeric text ("10.0.0.1", "::1"), for tests. False (ci untouched) when the text
// is not a numeric IPv4/IPv6 address.
[[nodiscard]] bool conn_info_set_addr(ConnInfo& ci, std::string_view text);

}  // namespace sluice
