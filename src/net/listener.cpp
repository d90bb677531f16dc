// Listeners: bind, listen and accept; the accepted fd goes to the client layer via a callback.
#include "sluice/net/listener.h"

#include <arpa/inet.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "sluice/net/loop.h"
#include "sluice/util/log.h"

namespace sluice {
namespace {

struct Listener {
    int fd = -1;
    LoopWatch watch{};  // in the loop's epoll set while watched
    bool watched = false;
    bool is_unix = false;
    bool deferred = false;   // TCP_DEFER_ACCEPT is on: accept() waits for the first data
    std::string path;        // a unix socket's file (SHOW FDS)
    bool owns_path = false;  // we made the file: remove it on close (not systemd's)
};

std::vector<Listener> g_listeners;
AcceptFn g_accept = nullptr;
int g_port = 0;
bool g_paused = false;   // listeners_pause(): SUSPEND, max_client_conn
bool g_backoff = false;  // accept() failed (out of descriptors, memory): wait, then retry
event* g_backoff_timer = nullptr;
constexpr timeval kBackoff{5, 0};  // as PgBouncer

void watch(Listener& l, bool on);

void apply_watches() {
    for (Listener& l : g_listeners)
        watch(l, !g_paused && !g_backoff);
}

void on_backoff_end(evutil_socket_t, short, void*) noexcept {
    g_backoff = false;
    apply_watches();
}

// A listener stays readable while its backlog is not empty: retrying an accept() that fails
// (mostly for want of descriptors) at every turn would spin. Stop watching for a while.
void start_backoff() {
    if (!g_backoff_timer)
        g_backoff_timer = evtimer_new(loop_base(), on_backoff_end, nullptr);
    if (!g_backoff_timer)
        return;  // cannot time it: keep retrying
    g_backoff = true;
    apply_watches();
    loop_timer_add(g_backoff_timer, kBackoff);
}

// One connection per report. The listener is level-triggered in the loop's set: if more wait,
// the next epoll_wait (due anyway) reports it again, together with whatever else is ready, so
// accepting never ends in an accept() that only returns EAGAIN, and a burst of connections
// takes turns with the traffic of those already in.
void on_accept(void* arg) noexcept {
    auto* l = static_cast<Listener*>(arg);
    if (!l->watched)
        return;  // paused or closed by an earlier report of the same batch
    PeerAddr peer;
    peer.len = sizeof(peer.ss);
    int cfd;
    do {
        cfd = accept4(l->fd, reinterpret_cast<sockaddr*>(&peer.ss), &peer.len,
                      SOCK_NONBLOCK | SOCK_CLOEXEC);
    } while (cfd < 0 && errno == EINTR);
    if (cfd < 0) {
        // EAGAIN: another process took it (so_reuseport) or the client gave up.
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED)
            return;
        log_error("accept() failed: %s", strerror(errno));
        start_backoff();  // the connection waits in the backlog meanwhile
        return;
    }
    // The local address is read only when someone asks (SHOW CLIENTS): one syscall less
    // per connection.
    if (l->is_unix)
        peer.ss.ss_family = AF_UNIX;
    g_accept(cfd, peer, l->is_unix, l->deferred);
}

void watch(Listener& l, bool on) {
    if (on == l.watched || l.fd < 0)
        return;
    if (!on) {
        loop_unwatch(l.fd);
        l.watched = false;
        return;
    }
    l.watched = loop_watch(l.fd, &l.watch);
    if (!l.watched)
        log_warning("cannot add listener fd %d to the event loop: %s", l.fd, strerror(errno));
}

bool add_listener(int fd, bool is_unix, bool deferred, const std::string& path, bool owns_path,
                  std::string& err) {
    if (!set_nonblocking(fd)) {
        err = "cannot make listener non-blocking";
        close(fd);
        return false;
    }
    g_listeners.push_back(Listener{fd, {}, false, is_unix, deferred, path, owns_path});
    return true;
}

// PgBouncer's value: a client that connects and stays silent is handed over after about a
// second (one SYN-ACK retransmission), so client_login_timeout applies to it; legitimate
// clients always speak first.
bool set_defer_accept(int fd) {
    int secs = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs)) == 0;
}

