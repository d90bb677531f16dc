// The event loop: see net/loop.h for the shape and why.
#include "sluice/net/loop.h"

#include "sluice/net/sbuf.h"
#include "sluice/util/log.h"
#include "sluice/util/time.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

namespace sluice {
namespace {

constexpr int kBatch = 128;          // ready sockets taken per epoll_wait
constexpr int kMaxWaitMs = 1000;     // bound for timers we do not see (evhttp's)
// Epoll data: an SBuf*, or a LoopWatch* with this bit set (both are at least 2-aligned).
constexpr uint64_t kWatchBit = 1;

event_base* g_base = nullptr;
int g_ep = -1;             // our epoll set
int g_libevent_fd = -1;    // libevent's epoll fd, a member of g_ep (nested shape)
event* g_ep_event = nullptr;  // fallback shape: g_ep as a libevent read event
bool g_stop = false;
bool g_run_libevent = true;  // libevent's fd was ready (or nothing ran yet)

void on_libevent_ready(void*) noexcept {
    g_run_libevent = true;
}
LoopWatch g_libevent_watch{on_libevent_ready, nullptr};

uint32_t sbuf_events(bool want_write) {
    // EPOLLRDHUP tells us when data and the peer's FIN arrived in one wake-up, so that a short
    // read is not taken for "drained" and the EOF is not missed.
    return EPOLLIN | EPOLLRDHUP | EPOLLET | (want_write ? EPOLLOUT : 0u);
}

// loop_defer(): functions to run at the end of the turn (a handful exist).
std::vector<void (*)()> g_deferred;

void run_deferred() {
    while (!g_deferred.empty()) {
        std::vector<void (*)()> fns;
        fns.swap(g_deferred);
        for (auto fn : fns)
            fn();
    }
}

// Timers armed through loop_timer_add() and the earliest of their expiries.
std::vector<event*> g_timers;
bool g_deadline_dirty = true;
usec_t g_deadline = LLONG_MAX;  // monotonic

// The eventpoll fds open in this process (libevent's is the one that appears when the base is
// created: its number is not public API).
std::vector<int> epoll_fds() {
    std::vector<int> fds;
    DIR* d = opendir("/proc/self/fd");
    if (!d)
        return fds;
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        char target[64];
        ssize_t n = readlinkat(dirfd(d), e->d_name, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strcmp(target, "anon_inode:[eventpoll]") == 0)
            fds.push_back(atoi(e->d_name));
    }
    closedir(d);
    return fds;
}

void compute_deadline() {
    g_deadline = LLONG_MAX;
    bool fresh = false;
    for (event* ev : g_timers) {
        timeval tv;
        if (!event_pending(ev, EV_TIMEOUT, &tv))
            continue;
        // event_pending() gives the expiry on the wall clock; we wait on the monotonic one.
        // Both clocks are read together for the conversion: the turn's cached readings may
        // be apart by the work done between them, and a deadline computed early wakes us
        // before libevent thinks the timer is due.
        if (!fresh) {
            time_update();
            fresh = true;
        }
        usec_t wall = static_cast<usec_t>(tv.tv_sec) * 1000000 + tv.tv_usec;
        g_deadline = std::min(g_deadline, mono_now() + (wall - wall_now()));
    }
    g_deadline_dirty = false;
}

usec_t deadline() {
    if (g_deadline_dirty)
        compute_deadline();
    return g_deadline;
}

// libevent reads CLOCK_MONOTONIC_COARSE where it exists (EVENT_BASE_FLAG_PRECISE_TIMER would
// make it read CLOCK_MONOTONIC, but its epoll backend then sets a timerfd of its own in every
// pass). That clock trails ours by up to a tick (4 ms at HZ=250), and the wall-clock offset
// event_pending() reports expiries with was taken from it at another moment, at another lag:
// the deadline we compute can be up to a tick early for libevent. Looking at the deadline
// itself found the timer not yet due to libevent, and the loop then made a libevent pass in
// every turn and set the wake timer again in every sleep until libevent's clock caught up
// (about one turn in ten under load, with sluice's four periodic timers). We look a tick
// later; g_not_before covers what is left.
usec_t g_timer_lag = 0;

usec_t coarse_tick() {
#ifdef CLOCK_MONOTONIC_COARSE
    timespec res;
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0)
        return static_cast<usec_t>(res.tv_sec) * 1000000 + (res.tv_nsec + 999) / 1000;
#endif
    return 0;
}

