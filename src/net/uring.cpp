// Batched sends through io_uring: see net/uring.h.
#include "sluice/net/uring.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace sluice {
namespace {

int sys_setup(unsigned entries, io_uring_params* p) {
    return static_cast<int>(syscall(__NR_io_uring_setup, entries, p));
}

int sys_enter(int fd, unsigned submit, unsigned wait) {
    return static_cast<int>(
        syscall(__NR_io_uring_enter, fd, submit, wait, IORING_ENTER_GETEVENTS, nullptr, 0));
}

unsigned load_acquire(const unsigned* p) {
    return std::atomic_ref<const unsigned>(*p).load(std::memory_order_acquire);
}

void store_release(unsigned* p, unsigned v) {
    std::atomic_ref<unsigned>(*p).store(v, std::memory_order_release);
}

void* map(int fd, size_t len, off_t what) {
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, what);
    return m == MAP_FAILED ? nullptr : m;
}

// Does a non-blocking send on a full socket complete at once with -EAGAIN? (Kernels that
// ignore MSG_DONTWAIT here would wait for room, and submit() would block the loop; the
// request left pending is cancelled when the caller closes the ring.)
bool completes_at_once(SendRing& ring, std::string& why) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        why = std::string("socketpair: ") + strerror(errno);
        return false;
    }
    char block[4096] = {};
    while (send(sv[0], block, sizeof block, MSG_DONTWAIT | MSG_NOSIGNAL) > 0) {
    }
    ring.prep(0, sv[0], block, sizeof block);
    int res = 0;
    bool ok = ring.submit(1, &res, false);  // a kernel that waits leaves it -EINPROGRESS
    if (!ok)
        why = std::string("io_uring_enter: ") + strerror(errno);
    else if (res != -EAGAIN)
        why = "a send on a full socket did not fail at once with EAGAIN (" + std::to_string(res) + ")";
    ::close(sv[0]);
    ::close(sv[1]);
    return ok && res == -EAGAIN;
}

}  // namespace

const io_uring_sqe SendRing::kSend = [] {
    io_uring_sqe e;
    memset(&e, 0, sizeof e);
    e.opcode = IORING_OP_SEND;
    e.msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL;
    return e;
}();

bool SendRing::open(std::string& why) {
    close();
    io_uring_params p{};
    fd_ = sys_setup(kEntries, &p);
    if (fd_ < 0) {
        why = std::string("io_uring_setup: ") + strerror(errno);
        return false;
    }
    sq_map_len_ = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    cq_map_len_ = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
    sqe_map_len_ = p.sq_entries * sizeof(io_uring_sqe);
    sq_map_ = map(fd_, sq_map_len_, IORING_OFF_SQ_RING);
    cq_map_ = map(fd_, cq_map_len_, IORING_OFF_CQ_RING);
    sqe_map_ = map(fd_, sqe_map_len_, IORING_OFF_SQES);
    if (!sq_map_ || !cq_map_ || !sqe_map_) {
        why = std::string("mmap of the io_uring rings: ") + strerror(errno);
        close();
        return false;
    }
    auto* sq = static_cast<char*>(sq_map_);
    auto* cq = static_cast<char*>(cq_map_);
    sq_head_ = reinterpret_cast<unsigned*>(sq + p.sq_off.head);
    sq_tail_ = reinterpret_cast<unsigned*>(sq + p.sq_off.tail);
    sq_array_ = reinterpret_cast<unsigned*>(sq + p.sq_off.array);
    cq_head_ = reinterpret_cast<unsigned*>(cq + p.cq_off.head);
    cq_tail_ = reinterpret_cast<unsigned*>(cq + p.cq_off.tail);
    sq_mask_ = *reinterpret_cast<unsigned*>(sq + p.sq_off.ring_mask);
    cq_mask_ = *reinterpret_cast<unsigned*>(cq + p.cq_off.ring_mask);
    if (cq_mask_ != p.cq_entries - 1 || sq_mask_ != p.sq_entries - 1) {
        why = "unexpected io_uring ring layout";
        close();
        return false;
    }
    sqes_ = sqe_map_;
    cqes_ = cq + p.cq_off.cqes;
    // The SQ array is the identity: entry i of the ring is SQE i. Each SQE is a send, once:
    // prep() fills in only what changes.
    for (unsigned i = 0; i < p.sq_entries; ++i) {
        sq_array_[i] = i;
        static_cast<io_uring_sqe*>(sqes_)[i] = kSend;
    }
    if (!completes_at_once(*this, why)) {
        close();
        return false;
    }
    return true;
}

void SendRing::close() noexcept {
    if (sqe_map_)
        munmap(sqe_map_, sqe_map_len_);
    if (cq_map_)
        munmap(cq_map_, cq_map_len_);
    if (sq_map_)
        munmap(sq_map_, sq_map_len_);
    sqe_map_ = cq_map_ = sq_map_ = nullptr;
    if (fd_ >= 0)
        ::close(fd_);
    fd_ = -1;
}

bool SendRing::send_all(const UringSend* sends, unsigned n, int* res) noexcept {
    for (unsigned i = 0; i < n; ++i)
        prep(i, sends[i].fd, sends[i].data, sends[i].len);
    return submit(n, res);
}

bool SendRing::submit(unsigned n, int* res, bool wait) noexcept {
    unsigned tail = *sq_tail_;  // only we write it
    store_release(sq_tail_, tail + n);
    // Each send completes during the submission (non-blocking), so asking for n completions
    // does not wait. (open()'s check asks for none: on a kernel that would wait, it must not.)
    unsigned submitted = 0;
    while (submitted < n) {
        unsigned left = n - submitted;
        int r = sys_enter(fd_, left, wait ? left : 0);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            // An error, or nothing taken (which would repeat forever): stop here.
            // Take back what the kernel has not consumed, so that no later call sends it.
            store_release(sq_tail_, load_acquire(sq_head_));
            if (submitted == 0)
                return false;  // nothing was sent
            break;
        }
        submitted += static_cast<unsigned>(r);
    }
    for (unsigned i = submitted; i < n; ++i)
        res[i] = -EAGAIN;  // not submitted (the rest of a failed call): nothing sent
    for (unsigned i = 0; !wait && i < submitted; ++i)
        res[i] = -EINPROGRESS;  // until its completion says otherwise
    auto* cqes = static_cast<io_uring_cqe*>(cqes_);
    unsigned head = *cq_head_;
    unsigned got = 0;
    while (got < submitted) {
        unsigned ctail = load_acquire(cq_tail_);
        if (head == ctail) {
            if (!wait)
                break;
            // Not posted yet (should not happen: they complete inline); wait for the rest.
            if (sys_enter(fd_, 0, submitted - got) < 0 && errno != EINTR) {
                for (unsigned i = 0; i < n; ++i)
                    res[i] = -EIO;  // unknown: the callers treat the sockets as failed
                break;
            }
            continue;
        }
        for (; head != ctail; ++head, ++got) {
            const io_uring_cqe& c = cqes[head & cq_mask_];
            res[c.user_data] = c.res;
        }
        store_release(cq_head_, head);
    }
    return true;
}

}  // namespace sluice
