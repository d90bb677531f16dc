// The floor for figure 2's CPU per transaction at -c 1: a relay that does nothing but move bytes.
//
//   relay [--uring] LISTEN_PORT SERVER_PORT
//
// Each connection accepted on 127.0.0.1:LISTEN_PORT gets its own connection to
// 127.0.0.1:SERVER_PORT, and bytes go both ways unread: no protocol, no auth, no pooling (the
// client logs in to PostgreSQL itself). The loop makes the same system calls per message as
// sluice and PgBouncer do at -c 1: epoll_wait (edge-triggered), one recv, one send. So its CPU
// per transaction is what any pooler built on epoll pays before it does any work of its own; the
// bench prints it beside theirs. Not a product: no error handling past what the bench needs.
//
// --uring: the same relay built on io_uring instead of epoll (a proactor: no readiness reports,
// the kernel does the recv when data arrives). Each message costs one io_uring_enter: the send
// to the other side, linked to the next recv on this side, and the wait for the next
// completion. test/bench/relay_ab.py compares the two in interleaved pairs (doc/bench.md, "the
// floor at -c 1"): what an io_uring read path could save sluice before it does any work.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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

// nonblocking: for the epoll relay (io_uring waits for room itself: MSG_WAITALL).
int dial(int port, bool nonblocking) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = loopback(port);
    // Blocking connect (loopback, once per client), then non-blocking like every other socket.
    if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) < 0) {
        perror("relay: connect");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (nonblocking && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
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

// --- the io_uring relay ----------------------------------------------------------------------

// A ring of raw system calls (no liburing), as src/net/uring.cpp.
class Ring {
public:
    bool open(unsigned entries) {
        io_uring_params p{};
        fd_ = static_cast<int>(syscall(__NR_io_uring_setup, entries, &p));
        if (fd_ < 0)
            return false;
        auto map = [&](size_t len, off_t what) {
            void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_,
                           what);
            return m == MAP_FAILED ? nullptr : static_cast<char*>(m);
        };
        char* sq = map(p.sq_off.array + p.sq_entries * sizeof(unsigned), IORING_OFF_SQ_RING);
        char* cq = map(p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe), IORING_OFF_CQ_RING);
        sqes_ = reinterpret_cast<io_uring_sqe*>(
            map(p.sq_entries * sizeof(io_uring_sqe), IORING_OFF_SQES));
        if (!sq || !cq || !sqes_)
            return false;
        sq_tail_ = reinterpret_cast<unsigned*>(sq + p.sq_off.tail);
        sq_mask_ = *reinterpret_cast<unsigned*>(sq + p.sq_off.ring_mask);
        cq_head_ = reinterpret_cast<unsigned*>(cq + p.cq_off.head);
        cq_tail_ = reinterpret_cast<unsigned*>(cq + p.cq_off.tail);
        cq_mask_ = *reinterpret_cast<unsigned*>(cq + p.cq_off.ring_mask);
        cqes_ = reinterpret_cast<io_uring_cqe*>(cq + p.cq_off.cqes);
        entries_ = p.sq_entries;
        auto* array = reinterpret_cast<unsigned*>(sq + p.sq_off.array);
        for (unsigned i = 0; i < p.sq_entries; ++i)
            array[i] = i;  // ring position i is SQE i
        return true;
    }
    // A zeroed SQE for the next enter() (which this calls first when the ring is full).
    io_uring_sqe& next() {
        if (queued_ == entries_)
            enter(0);
        io_uring_sqe& e = sqes_[(*sq_tail_ + queued_++) & sq_mask_];
        memset(&e, 0, sizeof e);
        return e;
    }
    // Submits what next() prepared and waits until at least `wait` completions are posted.
    void enter(unsigned wait) {
        std::atomic_ref<unsigned>(*sq_tail_).store(*sq_tail_ + queued_,
                                                   std::memory_order_release);
        unsigned n = queued_;
        queued_ = 0;
        while (syscall(__NR_io_uring_enter, fd_, n, wait, IORING_ENTER_GETEVENTS, nullptr, 0) < 0 &&
               errno == EINTR)
            n = 0;  // only the wait can be interrupted: the SQEs were taken
    }
    // Calls fn(cqe) for each completion posted so far.
    template <class Fn>
    void reap(Fn fn) {
        unsigned head = *cq_head_;
        unsigned tail = std::atomic_ref<unsigned>(*cq_tail_).load(std::memory_order_acquire);
        for (; head != tail; ++head)
            fn(cqes_[head & cq_mask_]);
        std::atomic_ref<unsigned>(*cq_head_).store(head, std::memory_order_release);
    }

private:
    int fd_ = -1;
    unsigned entries_ = 0, queued_ = 0;
    unsigned* sq_tail_ = nullptr;
    unsigned sq_mask_ = 0;
    unsigned* cq_head_ = nullptr;
    unsigned* cq_tail_ = nullptr;
    unsigned cq_mask_ = 0;
    io_uring_sqe* sqes_ = nullptr;
    io_uring_cqe* cqes_ = nullptr;
};