// After a libevent pass that left a timer due (libevent's clock did not agree yet), the next
// pass and wake-up wait until this: one look per millisecond, not a pass in every turn.
usec_t g_not_before = 0;

// When the earliest timer is due on libevent's clock.
usec_t due_for_libevent() {
    usec_t d = deadline();
    return d == LLONG_MAX ? d : d + g_timer_lag;
}

// When the next libevent pass for timers is due.
usec_t next_pass() {
    return std::max(due_for_libevent(), g_not_before);
}

// How long epoll_wait may sleep: until the earliest timer, at most max_wait_ms. At least 1 ms
// once the timer looks due: if libevent's clock does not agree yet, we must not spin.
// (Without the wake timer below.)
int wait_ms(int max_wait_ms) {
    usec_t d = next_pass();
    if (d == LLONG_MAX)
        return max_wait_ms;
    usec_t left = d - mono_recent();
    if (left <= 0)
        return 1;
    return static_cast<int>(std::min<usec_t>((left + 999) / 1000, max_wait_ms));
}

// The wake timer: a timerfd in our set, armed (absolute, CLOCK_MONOTONIC) for the earliest of
// the timers and the max_wait bound, so that epoll_wait sleeps without a timeout. An
// epoll_wait with a timeout starts and cancels a kernel timer at every sleep, and in a virtual
// machine programming the timer is dear: at -c 1, where every message is a sleep, a byte relay
// used about 3 µs more CPU per transaction with a 100 ms timeout than without (five of six
// interleaved runs). The timerfd is set again only when its time changes: when a timer is
// added, fires or is removed, and once per max_wait when no timer is nearer.
int g_wake_fd = -1;
usec_t g_wake_armed = 0;     // what the timerfd is set to; 0 = nothing (fired or never set)
usec_t g_wake_bound = 0;     // the max_wait bound in force (monotonic)
usec_t g_wake_not_before = 0;  // g_not_before and max_wait when g_wake_armed was decided
int g_wake_max_ms = -1;
unsigned long g_wake_sets = 0;  // timerfd_settime calls (tests)

void on_wake_fd(void*) noexcept {
    // One read takes every expiration and clears the count: a second would only return
    // EAGAIN. (A one-shot timer cannot expire again before it is set again.)
    uint64_t expirations;
    [[maybe_unused]] ssize_t n = ::read(g_wake_fd, &expirations, sizeof expirations);
    // Woken by the bound, not by a timer we know: libevent may have timers we do not see.
    if (g_wake_armed == g_wake_bound)
        g_run_libevent = true;
    g_wake_armed = 0;  // a one-shot timer that fired is disarmed
}
LoopWatch g_wake_watch{on_wake_fd, nullptr};

int arm_wake_slow(int max_wait_ms);

// The epoll_wait timeout for a sleep of at most max_wait_ms: -1 with the wake timer set for
// the earliest timer or the bound, or wait_ms() without a wake timer.
inline int arm_wake(int max_wait_ms) {
    // Nothing that decides the time changed since the timer was set (no timer armed, fired or
    // freed, the same max_wait) and it is still ahead: it stays (every sleep under load). Set
    // now, it could only be later (a bound stretched, a due timer looked at again 1 ms on),
    // and waking earlier than that costs one turn.
    if (g_wake_armed > mono_now() && !g_deadline_dirty && g_not_before == g_wake_not_before &&
        max_wait_ms == g_wake_max_ms) [[likely]]
        return -1;
    return arm_wake_slow(max_wait_ms);
}

int arm_wake_slow(int max_wait_ms) {
    if (g_wake_fd < 0)
        return wait_ms(max_wait_ms);
    usec_t now = mono_now();  // this turn's reading (loop_turn takes one after each wait)
    // A timer we know within max_wait sets the time (sluice's janitor always is). Otherwise
    // the bound does; it is kept while it is still ahead and within max_wait of now: "at
    // most max_wait_ms" holds, and an idle loop sets the timerfd once per bound, not per turn.
    usec_t limit = now + static_cast<usec_t>(max_wait_ms) * 1000;
    usec_t at = next_pass();
    if (at > limit) {
        if (g_wake_bound <= now || g_wake_bound > limit)
            g_wake_bound = limit;
        at = g_wake_bound;
    }
    if (at <= now)
        at = now + 1000;  // due, but libevent's clock may not agree yet: look again in 1 ms
    g_wake_not_before = g_not_before;
    g_wake_max_ms = max_wait_ms;
    if (at == g_wake_armed)
        return -1;
    itimerspec its{};
    its.it_value.tv_sec = static_cast<time_t>(at / 1000000);
    its.it_value.tv_nsec = static_cast<long>(at % 1000000) * 1000;
    ++g_wake_sets;
    if (timerfd_settime(g_wake_fd, TFD_TIMER_ABSTIME, &its, nullptr) != 0) {
        // Said once: from here on the sleeps have a timeout, as without a timerfd at all.
        log_error("timerfd_settime failed (%s): epoll_wait sleeps with a timeout",
                  strerror(errno));
        loop_unwatch(g_wake_fd);
        ::close(g_wake_fd);
        g_wake_fd = -1;
        g_wake_armed = 0;
        return wait_ms(max_wait_ms);
    }
    g_wake_armed = at;
    return -1;
}

