// SendRing (net/uring.h): many sends in one io_uring_enter, each with send()'s result.
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

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_results_per_send),
        cmocka_unit_test(test_partial_send),
        cmocka_unit_test(test_many_calls_full_ring),
    };
    return cmocka_run_group_tests_name("uring", tests, nullptr, nullptr);
}
