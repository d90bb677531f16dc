// Many sends to many sockets in one system call (io_uring, raw system calls: no liburing).
//
// Why: at high concurrency each send() wakes the process reading the other end, and on a busy
// core that wake-up preempts sluice when the send returns to user space (0.25 preemptions per
// transaction at pgbench -c 64, each costing a switch out and back in). The stream buffers
// therefore defer small sends to the end of the loop turn (net/sbuf.h) and hand them to the
// kernel here, all at once: the wakees can preempt sluice once per turn instead of once per
// send.
//
// Every send is non-blocking (MSG_DONTWAIT, which io_uring honours by completing the request
// at once with -EAGAIN instead of waiting for room): send_all() returns with every result,
// like that many send() calls. open() checks this on a full socket pair and refuses a kernel
// that would wait instead.
#pragma once

#include <linux/io_uring.h>

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>

namespace sluice {

// io_uring_enter(fd, submit, wait, IORING_ENTER_GETEVENTS): the count of SQEs taken, or
// -errno. On x86-64 the system call is made inline, as liburing does: glibc's syscall() adds a
// call and errno, and the proactor makes this call once or twice per message.
inline long uring_enter(int fd, unsigned submit, unsigned wait) noexcept {
#if defined(__x86_64__)
    long ret;
    register long r10 __asm__("r10") = IORING_ENTER_GETEVENTS;
    register long r8 __asm__("r8") = 0;
    register long r9 __asm__("r9") = 0;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(static_cast<long>(__NR_io_uring_enter)), "D"(static_cast<long>(fd)),
                       "S"(static_cast<long>(submit)), "d"(static_cast<long>(wait)), "r"(r10),
                       "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
#else
    long r = syscall(__NR_io_uring_enter, fd, submit, wait, IORING_ENTER_GETEVENTS, nullptr, 0);
    return r < 0 ? -errno : r;
#endif
}

struct UringSend {
    int fd;
    const void* data;
    uint32_t len;
};

// The mapped rings of one io_uring instance, raw system calls (no liburing): what SendRing
// and IoRing share. The submission queue's index array is the identity (entry i is SQE i).
class RingMap {
public:
    RingMap() = default;
    RingMap(const RingMap&) = delete;
    RingMap& operator=(const RingMap&) = delete;
    ~RingMap() { unmap(); }

    // io_uring_setup(entries, p) (p's flags and sizes in, the kernel's answer out) and the
    // three mappings. False + why (nothing left open).
    bool map(unsigned entries, io_uring_params& p, std::string& why);
    void unmap() noexcept;

    int fd = -1;
    unsigned* sq_head = nullptr;
    unsigned* sq_tail = nullptr;
    unsigned sq_mask = 0;  // the rings' masks never change: read once
    unsigned sq_entries = 0;
    unsigned* cq_head = nullptr;
    unsigned* cq_tail = nullptr;
    unsigned cq_mask = 0;
    io_uring_sqe* sqes = nullptr;
    io_uring_cqe* cqes = nullptr;

private:
    void* sq_map_ = nullptr;
    size_t sq_map_len_ = 0;
    void* cq_map_ = nullptr;
    size_t cq_map_len_ = 0;
    void* sqe_map_ = nullptr;
    size_t sqe_map_len_ = 0;
};

class SendRing {
public:
    static constexpr unsigned kEntries = 256;  // sends per system call at most

    SendRing() = default;
    SendRing(const SendRing&) = delete;
    SendRing& operator=(const SendRing&) = delete;
    ~SendRing() { close(); }

    // Sets the ring up. False + why: the kernel has no io_uring, forbids it
    // (kernel.io_uring_disabled, seccomp) or would not complete a non-blocking send at once.
    bool open(std::string& why);
    void close() noexcept;
    bool is_open() const noexcept { return r_.fd >= 0; }

    // Sends sends[i] for i < n (n <= kEntries) with MSG_DONTWAIT | MSG_NOSIGNAL, in order.
    // res[i]: bytes sent, or -errno (-EAGAIN: no room). False: the system call itself failed
    // (errno; no result is valid and nothing was sent).
    bool send_all(const UringSend* sends, unsigned n, int* res) noexcept;
    // The same in two steps, without an array of UringSend: prep() fills send i of the next
    // submit(), which sends 0 to n-1.
    // Every SQE holds kSend's other fields since open() (the kernel only reads them).
    void prep(unsigned i, int fd, const void* data, uint32_t len) noexcept {
        io_uring_sqe& e = r_.sqes[(*r_.sq_tail + i) & r_.sq_mask];
        e.fd = fd;
        e.addr = reinterpret_cast<uintptr_t>(data);
        e.len = len;
        e.user_data = i;
    }
    // wait = false (open()'s check only): a send not completed yet is left -EINPROGRESS.
    bool submit(unsigned n, int* res, bool wait = true) noexcept;

private:
    static const io_uring_sqe kSend;  // a non-blocking send, fd/data/len left to prep()