void libevent_turn() {
    time_invalidate();
    // One pass: EVLOOP_NONBLOCK alone would go on while its fds keep reporting (an accept
    // storm), and our sockets would wait.
    event_base_loop(g_base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    g_run_libevent = false;
    g_deadline_dirty = true;  // callbacks may have armed, fired or freed timers
    if (due_for_libevent() <= mono_now())
        g_not_before = mono_now() + 1000;
    if (event_base_got_break(g_base) || event_base_got_exit(g_base))
        g_stop = true;
}

// Takes what is ready in our set (without waiting) and runs it.
void run_ready(int timeout_ms) {
    epoll_event evs[kBatch];
    int n = epoll_wait(g_ep, evs, kBatch, timeout_ms);
    time_invalidate();  // the first use after the wait reads the clock; the turn shares it
    if (n < 0 && errno != EINTR)
        log_error("epoll_wait failed: %s", strerror(errno));
    // Several ready sockets: their sends go out together at the end (SBuf::send_batch), so
    // that the processes they wake can preempt us once rather than once per send. A single
    // one sends at once (nothing to batch with; -c 1 latency).
    bool batch = n > 1;
    SBuf::set_batching(batch);
    for (int i = 0; i < n; ++i) {
        if (evs[i].data.u64 & kWatchBit) [[unlikely]] {
            // A listener or libevent's fd. A watch removed by an earlier entry of this batch
            // is still called: its callback checks its own state (LoopWatch).
            auto* w = reinterpret_cast<LoopWatch*>(evs[i].data.u64 & ~kWatchBit);
            w->fn(w->arg);
            if (SBuf::has_pending())  // an accepted connection's first packet: answer it now
                SBuf::run_pending();
            continue;
        }
        // A socket closed by an earlier entry of this batch is skipped: its owner is freed only
        // at the end of the turn (loop_defer).
        SBuf::on_ready(static_cast<SBuf*>(evs[i].data.ptr), evs[i].events);
        // What this report resumed runs now, before the rest of the batch: a client that got
        // the server just released sends its query at once, so the backend does not sit idle
        // while dozens of other reports are handled. Fairness re-queues of the same run wait
        // for the next report (round robin with the batch).
        if (SBuf::has_pending())
            SBuf::run_pending();
    }
    SBuf::run_pending();
    if (batch && !SBuf::proactor()) {  // the proactor sends its batch with the next wait
        SBuf::set_batching(false);
        SBuf::send_batch();
    }
}

void epoll_ready() {
    run_ready(0);
}

// Fallback shape: our set is a libevent event.
void on_ep_ready(evutil_socket_t, short, void*) noexcept {
    run_ready(0);
    if (SBuf::has_pending())
        event_active(g_ep_event, EV_READ, 0);  // the next libevent turn must not sleep
}

// libevent's own messages (its resolver's "nameserver has failed", backend warnings) go to
// our log instead of a bare "[msg]" line on stderr.
void on_libevent_log(int severity, const char* msg) {
    switch (severity) {
    case EVENT_LOG_DEBUG:
        log_noise("libevent: %s", msg);
        break;
    case EVENT_LOG_MSG:
        log_info("libevent: %s", msg);
        break;
    case EVENT_LOG_WARN:
        log_warning("libevent: %s", msg);
        break;
    default:
        log_error("libevent: %s", msg);
        break;
    }
}

// The proactor saves about four system calls per transaction at -c 1 (two io_uring_enter
// against epoll_wait, recv and send twice) and costs about 1.4 µs of io_uring's own kernel
// work per transaction (each RECV's poll armed, completed through task work, submitted).
// Measured (doc/bench.md, "the floor at -c 1"): on a machine where a system call cost 1 µs it
// saved 1.5-3 µs per transaction; on one where a call cost 0.12 µs it cost 0.9 µs more at
// -c 1, the same at -c 64 and 3 µs more per new connection. It pays from about a third of a
// microsecond per call.
constexpr long kProactorCallNs = 350;

// What one system call costs here, in nanoseconds: the cheapest of a few short runs of one
// that does nothing, so that an interrupt or a preemption during one run does not count.
// (1 to 5 ms at start-up.)
long syscall_ns() {
    long best = LONG_MAX;
    for (int run = 0; run < 5; ++run) {
        timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (int i = 0; i < 1000; ++i)
            syscall(SYS_getppid);
        clock_gettime(CLOCK_MONOTONIC, &b);
        long ns = (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec);
        best = std::min(best, ns / 1000);
    }
    return best;
}

}  // namespace

