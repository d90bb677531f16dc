// The event loop (net/loop.h): sockets in our epoll set, libevent nested for timers and its
// own fds, pending sbufs, a socket closed while its report waits in the same batch.
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
extern "C" {
#include <cmocka.h>
}

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <ctime>

#include <span>
#include <string>
#include <vector>

#include <event2/event.h>

#include "sluice/net/listener.h"
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
        // The epoll set's shapes (net/loop.h); the proactor's reads are test_sbuf's.
        using Proactor = sluice::LoopOptions::Proactor;
        base = sluice::loop_create(
            err, sluice::LoopOptions{.nest_libevent = nested, .proactor = Proactor::Off});
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

// The loop sleeps without a timeout: the wake timer (a timerfd in the set) is set for the
// earliest timer, once, not at every sleep; a nearer timer sets it again and ends the wait.
void test_wake_timer_is_set_once_per_deadline(void**) {
    Loop loop;
    int late = 0;
    event* far = evtimer_new(loop.base, on_timer, &late);
    sluice::loop_timer_add(far, timeval{10, 0});
    Conn c;
    unsigned long before = sluice::loop_wake_sets();
    for (int i = 0; i < 50; ++i) {
        c.send_query();
        sluice::loop_turn(60000);
    }
    assert_int_equal(c.owner.packets, 50);
    assert_int_equal(sluice::loop_wake_sets() - before, 1);
    int soon = 0;
    event* near = evtimer_new(loop.base, on_timer, &soon);
    sluice::loop_timer_add(near, timeval{0, 20000});
    alarm(30);  // a wait the timer does not end fails the test instead of hanging it
    for (int i = 0; i < 100 && !soon; ++i)
        sluice::loop_turn(60000);
    alarm(0);
    assert_int_equal(soon, 1);
    assert_int_equal(late, 0);
    assert_true(sluice::loop_wake_sets() - before >= 2);
    sluice::loop_timer_forget(near);
    event_free(near);
    sluice::loop_timer_forget(far);
    event_free(far);
}

// Milliseconds on CLOCK_MONOTONIC, the tests' own clock: reading sluice's would refresh the
// reading the loop relies on.
long ms_now() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// A due timer runs in the first libevent pass after its deadline, also while a socket keeps
// every turn busy. libevent reads CLOCK_MONOTONIC_COARSE, which lags ours by up to a tick (4 ms
// at HZ=250), and the wall-clock offset event_pending() reports expiries with was taken from
// it at some other lag: a look at the deadline itself could find the timer not yet due to
// libevent, and the loop then made a libevent pass and set the wake timer again in every
// turn until libevent's clock caught up. Timers of different periods meet the tick at
// different phases; they are periodic, as sluice's own (janitor, console tick), so libevent
// re-arms them inside its pass.
void test_due_timer_costs_one_look(void**) {
    Loop loop;
    constexpr int kTimers = 8;
    int fired = 0;
    event* evs[kTimers];
    for (int i = 0; i < kTimers; ++i) {
        evs[i] = event_new(loop.base, -1, EV_PERSIST, on_timer, &fired);
        sluice::loop_timer_add(evs[i], timeval{0, 20000 + 530 * i});
    }
    Conn c;
    unsigned long before = sluice::loop_wake_sets();
    long start = ms_now();
    int turns = 0;
    alarm(30);
    while (ms_now() - start < 250) {  // about ten expiries each, with busy turns through them
        c.send_query();
        sluice::loop_turn(60000);
        ++turns;
    }
    alarm(0);
    assert_int_equal(c.owner.packets, turns);
    assert_true(fired >= 6 * kTimers);
    assert_true(turns > 10 * fired);
    // At most once per expiry (twice where libevent still disagreed at the first look).
    unsigned long sets = sluice::loop_wake_sets() - before;
    printf("# %d expiries, %d turns, %lu wake timer sets\n", fired, turns, sets);
    assert_true(sets <= 2 * static_cast<unsigned long>(fired) + 1);
    for (event* ev : evs) {
        sluice::loop_timer_forget(ev);
        event_free(ev);
    }
}