// user_data: what (accept, recv, send), the socket, and its generation, so that completions
// of a connection closed since (its fd perhaps reused) are recognised and dropped.
enum Op : uint64_t { kAccept = 1, kRecv = 2, kSend = 3 };
struct Side {
    int other = -1;  // -1: closed
    uint32_t gen = 0;
    std::vector<char> buf;
};

uint64_t tag(Op op, int fd, uint32_t gen) {
    return (static_cast<uint64_t>(gen) << 32) | (op << 24) | static_cast<uint32_t>(fd);
}

int run_uring(int lfd, int server_port) {
    Ring ring;
    if (!ring.open(256)) {
        perror("relay: io_uring");
        return 1;
    }
    std::vector<Side> sides;  // by fd
    auto side_of = [&](int fd) -> Side& { return sides[static_cast<size_t>(fd)]; };
    uint32_t generation = 0;
    auto post_accept = [&] {
        io_uring_sqe& e = ring.next();
        e.opcode = IORING_OP_ACCEPT;
        e.fd = lfd;
        e.accept_flags = SOCK_CLOEXEC;
        e.user_data = tag(kAccept, lfd, 0);
    };
    auto post_recv = [&](int fd) {
        io_uring_sqe& e = ring.next();
        e.opcode = IORING_OP_RECV;
        e.fd = fd;
        e.addr = reinterpret_cast<uintptr_t>(side_of(fd).buf.data());
        e.len = static_cast<uint32_t>(kBufSize);
        e.user_data = tag(kRecv, fd, side_of(fd).gen);
    };
    auto close_pair = [&](int fd) {
        int other = side_of(fd).other;
        for (int x : {fd, other}) {
            if (x < 0)
                continue;
            // A recv still pending holds the socket: shutdown ends it (its completion is
            // dropped by the generation check).
            shutdown(x, SHUT_RDWR);
            close(x);
            side_of(x).other = -1;
            side_of(x).gen = 0;
        }
    };
    post_accept();
    for (;;) {
        ring.enter(1);
        ring.reap([&](const io_uring_cqe& c) {
            auto op = static_cast<Op>((c.user_data >> 24) & 0xff);
            int fd = static_cast<int>(c.user_data & 0xffffff);
            auto gen = static_cast<uint32_t>(c.user_data >> 32);
            if (op == kAccept) {
                post_accept();
                int cfd = c.res;
                int s = cfd < 0 ? -1 : dial(server_port, false);
                if (s < 0) {
                    if (cfd >= 0)
                        close(cfd);
                    return;
                }
                no_delay(cfd);
                size_t need = static_cast<size_t>(cfd > s ? cfd : s) + 1;
                if (sides.size() < need)
                    sides.resize(need);
                for (int x : {cfd, s}) {
                    side_of(x).gen = ++generation;
                    side_of(x).buf.resize(kBufSize);
                }
                side_of(cfd).other = s;
                side_of(s).other = cfd;
                post_recv(cfd);
                post_recv(s);
                return;
            }
            Side& side = side_of(fd);
            if (side.other < 0 || side.gen != gen)
                return;  // closed since
            if (op == kSend || c.res <= 0) {
                // A failed send (a successful one posts nothing), EOF or an error.
                if (c.res != -ECANCELED || op == kSend)
                    close_pair(fd);
                return;
            }
            // The send, then (linked: only once it completed) the next recv into the buffer.
            io_uring_sqe& e = ring.next();
            e.opcode = IORING_OP_SEND;
            e.fd = side.other;
            e.addr = reinterpret_cast<uintptr_t>(side.buf.data());
            e.len = static_cast<uint32_t>(c.res);
            e.msg_flags = MSG_NOSIGNAL | MSG_WAITALL;
            e.flags = IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
            e.user_data = tag(kSend, fd, gen);
            post_recv(fd);
        });
    }
}

}  // namespace

int main(int argc, char** argv) {
    bool uring = argc == 4 && strcmp(argv[1], "--uring") == 0;
    if (argc != 3 && !uring) {
        fprintf(stderr, "usage: relay [--uring] LISTEN_PORT SERVER_PORT\n");
        return 2;
    }
    if (uring)
        ++argv;
    int server_port = atoi(argv[2]);
    int lfd = socket(AF_INET, SOCK_STREAM | (uring ? 0 : SOCK_NONBLOCK) | SOCK_CLOEXEC, 0);
    int on = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    sockaddr_in la = loopback(atoi(argv[1]));
    if (lfd < 0 || bind(lfd, reinterpret_cast<sockaddr*>(&la), sizeof(la)) < 0 ||
        listen(lfd, 128) < 0) {
        perror("relay: listen");
        return 1;
    }
    if (uring) {
        fprintf(stderr, "relay: listening on 127.0.0.1:%s (io_uring)\n", argv[1]);
        return run_uring(lfd, server_port);
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
                int s = dial(server_port, true);
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
