// Socket helpers shared by the listener, server connections and cancel forwarding.
#include "sluice/net/sockets.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string_view>

namespace sluice {

std::string PeerAddr::host() const {
    char buf[INET6_ADDRSTRLEN] = "";
    if (ss.ss_family == AF_INET) {
        const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
        inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
    } else if (ss.ss_family == AF_INET6) {
        const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
        inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    } else {
        return "unix";
    }
    return buf;
}

std::string PeerAddr::host_port() const {
    bool v6 = ss.ss_family == AF_INET6;
    return (v6 ? "[" : "") + host() + (v6 ? "]:" : ":") + std::to_string(port());
}

int PeerAddr::port() const noexcept {
    if (ss.ss_family == AF_INET)
        return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
    return 0;
}

ClientAddr ClientAddr::from(const PeerAddr& a) noexcept {
    ClientAddr c;
    c.family = static_cast<uint8_t>(a.ss.ss_family);
    if (a.ss.ss_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(&a.ss);
        memcpy(c.ip.data(), &in->sin_addr, 4);
        c.port_num = ntohs(in->sin_port);
    } else if (a.ss.ss_family == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a.ss);
        memcpy(c.ip.data(), &in6->sin6_addr, 16);
        c.port_num = ntohs(in6->sin6_port);
    }
    return c;
}

bool same_ip(const PeerAddr& a, const PeerAddr& b) noexcept {
    if (a.ss.ss_family != b.ss.ss_family ||
        (a.ss.ss_family != AF_INET && a.ss.ss_family != AF_INET6))
        return false;
    ClientAddr x = ClientAddr::from(a), y = ClientAddr::from(b);
    return x.ip == y.ip;
}

PeerAddr ClientAddr::to_peer() const noexcept {
    PeerAddr a;
    a.ss.ss_family = family;
    if (family == AF_INET) {
        auto* in = reinterpret_cast<sockaddr_in*>(&a.ss);
        memcpy(&in->sin_addr, ip.data(), 4);
        in->sin_port = htons(port_num);
        a.len = sizeof(sockaddr_in);
    } else if (family == AF_INET6) {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
        memcpy(&in6->sin6_addr, ip.data(), 16);
        in6->sin6_port = htons(port_num);
        a.len = sizeof(sockaddr_in6);
    }
    return a;
}

std::string ClientAddr::host() const {
    char buf[INET6_ADDRSTRLEN] = "";
    if (family == AF_INET)
        inet_ntop(AF_INET, ip.data(), buf, sizeof(buf));
    else if (family == AF_INET6)
        inet_ntop(AF_INET6, ip.data(), buf, sizeof(buf));
    else
        return "unix";
    return buf;
}

bool set_nonblocking(int fd) noexcept {
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0;
}

void tune_socket(int fd, bool tcp, const TcpOptions& o) noexcept {
    int on = 1;
    if (o.socket_buffer > 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &o.socket_buffer, sizeof(int));
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o.socket_buffer, sizeof(int));
    }
    if (!tcp)
        return;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    if (o.keepalive) {
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
        if (o.keepcnt > 0)
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &o.keepcnt, sizeof(int));
        if (o.keepidle > 0)
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &o.keepidle, sizeof(int));
        if (o.keepintvl > 0)
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &o.keepintvl, sizeof(int));
    }
    if (o.user_timeout_ms > 0)
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &o.user_timeout_ms, sizeof(int));
}

std::vector<std::string> hosts_of(std::string_view host_list) {
    std::vector<std::string> out;
    for (size_t i = 0, n = host_count(host_list); i < n; ++i)
        out.push_back(host_at(host_list, i));
    return out;
}

size_t host_count(std::string_view host_list) noexcept {
    return static_cast<size_t>(std::count(host_list.begin(), host_list.end(), ',')) + 1;
}

std::string host_at(std::string_view host_list, size_t index) {
    index %= host_count(host_list);
    size_t start = 0;
    for (; index > 0; --index)
        start = host_list.find(',', start) + 1;
    std::string_view h = host_list.substr(start, host_list.find(',', start) - start);
    while (!h.empty() && (h.front() == ' ' || h.front() == '\t'))
        h.remove_prefix(1);
    while (!h.empty() && (h.back() == ' ' || h.back() == '\t'))
        h.remove_suffix(1);
    return std::string(h);
}

bool is_unix_target(std::string_view host) noexcept {
    return host.empty() || host[0] == '/' || host[0] == '@';
}

bool unix_target(const std::string& host, int port, const std::string& default_dir,
                 PeerAddr& out, std::string& err) {
    out = PeerAddr{};
    std::string dir = host.empty() ? default_dir : host;
    std::string path = dir + "/.s.PGSQL." + std::to_string(port);
    auto* un = reinterpret_cast<sockaddr_un*>(&out.ss);
    if (path.size() >= sizeof(un->sun_path)) {
        err = "unix socket path too long: " + path;
        return false;
    }
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path.c_str(), path.size() + 1);
    size_t len = offsetof(sockaddr_un, sun_path) + path.size() + 1;
    if (path[0] == '@') {
        // Abstract namespace (as PostgreSQL's unix_socket_directories = '@name'): a leading
        // NUL, and the name is exactly as long as the address says.
        un->sun_path[0] = '\0';
        --len;
    }
    out.len = static_cast<socklen_t>(len);
    return true;
}

int connect_nonblocking(const PeerAddr& addr, bool& in_progress, std::string& err) {
    int fd = socket(addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = strerror(errno);
        return -1;
    }
    in_progress = false;
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr.ss), addr.len) != 0) {
        if (errno == EINPROGRESS) {
            in_progress = true;
        } else {
            err = strerror(errno);
            close(fd);
            return -1;
        }
    }
    return fd;
}

}  // namespace sluice