// A libevent timer we do not see (not armed through loop_timer_add, as evhttp's own) still
// runs: a wake-up at the max_wait bound makes a libevent pass.
void test_bound_wakeup_runs_unseen_timers(void**) {
    Loop loop;
    int fired = 0;
    event* ev = evtimer_new(loop.base, on_timer, &fired);
    timeval tv{0, 50000};
    assert_int_equal(event_add(ev, &tv), 0);
    long start = ms_now();
    alarm(30);
    while (!fired && ms_now() - start < 2000)
        sluice::loop_turn(100);
    alarm(0);
    assert_int_equal(fired, 1);
    event_free(ev);
}

// With no timer at all, turns still end after max_wait, and they sleep until then rather than
// spin on a wake timer already past. (A turn may also end early: epoll_wait returns EINTR
// when io_uring has work for us.)
void test_wait_is_bounded_without_timers(void**) {
    Loop loop;
    long start = ms_now();
    int turns = 0;
    alarm(30);  // a wait that never ends fails the test instead of hanging it
    while (ms_now() - start < 200 && turns <= 20) {
        sluice::loop_turn(50);
        ++turns;
    }
    alarm(0);
    assert_true(turns >= 3);   // 200 ms of 50 ms waits
    assert_true(turns <= 20);  // not a spin
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


// The events an epoll set of this process has registered for `fd` (the "tfd:" lines of
// /proc/self/fdinfo), or -1 when none has it.
long epoll_mask_of(int fd) {
    long mask = -1;
    DIR* d = opendir("/proc/self/fd");
    assert_non_null(d);
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        std::string info = std::string("/proc/self/fdinfo/") + e->d_name;
        FILE* f = fopen(info.c_str(), "r");
        if (!f)
            continue;
        char line[256];
        while (fgets(line, sizeof line, f)) {
            int tfd = -1;
            unsigned long ev = 0;
            if (sscanf(line, "tfd: %d events: %lx", &tfd, &ev) == 2 && tfd == fd)
                mask = static_cast<long>(ev);
        }
        fclose(f);
    }
    closedir(d);
    return mask;
}

// A fresh socket is not watched for writability (reporting that a new socket is writable would
// cost an epoll_wait per connection); the first send that cannot complete asks for it, and the
// report it brings sends the rest.
void test_write_reports_start_with_first_blocked_send(void**) {
    for (bool nested : {true, false}) {
        Loop loop(nested);
        Conn c;
        long mask = epoll_mask_of(c.sb.fd());
        assert_true(mask >= 0);
        assert_true(mask & EPOLLIN);
        assert_false(mask & EPOLLOUT);
        sluice::loop_turn(0);
        assert_false(epoll_mask_of(c.sb.fd()) & EPOLLOUT);  // reading alone changes nothing

        std::string big(4 << 20, 'x');
        c.sb.queue(big);
        assert_true(c.sb.flush_out());
        assert_true(c.sb.has_output());  // the socket buffer is full
        assert_true(epoll_mask_of(c.sb.fd()) & EPOLLOUT);
        size_t got = 0;
        char tmp[65536];
        for (int i = 0; i < 100000 && got < big.size(); ++i) {
            ssize_t n = ::read(c.app, tmp, sizeof tmp);
            if (n > 0)
                got += static_cast<size_t>(n);
            sluice::loop_turn(0);  // the write report flushes what is left
        }
        assert_int_equal(got, big.size());
        assert_false(c.sb.has_output());
    }
}

// A socket that is still connecting waits for writable (connect's completion) from the start.
void test_connecting_socket_reports_write(void**) {
    Loop loop;
    int p[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p), 0);
    set_nonblock(p[1]);
    Owner o;
    SBuf sb;
    assert_true(sb.attach(p[1], &o, true));
    assert_true(epoll_mask_of(p[1]) & EPOLLOUT);
    sb.close();
    ::close(p[0]);
}

std::vector<int> g_accepted;
void record_accept(int fd, const sluice::PeerAddr&, bool, bool) {
    g_accepted.push_back(fd);
}

int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return fd;
}

