// Listening sockets: every listen_addr on listen_port, and the unix socket
// unix_socket_dir/.s.PGSQL.<port>. Accepted fds are handed to a callback.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "sluice/net/sockets.h"

namespace sluice {

struct ListenConfig {
    std::vector<std::string> addrs;  // "*" = all IPv4 and IPv6
    std::string addr_text;           // listen_addr as written (for the error)
    int port = 6432;
    int backlog = 128;
    std::string unix_dir;  // "" = no unix socket
    int unix_mode = 0777;
    std::string unix_group;
    bool reuseport = false;
    bool defer_accept = true;
    TcpOptions tcp;  // set on TCP listeners; accepted sockets inherit them (Linux)
};

// Called for each accepted connection (non-blocking fd, peer address: for unix sockets only
// the family AF_UNIX). The local address is not read here: getsockname() when SHOW asks.
// input_waiting: accepted under TCP_DEFER_ACCEPT, so the first packet has most likely
// arrived already.
using AcceptFn = void (*)(int fd, const PeerAddr& peer, bool is_unix, bool input_waiting);

// Opens every listener. An address that cannot be listened on, or a unix socket that cannot
// be made, is logged and skipped; false (err says why) when a name does not resolve, when
// listen_addr yields no socket at all, when another instance holds the unix socket, or when
// there is nothing to listen on ("nowhere to listen on").
// Each listener sits in the loop's epoll set (net/loop.h: loop_watch); the loop must exist.
[[nodiscard]] bool listeners_open(const ListenConfig& cfg, AcceptFn fn, std::string& err);
// Socket activation: the count listening sockets from first_fd on, opened by the service
// manager, serve instead of listen_addr and unix_socket_dir. False = one is not a listening
// socket of a known family (err says which).
[[nodiscard]] bool listeners_adopt(int first_fd, int count, const ListenConfig& cfg, AcceptFn fn,
                                   std::string& err);
// Online restart (-R): the listening sockets the old process handed over serve instead of
// listen_addr and unix_socket_dir; the unix socket file is ours to remove from now on.
[[nodiscard]] bool listeners_take_over(std::span<const int> fds, const ListenConfig& cfg,
                                       AcceptFn fn, std::string& err);
// This process exits while suspended (its sockets may live on in a new process, as PgBouncer
// does): closing the listeners leaves the unix socket file in place.
void listeners_keep_paths();
// Stops accepting on TCP (shutdown) or on everything; removes the unix socket file on close
// (one it created).
void listeners_close(bool keep_unix);
// True when another process accepts on dir's .s.PGSQL.<port> (a running instance); checked
// at start-up before daemonizing, as PgBouncer does.
bool unix_socket_in_use(const std::string& dir, int port);
// A blocking connection to dir's .s.PGSQL.<port> (online restart), or -1.
int connect_unix_socket(const std::string& dir, int port);
// Re-applies TCP options to the TCP listeners (RELOAD / SET): later connections inherit them.
void listeners_tune(const TcpOptions& o);

// The open listening sockets (SHOW FDS lists them as task "pooler").
struct ListenerInfo {
    int fd;
    bool is_unix;
    std::string addr;  // "127.0.0.1", "::1", or the unix socket path
    int port;
};
std::vector<ListenerInfo> listeners_info();

// Stops / restarts accepting without closing (PAUSE-free backpressure on max_client_conn).
void listeners_pause(bool paused);

}  // namespace sluice