// One listen_addr entry: every address it resolves to. An address that cannot be listened on
// is logged and skipped, as PgBouncer does (a host without IPv6 still serves "*" on IPv4);
// false only when the name does not resolve.
bool open_tcp(const ListenConfig& cfg, const std::string& host, std::string& err) {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    hints.ai_family = AF_UNSPEC;
    addrinfo* res = nullptr;
    std::string port = std::to_string(cfg.port);
    int rc = getaddrinfo(host == "*" ? nullptr : host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) {
        err = "getaddrinfo('" + host + "', '" + port + "') = " + gai_strerror(rc) + " [" +
              std::to_string(rc) + "]";
        return false;
    }
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
        PeerAddr a;
        memcpy(&a.ss, ai->ai_addr, ai->ai_addrlen);
        a.len = ai->ai_addrlen;
        bool v6 = ai->ai_family == AF_INET6;
        std::string where = a.host_port();
        const char* call = "socket";
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            int on = 1;
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
            if (cfg.reuseport)
                setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
            if (v6)
                setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
            tune_socket(fd, true, cfg.tcp);
            call = "bind";
            if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
                call = "listen";
                if (listen(fd, cfg.backlog) == 0)
                    call = nullptr;
            }
        }
        if (call) {
            log_warning("cannot listen on %s: %s(): %s", where.c_str(), call, strerror(errno));
            if (fd >= 0)
                close(fd);
            continue;
        }
        bool deferred = cfg.defer_accept && set_defer_accept(fd);
        log_info("listening on %s", where.c_str());
        if (!add_listener(fd, false, deferred, "", false, err)) {
            freeaddrinfo(res);
            return false;
        }
    }
    freeaddrinfo(res);
    return true;
}

// The socket file's address; false when the path does not fit.
bool unix_address(const std::string& dir, int port, sockaddr_un& un, socklen_t& len,
                  std::string& path) {
    path = dir + "/.s.PGSQL." + std::to_string(port);
    un = sockaddr_un{};
    un.sun_family = AF_UNIX;
    if (path.size() >= sizeof(un.sun_path))
        return false;
    memcpy(un.sun_path, path.c_str(), path.size());
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    return true;
}

// The unix socket. One that cannot be made (no such directory, no permission, a path too long
// for sockaddr_un) is logged and skipped, as PgBouncer 1.18 does (Debian's packaged
// unix_socket_dir on a host without PostgreSQL): TCP may still serve, and listeners_open() says
// "nowhere to listen on" when nothing does. False only for what must stop the start: another
// instance on the socket, a listener that cannot be set up.
bool open_unix(const ListenConfig& cfg, std::string& err) {
    sockaddr_un un;
    socklen_t len;
    std::string path;
    if (!unix_address(cfg.unix_dir, cfg.port, un, len, path)) {
        // PgBouncer would bind the path cut to fit, a socket file nobody looks for.
        log_warning("cannot listen on unix:%s: bind(): %s", path.c_str(), strerror(ENAMETOOLONG));
        return true;
    }
    bool abstract = cfg.unix_dir[0] == '@';
    if (abstract) {
        un.sun_path[0] = '\0';
        len = static_cast<socklen_t>(len - 1);  // abstract: no terminating NUL
    } else {
        // A stale socket from a dead process would make bind fail: probe, then remove.
        if (unix_socket_in_use(cfg.unix_dir, cfg.port)) {
            err = "unix socket is in use, cannot continue";
            return false;
        }
        unlink(path.c_str());
    }
    const char* call = "socket";
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        call = "bind";
        if (bind(fd, reinterpret_cast<sockaddr*>(&un), len) == 0) {
            call = "listen";
            if (listen(fd, cfg.backlog) == 0)
                call = nullptr;
        }
    }
    if (call) {
        log_warning("cannot listen on unix:%s: %s(): %s", path.c_str(), call, strerror(errno));
        if (fd >= 0)
            close(fd);
        return true;
    }
    if (!abstract) {
        chmod(path.c_str(), static_cast<mode_t>(cfg.unix_mode));
        if (!cfg.unix_group.empty()) {
            group* g = getgrnam(cfg.unix_group.c_str());
            if (!g || chown(path.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0)
                log_warning("cannot set group of %s to %s", path.c_str(), cfg.unix_group.c_str());
        }
    }
    log_info("listening on unix:%s", path.c_str());
    return add_listener(fd, true, false, abstract ? "" : path, !abstract, err);
}

// A listening socket opened elsewhere, used as it is with the TCP options of the config: by
// the service manager (socket activation; its unix socket file, if any, stays: systemd owns
// it), or by the process an online restart replaces (the file is ours from now on).
enum class Origin : uint8_t { ServiceManager, Takeover };