event_base* loop_create(std::string& err, LoopOptions opts) {
    event_set_log_callback(on_libevent_log);
    std::vector<int> before = epoll_fds();
    // Prefer epoll (edge-triggered, O(1)); another backend works through the fallback shape.
    event_config* cfg = event_config_new();
    event_config_require_features(cfg, EV_FEATURE_ET | EV_FEATURE_O1);
    g_base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!g_base)
        g_base = event_base_new();
    if (!g_base) {
        err = "cannot create the event loop";
        return nullptr;
    }
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    if (g_ep < 0) {
        err = std::string("epoll_create1: ") + strerror(errno);
        loop_destroy();
        return nullptr;
    }
    std::vector<int> after = epoll_fds();
    std::vector<int> fresh;
    for (int fd : after)
        if (fd != g_ep && std::find(before.begin(), before.end(), fd) == before.end())
            fresh.push_back(fd);
    if (opts.nest_libevent && fresh.size() == 1 &&
        strcmp(event_base_get_method(g_base), "epoll") == 0) {
        if (loop_watch(fresh[0], &g_libevent_watch))  // ready while libevent has work
            g_libevent_fd = fresh[0];
    }
    if (g_libevent_fd < 0) {
        if (opts.nest_libevent)
            log_warning("libevent's epoll fd not found: sockets are dispatched through libevent");
        g_ep_event = event_new(g_base, g_ep, EV_READ | EV_PERSIST, on_ep_ready, nullptr);
        if (!g_ep_event || event_add(g_ep_event, nullptr) != 0) {
            err = "cannot register the socket set with libevent";
            loop_destroy();
            return nullptr;
        }
    }
    if (g_libevent_fd >= 0) {
        // Our clock (util/time.h) is CLOCK_MONOTONIC in microseconds, as the timerfd's.
        g_wake_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (g_wake_fd >= 0 && !loop_watch(g_wake_fd, &g_wake_watch)) {
            ::close(g_wake_fd);
            g_wake_fd = -1;
        }
        if (g_wake_fd < 0)
            log_debug("no wake timer (%s): epoll_wait sleeps with a timeout", strerror(errno));
        g_wake_armed = 0;
        g_wake_bound = 0;
        g_wake_max_ms = -1;
        g_timer_lag = coarse_tick();
        g_not_before = 0;
    }
    bool uring = opts.batch_sends && !getenv("SLUICE_NO_IO_URING");
    bool proactor = false;
    using Proactor = LoopOptions::Proactor;
    Proactor want = getenv("SLUICE_NO_PROACTOR") ? Proactor::Off
                    : getenv("SLUICE_PROACTOR")  ? Proactor::On
                                                 : opts.proactor;
    if (uring && want != Proactor::Off && g_libevent_fd >= 0 && g_wake_fd >= 0) {
        long call_ns = want == Proactor::WhenItPays ? syscall_ns() : -1;
        if (call_ns >= 0 && call_ns < kProactorCallNs) {
            log_info("sockets are read through epoll: a system call costs %ld ns here, too "
                     "little for reads through io_uring to pay",
                     call_ns);
        } else {
            std::string why;
            proactor = sbuf_open_proactor(g_ep, why);
            if (!proactor)
                log_info("sockets are read through epoll: io_uring is not usable here (%s)",
                         why.c_str());
            else if (call_ns >= 0)
                log_info("sockets are read through io_uring: a system call costs %ld ns here",
                         call_ns);
        }
    }
    if (uring && !proactor) {
        std::string why;
        if (!sbuf_open_send_ring(why))
            log_debug("sends are not batched: %s", why.c_str());
    }
    g_stop = false;
    g_run_libevent = true;
    return g_base;
}