// Listeners sit in our set, level-triggered: one connection is accepted per report and the
// next turn's epoll_wait reports the listener again while more wait; a paused listener
// accepts nothing until resumed, and then takes what queued meanwhile.
void test_listener_accepts_one_per_report(void**) {
    for (bool nested : {true, false}) {
        Loop loop(nested);
        g_accepted.clear();
        sluice::ListenConfig cfg;
        cfg.addrs = {"127.0.0.1"};
        cfg.port = 0;  // the kernel picks
        cfg.defer_accept = false;
        std::string err;
        assert_true(sluice::listeners_open(cfg, record_accept, err));
        auto info = sluice::listeners_info();
        assert_int_equal(info.size(), 1);
        int port = info[0].port;
        std::vector<int> clients;
        for (int i = 0; i < 3; ++i)
            clients.push_back(connect_to(port));
        for (size_t turn = 1; turn <= 3; ++turn) {
            sluice::loop_turn(1000);
            assert_int_equal(g_accepted.size(), turn);
        }
        sluice::loop_turn(0);
        assert_int_equal(g_accepted.size(), 3);

        sluice::listeners_pause(true);
        clients.push_back(connect_to(port));  // completes in the kernel's backlog
        for (int i = 0; i < 3; ++i)
            sluice::loop_turn(0);
        assert_int_equal(g_accepted.size(), 3);
        sluice::listeners_pause(false);
        sluice::loop_turn(1000);
        assert_int_equal(g_accepted.size(), 4);

        sluice::listeners_close(false);
        assert_int_equal(sluice::listeners_info().size(), 0);
        for (int fd : g_accepted)
            ::close(fd);
        for (int fd : clients)
            ::close(fd);
    }
}

// accept() failing for want of descriptors: the listener leaves the set for five seconds
// instead of being reported (and failing) at every turn, then takes the connection that
// waited.
void test_listener_backs_off_when_out_of_fds(void**) {
    Loop loop;
    g_accepted.clear();
    sluice::ListenConfig cfg;
    cfg.addrs = {"127.0.0.1"};
    cfg.port = 0;
    cfg.defer_accept = false;
    std::string err;
    assert_true(sluice::listeners_open(cfg, record_accept, err));
    auto info = sluice::listeners_info();
    assert_int_equal(info.size(), 1);
    int lfd = info[0].fd;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(info[0].port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int client = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(client >= 0);

    rlimit old{};
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int probe = dup(0);
    assert_true(probe >= 0);
    ::close(probe);
    rlimit low = old;
    low.rlim_cur = static_cast<rlim_t>(probe);  // no descriptor left for accept()
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    assert_int_equal(connect(client, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    for (int i = 0; i < 5; ++i)
        sluice::loop_turn(0);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_int_equal(g_accepted.size(), 0);
    assert_int_equal(epoll_mask_of(lfd), -1);  // out of the set while backing off

    for (int i = 0; i < 150 && g_accepted.empty(); ++i)
        sluice::loop_turn(100);
    assert_int_equal(g_accepted.size(), 1);
    assert_true(epoll_mask_of(lfd) >= 0);

    sluice::listeners_close(false);
    for (int fd : g_accepted)
        ::close(fd);
    ::close(client);
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_close_while_report_waits_in_batch),
        cmocka_unit_test(test_resumed_runs_before_rest_of_batch),
        cmocka_unit_test(test_timer_ends_the_wait),
        cmocka_unit_test(test_wake_timer_is_set_once_per_deadline),
        cmocka_unit_test(test_due_timer_costs_one_look),
        cmocka_unit_test(test_bound_wakeup_runs_unseen_timers),
        cmocka_unit_test(test_wait_is_bounded_without_timers),
        cmocka_unit_test(test_libevent_fd_event_runs),
        cmocka_unit_test(test_resume_from_libevent_callback),
        cmocka_unit_test(test_stop_from_socket_callback),
        cmocka_unit_test(test_defer_runs_once_at_turn_end),
        cmocka_unit_test(test_write_reports_start_with_first_blocked_send),
        cmocka_unit_test(test_connecting_socket_reports_write),
        cmocka_unit_test(test_listener_accepts_one_per_report),
        cmocka_unit_test(test_listener_backs_off_when_out_of_fds),
    };
    int failed = cmocka_run_group_tests_name("loop", tests, nullptr, nullptr);
    sluice::sbuf_release_buffers();
    return failed;
}