bool adopt(int fd, const ListenConfig& cfg, Origin origin, std::string& err) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    int listening = 0;
    socklen_t optlen = sizeof(listening);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) != 0 || !listening ||
        (ss.ss_family != AF_UNIX && ss.ss_family != AF_INET && ss.ss_family != AF_INET6)) {
        err = origin == Origin::ServiceManager
                  ? "failed to set up socket passed from service manager (fd " +
                        std::to_string(fd) + ")"
                  : "the old process handed over fd " + std::to_string(fd) +
                        ", which is not a listening socket";
        return false;
    }
    bool is_unix = ss.ss_family == AF_UNIX;
    std::string path;
    bool deferred = false;
    if (is_unix) {
        const auto& un = reinterpret_cast<const sockaddr_un&>(ss);
        if (len > offsetof(sockaddr_un, sun_path) && un.sun_path[0] != '\0')
            path = un.sun_path;
    } else {
        tune_socket(fd, true, cfg.tcp);
        deferred = cfg.defer_accept && set_defer_accept(fd);
    }
    if (origin == Origin::ServiceManager)
        log_info("socket passed from service manager (fd %d)", fd);
    return add_listener(fd, is_unix, deferred, path, origin == Origin::Takeover, err);
}

bool watch_all(std::string& err) {
    // Watch them only now: g_listeners no longer moves.
    for (Listener& l : g_listeners) {
        if (l.fd < 0 || l.watched)
            continue;
        l.watch = LoopWatch{on_accept, &l};
        watch(l, true);
        if (!l.watched) {
            err = std::string("cannot add a listener to the event loop: ") + strerror(errno);
            return false;
        }
    }
    return true;
}

}  // namespace

bool listeners_open(const ListenConfig& cfg, AcceptFn fn, std::string& err) {
    g_accept = fn;
    g_port = cfg.port;
    g_listeners.reserve(16);
    for (const std::string& a : cfg.addrs)
        if (!open_tcp(cfg, a, err))
            return false;
    if (!cfg.addrs.empty() && g_listeners.empty()) {
        err = "failed to listen on any address in listen_addr list: " + cfg.addr_text;
        return false;
    }
    if (!cfg.unix_dir.empty() && !open_unix(cfg, err))
        return false;
    if (g_listeners.empty()) {
        err = "nowhere to listen on";
        return false;
    }
    return watch_all(err);
}

bool listeners_adopt(int first_fd, int count, const ListenConfig& cfg, AcceptFn fn,
                     std::string& err) {
    g_accept = fn;
    g_port = cfg.port;
    g_listeners.reserve(static_cast<size_t>(count));
    for (int fd = first_fd; fd < first_fd + count; fd++)
        if (!adopt(fd, cfg, Origin::ServiceManager, err))
            return false;
    return watch_all(err);
}

bool listeners_take_over(std::span<const int> fds, const ListenConfig& cfg, AcceptFn fn,
                         std::string& err) {
    g_accept = fn;
    g_port = cfg.port;
    g_listeners.reserve(fds.size());
    for (int fd : fds)
        if (!adopt(fd, cfg, Origin::Takeover, err))
            return false;
    return watch_all(err);
}

void listeners_keep_paths() {
    for (Listener& l : g_listeners)
        l.owns_path = false;
}

void listeners_tune(const TcpOptions& o) {
    for (const Listener& l : g_listeners)
        if (l.fd >= 0 && !l.is_unix)
            tune_socket(l.fd, true, o);
}

std::vector<ListenerInfo> listeners_info() {
    std::vector<ListenerInfo> out;
    for (const Listener& l : g_listeners) {
        if (l.fd < 0)
            continue;
        if (l.is_unix) {
            out.push_back({l.fd, true, l.path, g_port});
            continue;
        }
        PeerAddr a;
        a.len = sizeof(a.ss);
        if (getsockname(l.fd, reinterpret_cast<sockaddr*>(&a.ss), &a.len) != 0)
            continue;
        out.push_back({l.fd, false, a.host(), a.port()});
    }
    return out;
}

void listeners_close(bool keep_unix) {
    if (g_backoff_timer && !keep_unix) {
        loop_timer_forget(g_backoff_timer);
        event_free(g_backoff_timer);
        g_backoff_timer = nullptr;
        g_backoff = false;
    }
    for (Listener& l : g_listeners) {
        if (l.fd < 0 || (keep_unix && l.is_unix))
            continue;
        l.watched = false;  // closing the fd takes it out of the loop's set
        close(l.fd);
        l.fd = -1;
        if (l.owns_path)
            unlink(l.path.c_str());
    }
}

void listeners_pause(bool paused) {
    g_paused = paused;
    apply_watches();
}

int connect_unix_socket(const std::string& dir, int port) {
    sockaddr_un un;
    socklen_t len;
    std::string path;
    if (dir.empty() || dir[0] == '@' || !unix_address(dir, port, un, len, path))
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, reinterpret_cast<const sockaddr*>(&un), len) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

bool unix_socket_in_use(const std::string& dir, int port) {
    int fd = connect_unix_socket(dir, port);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

}  // namespace sluice