void loop_destroy() {
    sbuf_close_proactor();
    sbuf_close_send_ring();
    if (g_ep_event) {
        event_free(g_ep_event);
        g_ep_event = nullptr;
    }
    if (g_ep >= 0) {
        ::close(g_ep);
        g_ep = -1;
    }
    g_libevent_fd = -1;
    if (g_wake_fd >= 0) {
        ::close(g_wake_fd);
        g_wake_fd = -1;
    }
    g_timers.clear();
    g_deferred.clear();
    g_deadline_dirty = true;
    if (g_base) {
        event_base_free(g_base);
        g_base = nullptr;
    }
}

event_base* loop_base() noexcept {
    return g_base;
}

bool loop_nested() noexcept {
    return g_libevent_fd >= 0;
}

void loop_turn(int max_wait_ms) {
    if (g_libevent_fd < 0) {
        if (SBuf::has_pending())  // queued outside our callback (a timer, accept): run them
            event_active(g_ep_event, EV_READ, 0);
        time_invalidate();
        event_base_loop(g_base, max_wait_ms == 0 ? EVLOOP_ONCE | EVLOOP_NONBLOCK : EVLOOP_ONCE);
        if (event_base_got_break(g_base) || event_base_got_exit(g_base))
            g_stop = true;
        run_deferred();
        return;
    }
    bool busy = g_run_libevent || SBuf::has_pending();
    if (SBuf::proactor()) {
        bool wait = !busy && max_wait_ms != 0;
        if (wait)
            arm_wake(max_wait_ms);  // the timerfd is in the epoll set, which the ring polls
        SBuf::ring_turn(wait, epoll_ready);
    } else {
        run_ready(busy || max_wait_ms == 0 ? 0 : arm_wake(max_wait_ms));
    }
    if (g_run_libevent || next_pass() <= mono_now()) {
        libevent_turn();
        // What its callbacks queued runs now (an accepted connection's first packet, a client
        // a timer resumed), not after another epoll_wait.
        if (SBuf::has_pending())
            SBuf::run_pending();
    }
    if (!g_deferred.empty())
        run_deferred();
}

// Not inlined into main's run(): the hot loop then gets its registers to itself, whatever
// start-up code run() grows (callgrind saw 6 instructions per transaction move with it).
[[gnu::noinline]] void loop_run() {
    while (!g_stop)
        loop_turn(kMaxWaitMs);
}

void loop_stop() noexcept {
    g_stop = true;
    if (g_base)
        event_base_loopbreak(g_base);  // the fallback shape is inside libevent's loop
}

void loop_wake_libevent() noexcept {
    g_run_libevent = true;
}

void loop_defer(void (*fn)()) noexcept {
    if (std::find(g_deferred.begin(), g_deferred.end(), fn) == g_deferred.end())
        g_deferred.push_back(fn);
}

bool loop_add(int fd, SBuf* sb, bool want_write) noexcept {
    epoll_event ev{};
    ev.events = sbuf_events(want_write);
    ev.data.ptr = sb;
    return epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) == 0;
}

bool loop_want_write(int fd, SBuf* sb) noexcept {
    epoll_event ev{};
    ev.events = sbuf_events(true);
    ev.data.ptr = sb;
    return epoll_ctl(g_ep, EPOLL_CTL_MOD, fd, &ev) == 0;
}

bool loop_watch(int fd, LoopWatch* w) noexcept {
    epoll_event ev{};
    ev.events = EPOLLIN;  // level-triggered: reported again while still readable
    ev.data.u64 = reinterpret_cast<uintptr_t>(w) | kWatchBit;
    return epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) == 0;
}

void loop_unwatch(int fd) noexcept {
    epoll_ctl(g_ep, EPOLL_CTL_DEL, fd, nullptr);
}

unsigned long loop_wake_sets() noexcept {
    return g_wake_sets;
}

int loop_timer_add(event* ev, const timeval& tv) {
    int rc = event_add(ev, &tv);
    if (std::find(g_timers.begin(), g_timers.end(), ev) == g_timers.end())
        g_timers.push_back(ev);
    g_deadline_dirty = true;
    return rc;
}

void loop_timer_forget(event* ev) noexcept {
    std::erase(g_timers, ev);
    g_deadline_dirty = true;
}

}  // namespace sluice
