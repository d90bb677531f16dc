// SendRing (net/uring.h): many sends in one io_uring_enter, each with send()'s result.
// IoRing: what the proactor (net/sbuf.h) relies on the kernel for.
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
extern "C" {
#include <cmocka.h>
}

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "sluice/net/uring.h"

namespace {

using sluice::SendRing;
using sluice::UringSend;

struct Pair {
    int fd[2] = {-1, -1};
    Pair() {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0);
    }
    ~Pair() {
        for (int f : fd)
            if (f >= 0)
                close(f);
    }
    std::string read_all() const {
        std::string out;
        char buf[65536];
        ssize_t n;
        while ((n = recv(fd[1], buf, sizeof buf, 0)) > 0)
            out.append(buf, static_cast<size_t>(n));
        return out;
    }
};

bool open_or_skip(SendRing& ring) {
    std::string why;
    if (ring.open(why))
        return true;
    fprintf(stderr, "no io_uring here (%s)\n", why.c_str());
    skip();
    return false;
}

// Results per send, in order: bytes sent, EAGAIN for a full socket, EPIPE for a closed peer;
// two sends to one socket arrive in order.
void test_results_per_send(void**) {
    SendRing ring;
    if (!open_or_skip(ring))
        return;
    Pair ok, full, gone;
    char block[4096] = {};
    while (send(full.fd[0], block, sizeof block, MSG_DONTWAIT) > 0) {
    }
    close(gone.fd[1]);
    gone.fd[1] = -1;
    const std::string a = "first", b = "second";
    UringSend sends[] = {
        {ok.fd[0], a.data(), static_cast<uint32_t>(a.size())},
        {full.fd[0], a.data(), static_cast<uint32_t>(a.size())},
        {gone.fd[0], a.data(), static_cast<uint32_t>(a.size())},
        {ok.fd[0], b.data(), static_cast<uint32_t>(b.size())},
    };
    int res[4] = {};
    assert_true(ring.send_all(sends, 4, res));
    assert_int_equal(res[0], a.size());
    assert_int_equal(res[1], -EAGAIN);
    assert_int_equal(res[2], -EPIPE);
    assert_int_equal(res[3], b.size());
    assert_string_equal(ok.read_all().c_str(), (a + b).c_str());
}

