// The event loop (net/loop.h): sockets in our epoll set, libevent nested for timers and its
// own fds, pending sbufs, a socket closed while its report waits in the same batch.
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
extern "C" {
#include <cmocka.h>
}

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <span>
#include <string>
#include <vector>

#include <event2/event.h>

#include "sluice/net/loop.h"
#include "sluice/net/sbuf.h"
#include "sluice/util/time.h"

namespace {

using sluice::PacketAction;
using sluice::PacketHeader;
using sluice::SBuf;
using sluice::SBufEvent;

void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    assert_true(fl >= 0);
    assert_int_equal(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

const std::string kQuery = std::string("Q\0\0\0\x0dselect 1\0", 14);

// Owner ids in the order packets were shown (for ordering checks).
std::vector<int> g_order;

// Counts packets; on the first one it may close or resume another sbuf, or pause itself.
class Owner final : public sluice::SBufOwner {
public:
    int id = 0;
    int packets = 0;
    SBuf* close_on_packet = nullptr;
    SBuf* resume_on_packet = nullptr;
    bool pause = false;

    PacketAction on_packet(SBuf&, const PacketHeader&, std::span<const uint8_t>) override {
        ++packets;
        g_order.push_back(id);
        if (close_on_packet) {
            close_on_packet->close();
            close_on_packet = nullptr;
        }
        if (resume_on_packet) {
            resume_on_packet->resume();
            resume_on_packet = nullptr;
        }
        if (pause) {
            pause = false;
            return PacketAction::Pause;
        }
        return PacketAction::Skip;
    }
    void on_sbuf_event(SBuf& sb, SBufEvent) override { sb.close(); }
    void on_sbuf_drained(SBuf&) override {}
};

struct Loop {
    event_base* base = nullptr;
    explicit Loop(bool nested = true) {
        std::string err;
        base = sluice::loop_create(err, sluice::LoopOptions{.nest_libevent = nested});
        assert_non_null(base);
        assert_int_equal(sluice::loop_nested(), nested);
        sluice::loop_turn(0);  // the first turn lets libevent run once
    }
    ~Loop() { sluice::loop_destroy(); }
    Loop(const Loop&) = delete;
    Loop& operator=(const Loop&) = delete;
};

// An sbuf on one end of a socketpair, owned by an O; `app` is the other end.
template <typename O>
struct ConnOf {
    int app = -1;
    SBuf sb;
    O owner;
    ConnOf() {
        int p[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p), 0);
        set_nonblock(p[0]);
        set_nonblock(p[1]);
        app = p[0];
        assert_true(sb.attach(p[1], &owner, false));
    }
    ~ConnOf() {
        sb.close();
        ::close(app);
    }
    ConnOf(const ConnOf&) = delete;
    ConnOf& operator=(const ConnOf&) = delete;
    void send_query() const {
        assert_int_equal(::write(app, kQuery.data(), kQuery.size()), kQuery.size());
    }
};
using Conn = ConnOf<Owner>;

// Both sockets are ready in one epoll_wait; whichever runs first closes the other. The closed
// one's report, still in the batch, must not reach it (its fd may even be reused by then).
void test_close_while_report_waits_in_batch(void**) {
    Loop loop;
    Conn a, b;
    a.owner.close_on_packet = &b.sb;
    b.owner.close_on_packet = &a.sb;
    a.send_query();
    b.send_query();
    sluice::loop_turn(0);
    assert_int_equal(a.owner.packets + b.owner.packets, 1);
    assert_true(a.sb.closed() != b.sb.closed());
    sluice::loop_turn(0);
    assert_int_equal(a.owner.packets + b.owner.packets, 1);
}

// What a report's callback resumes runs before the next report of the same batch (a client
// handed the server just released sends its query before the other ready sockets are served).
void test_resumed_runs_before_rest_of_batch(void**) {
    for (bool nested : {true, false}) {
        Loop loop(nested);
        Conn a, b, c;
        a.owner.id = 1;
        b.owner.id = 2;
        c.owner.id = 3;
        c.owner.pause = true;  // c stops at its packet until resumed
        c.send_query();
        for (int i = 0; i < 3; ++i)
            sluice::loop_turn(0);
        assert_int_equal(c.owner.packets, 1);
        g_order.clear();
        a.owner.resume_on_packet = &c.sb;
        a.send_query();  // a's report comes first in the batch, b's second
        b.send_query();
        sluice::loop_turn(0);
        // a, then c (its paused packet shown again), then b.
        assert_int_equal(g_order.size(), 3);
        assert_int_equal(g_order[0], 1);
        assert_int_equal(g_order[1], 3);
        assert_int_equal(g_order[2], 2);
    }
}

void on_timer(evutil_socket_t, short, void* arg) noexcept {
    ++*static_cast<int*>(arg);
}

// A timer armed through loop_timer_add() ends the wait when it is due, not after max_wait.
void test_timer_ends_the_wait(void**) {
    Loop loop;
    int fired = 0;
    event* ev = evtimer_new(loop.base, on_timer, &fired);
    sluice::loop_timer_add(ev, timeval{0, 50000});
    sluice::time_update();
    sluice::usec_t start = sluice::mono_now();
    for (int i = 0; i < 5 && !fired; ++i)
        sluice::loop_turn(60000);
    sluice::time_update();
    assert_int_equal(fired, 1);
    assert_true(sluice::mono_now() - start < 30 * 1000000);  // far below one max_wait
    sluice::loop_timer_forget(ev);
    event_free(ev);
}

// A libevent event on its own fd (a listener, a signal pipe) runs through the nested fd.
void test_libevent_fd_event_runs(void**) {
    Loop loop;
    int p[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p), 0);
    int fired = 0;
    event* ev = event_new(loop.base, p[1], EV_READ | EV_PERSIST, on_timer, &fired);
    assert_int_equal(event_add(ev, nullptr), 0);
    sluice::loop_wake_libevent();  // libevent applies fd changes in its next pass
    sluice::loop_turn(0);
    assert_int_equal(fired, 0);
    assert_int_equal(::write(p[0], "x", 1), 1);
    for (int i = 0; i < 5 && !fired; ++i)
        sluice::loop_turn(60000);
    assert_int_equal(fired, 1);
    event_free(ev);
    ::close(p[0]);
    ::close(p[1]);
}

