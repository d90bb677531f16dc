// The event loop: our own epoll set for the connection sockets, libevent for the rest.
//
// Every SBuf socket sits in one epoll set of ours, edge-triggered, registered once by attach()
// (writable added once, by the first send that cannot complete) and dropped by close()
// (closing the fd removes it). A ready socket costs one array entry and one call; libevent
// spent about 290 instructions on each (evmap lookup, activation, active queue, per-turn
// bookkeeping), a fifth of sluice's user-space work per transaction.
//
// Listening sockets are members too, level-triggered (loop_watch), so an accept costs no
// libevent pass. libevent keeps what is rare or what it does well: signals, timers and the
// metrics HTTP server. Its own epoll fd is a member of our set, so one epoll_wait sleeps for
// both; a single non-blocking libevent pass runs only when its fd is ready, a timer armed
// through loop_timer_add() is due, or loop_wake_libevent() was called. Deferred frees
// (loop_defer) run at the end of the turn, without a libevent pass.
// libevent's next timeout is not public API: the wait is bounded by the earliest timer armed
// through loop_timer_add(), or by one second when none is nearer, and a wake-up at that bound
// runs a libevent pass (evhttp's own idle timeouts). epoll_wait sleeps without a timeout: a
// timerfd in the set (the wake timer) is set for that time, and set again only when it
// changes (loop.cpp says why).
//
// The proactor (the default where io_uring allows it and a system call is dear; net/sbuf.h):
// plain connection sockets leave the epoll set and are read through io_uring; our epoll set
// (listeners, libevent's fd, the wake timer, TLS sockets) is then itself watched through the
// ring, and a turn's wait is the io_uring_enter that also submits the turn's sends and reads.
//
// Fallback: when libevent's epoll fd cannot be found (another backend, no /proc), our set is
// a libevent read event instead and libevent's loop drives everything (one epoll_wait more
// per wake-up, same behaviour).
#pragma once

#include <cstdint>
#include <string>

#include <event2/event.h>

namespace sluice {

class SBuf;

struct LoopOptions {
    bool nest_libevent = true;  // false: the fallback shape (tests)
    // Batch a turn's sends through io_uring (net/uring.h) when the kernel allows it. The
    // environment variable SLUICE_NO_IO_URING (any value) turns it off.
    bool batch_sends = true;
    // The proactor (SBuf::proactor(), net/sbuf.h): plain connection sockets are read through
    // io_uring instead of the epoll set, and the turn's sends go with the wait. Needs
    // batch_sends and the nested shape. Without io_uring the loop falls back to epoll by
    // itself. WhenItPays: only where a system call is dear (loop.cpp, kProactorCallNs); the
    // environment variables SLUICE_PROACTOR and SLUICE_NO_PROACTOR (any value) make it On
    // and Off.
    enum class Proactor : uint8_t { Off, On, WhenItPays };
    Proactor proactor = Proactor::WhenItPays;
};

// Creates the libevent base (epoll backend preferred) and our epoll set. nullptr + err on
// failure. One loop per process.
event_base* loop_create(std::string& err, LoopOptions opts = {});
// Frees both; everything registered must be closed or freed first.
void loop_destroy();
// True when libevent's fd is nested in our set (the normal shape).
bool loop_nested() noexcept;

// Runs turns until loop_stop() (or libevent's loopbreak/loopexit from one of its callbacks).
void loop_run();
// One turn: waits at most max_wait_ms (0: poll) for sockets, libevent's fds or timers, then
// runs what is ready. loop_run() is a sequence of these. (Fallback shape: a non-zero wait
// lasts until libevent has an event; its own timers bound it.)
void loop_turn(int max_wait_ms);
// The libevent base of loop_create() (timers of other modules).
event_base* loop_base() noexcept;
// Ends loop_run() after the current turn.
void loop_stop() noexcept;

// Runs fn at the end of this turn, once however often it is asked for (deferred frees: an
// object closed in a callback may still be named by reports later in the same turn).
void loop_defer(void (*fn)()) noexcept;

// Code outside libevent's callbacks that adds, deletes or activates a libevent event (not a
// timer: see loop_timer_add) calls this, so that libevent applies it in this turn rather
// than at its next timer.
void loop_wake_libevent() noexcept;

// Registers a connection socket (SBuf::attach): edge-triggered readable and peer shutdown,
// writable only with want_write (a connect in progress). False + errno on failure.
bool loop_add(int fd, SBuf* sb, bool want_write) noexcept;
// Adds writable to the socket's events, for good: its first send that could not complete.
// With edge-triggering the kernel reports the socket at once if it is writable by then.
bool loop_want_write(int fd, SBuf* sb) noexcept;

// Another fd in our set (listeners, libevent's epoll fd): level-triggered readable; fn(arg)
// is called for each report. A watch must stay valid until its fd is closed or unwatched, and
// fn must cope with a report that was already in the batch when it was unwatched.
struct LoopWatch {
    void (*fn)(void* arg) noexcept;
    void* arg;
};
bool loop_watch(int fd, LoopWatch* w) noexcept;
void loop_unwatch(int fd) noexcept;

// event_add() with a timeout, for timers that must wake the loop on time. Call
// loop_timer_forget() before event_free() of such an event.
int loop_timer_add(event* ev, const timeval& tv);
// How often the wake timer was set (timerfd_settime calls) since the process started (tests).
unsigned long loop_wake_sets() noexcept;
void loop_timer_forget(event* ev) noexcept;

}  // namespace sluice