// A send bigger than the room left: the part that fits, like send().
void test_partial_send(void**) {
    SendRing ring;
    if (!open_or_skip(ring))
        return;
    Pair p;
    int small = 4096;
    assert_int_equal(setsockopt(p.fd[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    std::string big(1 << 20, 'x');
    UringSend s{p.fd[0], big.data(), static_cast<uint32_t>(big.size())};
    int res = 0;
    assert_true(ring.send_all(&s, 1, &res));
    assert_true(res > 0);
    assert_true(static_cast<size_t>(res) < big.size());
    assert_int_equal(p.read_all().size(), static_cast<size_t>(res));
}

// The ring is reused call after call, up to its size per call.
void test_many_calls_full_ring(void**) {
    SendRing ring;
    if (!open_or_skip(ring))
        return;
    Pair p;
    std::string want;
    for (int call = 0; call < 5; ++call) {
        static char bytes[SendRing::kEntries];
        UringSend sends[SendRing::kEntries];
        int res[SendRing::kEntries];
        for (unsigned i = 0; i < SendRing::kEntries; ++i) {
            bytes[i] = static_cast<char>('a' + (i + static_cast<unsigned>(call)) % 26);
            sends[i] = {p.fd[0], &bytes[i], 1};
        }
        assert_true(ring.send_all(sends, SendRing::kEntries, res));
        for (unsigned i = 0; i < SendRing::kEntries; ++i) {
            assert_int_equal(res[i], 1);
            want += bytes[i];
        }
        assert_string_equal(p.read_all().c_str(), want.substr(want.size() - SendRing::kEntries).c_str());
    }
}

bool open_or_skip(sluice::IoRing& ring) {
    std::string why;
    if (ring.open(64, why) && ring.add_buffers(0, 4, 1024, why))
        return true;
    fprintf(stderr, "no io_uring here (%s)\n", why.c_str());
    skip();
    return false;
}

// The proactor's sends: non-blocking, MSG_WAITALL, CQE_SKIP_SUCCESS. One that sends
// everything posts nothing; a short one posts its count; one to a full socket posts -EAGAIN.
// All complete during the submission.
void test_sends_post_only_failures(void**) {
    sluice::IoRing ring;
    if (!open_or_skip(ring))
        return;
    Pair p;
    int small = 8192;
    assert_int_equal(setsockopt(p.fd[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    static char big[1 << 20];
    auto send = [&](size_t len, uint64_t tag) {
        io_uring_sqe& e = ring.sqe();
        e.opcode = IORING_OP_SEND;
        e.fd = p.fd[0];
        e.addr = reinterpret_cast<uintptr_t>(big);
        e.len = static_cast<uint32_t>(len);
        e.msg_flags = MSG_DONTWAIT | MSG_WAITALL | MSG_NOSIGNAL;
        e.flags = IOSQE_CQE_SKIP_SUCCESS;
        e.user_data = tag;
    };
    send(100, 1);
    assert_int_equal(ring.enter(0), 0);
    assert_int_equal(ring.cqes_ready(), 0);
    send(sizeof big, 2);
    assert_int_equal(ring.enter(0), 0);
    assert_int_equal(ring.cqes_ready(), 1);
    int sent = ring.cqe_at(0).res;
    assert_int_equal(ring.cqe_at(0).user_data, 2);
    assert_true(sent > 0 && sent < static_cast<int>(sizeof big));
    ring.consume(1);
    send(100, 3);
    assert_int_equal(ring.enter(0), 0);
    assert_int_equal(ring.cqes_ready(), 1);
    assert_int_equal(ring.cqe_at(0).res, -EAGAIN);
    ring.consume(1);
    assert_int_equal(p.read_all().size(), 100 + static_cast<size_t>(sent));
}

// Reads with a provided buffer; take() finds a completion and relabels it; a RECV not yet
// submitted can be turned into a NOP; cancel_now() cancels one that waits for data.
void test_reads(void**) {
    sluice::IoRing ring;
    if (!open_or_skip(ring))
        return;
    Pair p;
    assert_int_equal(send(p.fd[1], "hello", 5, 0), 5);
    auto recv = [&](uint64_t tag) -> unsigned {
        unsigned pos = ring.next_pos();
        io_uring_sqe& e = ring.sqe();
        e.opcode = IORING_OP_RECV;
        e.fd = p.fd[0];
        e.len = ring.buffer_size(0);
        e.flags = IOSQE_BUFFER_SELECT;
        e.buf_group = 0;
        e.user_data = tag;
        return pos;
    };
    recv(10);
    assert_int_equal(ring.enter(1), 0);
    int res = 0;
    uint32_t flags = 0;
    assert_true(ring.take(10, 99, res, flags));
    assert_int_equal(res, 5);
    assert_true(flags & IORING_CQE_F_BUFFER);
    auto bid = static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
    assert_memory_equal(ring.buffer(0, bid), "hello", 5);
    assert_int_equal(ring.cqe_at(0).user_data, 99);
    assert_false(ring.take(10, 99, res, flags));
    ring.consume(1);
    ring.recycle(0, bid);

    unsigned pos = recv(11);
    io_uring_sqe* q = ring.unsubmitted(pos);
    assert_non_null(q);
    q->opcode = IORING_OP_NOP;
    q->flags = IOSQE_CQE_SKIP_SUCCESS;
    assert_int_equal(ring.enter(0), 0);
    assert_null(ring.unsubmitted(pos));
    assert_int_equal(ring.cqes_ready(), 0);

    recv(12);
    assert_int_equal(ring.enter(0), 0);
    assert_int_equal(ring.cqes_ready(), 0);  // no data: it waits
    assert_int_equal(ring.cancel_now(12), 0);
    assert_int_equal(ring.enter(1), 0);  // its completion: cancelled
    assert_true(ring.take(12, 99, res, flags));
    assert_int_equal(res, -ECANCELED);
    ring.consume(ring.cqes_ready());
    // The socket still has its data for the next reader.
    assert_int_equal(send(p.fd[1], "x", 1, 0), 1);
    char c = 0;
    assert_int_equal(::recv(p.fd[0], &c, 1, 0), 1);
    assert_int_equal(c, 'x');
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_results_per_send),
        cmocka_unit_test(test_partial_send),
        cmocka_unit_test(test_many_calls_full_ring),
        cmocka_unit_test(test_sends_post_only_failures),
        cmocka_unit_test(test_reads),
    };
    return cmocka_run_group_tests_name("uring", tests, nullptr, nullptr);
}
