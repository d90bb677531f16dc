// The floor for figure 2's CPU per transaction at -c 1: a relay that does nothing but move bytes.
//
//   relay LISTEN_PORT SERVER_PORT
//
// Each connection accepted on 127.0.0.1:LISTEN_PORT gets its own connection to
// 127.0.0.1:SERVER_PORT, and bytes go both ways unread: no protocol, no auth, no pooling (the
// client logs in to PostgreSQL itself). The loop makes the same system calls per message as
// sluice and PgBouncer do at -c 1: epoll_wait (edge-triggered), one recv, one send. So its CPU
// per transaction is what any pooler built on epoll pays before it does any work of its own; the
// bench prints it beside theirs. Not a product: no error handling past what the bench needs.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

constexpr size_t kBufSize = 65536;

sockaddr_in loopback(int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

void no_delay(int fd) {
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = loopback(port);
    // Blocking connect (loopback, once per client), then non-blocking like every other socket.
    if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) < 0) {
        perror("relay: connect");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
        perror("relay: fcntl");
    no_delay(fd);
    return fd;
}

// Sends all of it. The bench's messages are small: a full socket buffer is not expected, and
// if it happens the relay waits for room in place rather than queueing.
bool send_all(int fd, const char* p, size_t n) {
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return false;
        }
        p += k;
        n -= static_cast<size_t>(k);
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: relay LISTEN_PORT SERVER_PORT\n");
        return 2;
    }
    int server_port = atoi(argv[2]);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int on = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    sockaddr_in la = loopback(atoi(argv[1]));
    if (lfd < 0 || bind(lfd, reinterpret_cast<sockaddr*>(&la), sizeof(la)) < 0 ||
        listen(lfd, 128) < 0) {
        perror("relay: listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event lev{};
    lev.events = EPOLLIN;
    lev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    std::vector<int> peer;  // fd -> the other end's fd, -1 when closed
    std::vector<char> buf(kBufSize);
    fprintf(stderr, "relay: listening on 127.0.0.1:%s\n", argv[1]);
    for (;;) {
        epoll_event evs[64];
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; ++i) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int c = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (c < 0)
                    continue;
                int s = dial(server_port);
                if (s < 0) {
                    close(c);
                    continue;
                }
                no_delay(c);
                size_t need = static_cast<size_t>(c > s ? c : s) + 1;
                if (peer.size() < need)
                    peer.resize(need, -1);
                peer[static_cast<size_t>(c)] = s;
                peer[static_cast<size_t>(s)] = c;
                for (int x : {c, s}) {
                    epoll_event ev{};
                    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
                    ev.data.fd = x;
                    epoll_ctl(ep, EPOLL_CTL_ADD, x, &ev);
                }
                continue;
            }
            int other = peer[static_cast<size_t>(fd)];
            if (other < 0)
                continue;  // closed earlier in this batch
            for (;;) {
                ssize_t k = recv(fd, buf.data(), buf.size(), 0);
                if (k > 0 && send_all(other, buf.data(), static_cast<size_t>(k))) {
                    if (static_cast<size_t>(k) < buf.size())
                        break;  // a short read drained the socket: no recv just for EAGAIN
                    continue;
                }
                if (k < 0 && (errno == EAGAIN || errno == EINTR))
                    break;
                // EOF or an error on either side: both ends go.
                peer[static_cast<size_t>(fd)] = -1;
                peer[static_cast<size_t>(other)] = -1;
                close(fd);
                close(other);
                break;
            }
        }
    }
}