    RingMap r_;
};

}  // namespace sluice

namespace sluice {

// A general ring for the proactor loop (net/loop.h, SLUICE_PROACTOR): reads, polls and sends
// go in as SQEs, and one io_uring_enter submits them all and waits for the next completion.
// Raw system calls, as SendRing.
class IoRing {
public:
    IoRing() = default;
    IoRing(const IoRing&) = delete;
    IoRing& operator=(const IoRing&) = delete;
    ~IoRing() { close(); }

    // False + why: no io_uring, or a kernel without what the loop relies on (provided buffer
    // rings: 5.19; CQE_SKIP_SUCCESS: 5.17; SINGLE_ISSUER + DEFER_TASKRUN: 6.1).
    bool open(unsigned entries, std::string& why);
    void close() noexcept;
    bool is_open() const noexcept { return r_.fd >= 0; }

    // The next SQE, zeroed. When the submission queue is full, what is queued is submitted
    // first (without waiting). Inline: a few per message.
    io_uring_sqe& sqe() noexcept {
        if (queued_ == r_.sq_entries) [[unlikely]]
            enter(0);
        io_uring_sqe& e = r_.sqes[(tail_ + queued_++) & r_.sq_mask];
        e = io_uring_sqe{};
        return e;
    }
    // The position the next sqe() takes; unsubmitted(pos) is that SQE while it has not been
    // submitted yet (nullptr once it has).
    unsigned next_pos() const noexcept { return tail_ + queued_; }
    io_uring_sqe* unsubmitted(unsigned pos) noexcept {
        return pos - tail_ < queued_ ? &r_.sqes[pos & r_.sq_mask] : nullptr;
    }
    // Finds the completion with this user_data among those ready, gives its result and
    // relabels it `quiet` (its reader skips it). False: none.
    bool take(uint64_t user_data, uint64_t quiet, int& res, uint32_t& flags) noexcept;
    // Submits everything queued and waits until at least `wait` completions are there.
    // -errno on failure (EINTR is retried; what was queued is then lost: EBUSY etc.).
    // Inline, the common case (everything taken): once or twice per message.
    int enter(unsigned wait) noexcept {
        unsigned n = queued_;
        tail_ += n;
        queued_ = 0;
        std::atomic_ref<unsigned>(*r_.sq_tail).store(tail_, std::memory_order_release);
        long r = uring_enter(r_.fd, n, wait);
        if (r == static_cast<long>(n)) [[likely]]
            return 0;
        return enter_rest(n, r, wait);
    }
    // Completions available now, oldest first; consume(n) after handling n of them.
    io_uring_cqe& cqe_at(unsigned i) const noexcept;
    unsigned cqes_ready() const noexcept;
    void consume(unsigned n) noexcept;

    // Provided buffers: group `group` gets `count` (a power of two) buffers of `size` bytes,
    // which RECV with IOSQE_BUFFER_SELECT fills; the completion names the buffer (bid).
    bool add_buffers(uint16_t group, unsigned count, uint32_t size, std::string& why);
    uint8_t* buffer(uint16_t group, uint16_t bid) const noexcept;
    uint32_t buffer_size(uint16_t group) const noexcept;
    // Gives a buffer back to its group (the ring's tail moves: no SQE, no system call).
    void recycle(uint16_t group, uint16_t bid) noexcept;

    // Cancels the request with this user_data and waits for it: 0 cancelled (its completion,
    // -ECANCELED, is in the CQ), -ENOENT none pending (it completed already), else -errno.
    int cancel_now(uint64_t user_data) noexcept;

    static constexpr uint16_t kGroups = 1;  // the proactor needs one

private:
    // enter() once the kernel took fewer than n SQEs (r: what it returned): retried.
    int enter_rest(unsigned n, long r, unsigned wait) noexcept;

    struct Group {
        void* map = nullptr;  // the ring, then the buffers
        size_t map_len = 0;
        io_uring_buf_ring* ring = nullptr;  // its tail
        io_uring_buf* bufs = nullptr;       // its count entries
        uint8_t* mem = nullptr;             // count * size bytes
        unsigned count = 0;  // a power of two
        uint32_t size = 0;
        uint16_t tail = 0;  // the ring's tail, which only we write
    };

    RingMap r_;
    unsigned tail_ = 0;    // *r_.sq_tail, which only we write: kept here, not read back
    unsigned queued_ = 0;  // SQEs filled since the last enter
    Group groups_[kGroups];
};

}  // namespace sluice