// A paused sbuf resumed from a libevent callback (a timer, the console) runs its buffered
// packet in the next turn without waiting for its socket.
Conn* g_resume_me = nullptr;
void resume_cb(evutil_socket_t, short, void*) noexcept {
    g_resume_me->sb.resume();
}

void test_resume_from_libevent_callback(void**) {
    for (bool nested : {true, false}) {
        Loop loop(nested);
        Conn c;
        c.owner.pause = true;
        c.send_query();
        c.send_query();
        for (int i = 0; i < 3; ++i)
            sluice::loop_turn(0);
        assert_int_equal(c.owner.packets, 1);  // paused on the first
        g_resume_me = &c;
        event* ev = event_new(loop.base, -1, 0, resume_cb, nullptr);
        event_active(ev, 0, 0);
        sluice::loop_wake_libevent();
        for (int i = 0; i < 3; ++i)
            sluice::loop_turn(0);
        // Shown again (the paused packet) and then the second.
        assert_int_equal(c.owner.packets, 3);
        event_free(ev);
    }
}

// loop_stop() from inside a socket callback ends loop_run().
class StopOwner final : public sluice::SBufOwner {
public:
    PacketAction on_packet(SBuf&, const PacketHeader&, std::span<const uint8_t>) override {
        sluice::loop_stop();
        return PacketAction::Skip;
    }
    void on_sbuf_event(SBuf& sb, SBufEvent) override { sb.close(); }
    void on_sbuf_drained(SBuf&) override {}
};

void test_stop_from_socket_callback(void**) {
    for (bool nested : {true, false}) {
        Loop loop(nested);
        ConnOf<StopOwner> c;
        c.send_query();
        sluice::loop_run();  // returns: the packet stopped it
    }
}

int g_deferred_runs = 0;
void deferred() {
    ++g_deferred_runs;
}

// loop_defer(): runs once at the end of the turn however often it was asked for, also when
// asked from a socket callback.
class DeferOwner final : public sluice::SBufOwner {
public:
    PacketAction on_packet(SBuf&, const PacketHeader&, std::span<const uint8_t>) override {
        sluice::loop_defer(deferred);
        sluice::loop_defer(deferred);
        assert_int_equal(g_deferred_runs, 0);  // not yet: reports later in the batch may
        return PacketAction::Skip;             // still name what the callback closed
    }
    void on_sbuf_event(SBuf& sb, SBufEvent) override { sb.close(); }
    void on_sbuf_drained(SBuf&) override {}
};

void test_defer_runs_once_at_turn_end(void**) {
    for (bool nested : {true, false}) {
        Loop loop(nested);
        g_deferred_runs = 0;
        ConnOf<DeferOwner> c;
        c.send_query();
        for (int i = 0; i < 3; ++i)
            sluice::loop_turn(0);
        assert_int_equal(g_deferred_runs, 1);
    }
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_close_while_report_waits_in_batch),
        cmocka_unit_test(test_resumed_runs_before_rest_of_batch),
        cmocka_unit_test(test_timer_ends_the_wait),
        cmocka_unit_test(test_libevent_fd_event_runs),
        cmocka_unit_test(test_resume_from_libevent_callback),
        cmocka_unit_test(test_stop_from_socket_callback),
        cmocka_unit_test(test_defer_runs_once_at_turn_end),
    };
    int failed = cmocka_run_group_tests_name("loop", tests, nullptr, nullptr);
    sluice::sbuf_release_buffers();
    return failed;
}
