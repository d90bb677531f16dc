// Batched sends through io_uring: see net/uring.h.
#include "sluice/net/uring.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>

namespace sluice {
namespace {

int sys_setup(unsigned entries, io_uring_params* p) {
    return static_cast<int>(syscall(__NR_io_uring_setup, entries, p));
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

bool RingMap::map(unsigned entries, io_uring_params& p, std::string& why) {
    unmap();
    fd = sys_setup(entries, &p);
    if (fd < 0) {
        why = std::string("io_uring_setup: ") + strerror(errno);
        return false;
    }
    sq_map_len_ = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    cq_map_len_ = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
    sqe_map_len_ = p.sq_entries * sizeof(io_uring_sqe);
    sq_map_ = sluice::map(fd, sq_map_len_, IORING_OFF_SQ_RING);
    cq_map_ = sluice::map(fd, cq_map_len_, IORING_OFF_CQ_RING);
    sqe_map_ = sluice::map(fd, sqe_map_len_, IORING_OFF_SQES);
    if (!sq_map_ || !cq_map_ || !sqe_map_) {
        why = std::string("mmap of the io_uring rings: ") + strerror(errno);
        unmap();
        return false;
    }
    auto* sq = static_cast<char*>(sq_map_);
    auto* cq = static_cast<char*>(cq_map_);
    sq_head = reinterpret_cast<unsigned*>(sq + p.sq_off.head);
    sq_tail = reinterpret_cast<unsigned*>(sq + p.sq_off.tail);
    cq_head = reinterpret_cast<unsigned*>(cq + p.cq_off.head);
    cq_tail = reinterpret_cast<unsigned*>(cq + p.cq_off.tail);
    sq_mask = *reinterpret_cast<unsigned*>(sq + p.sq_off.ring_mask);
    cq_mask = *reinterpret_cast<unsigned*>(cq + p.cq_off.ring_mask);
    if (cq_mask != p.cq_entries - 1 || sq_mask != p.sq_entries - 1) {
        why = "unexpected io_uring ring layout";
        unmap();
        return false;
    }
    sq_entries = p.sq_entries;
    sqes = static_cast<io_uring_sqe*>(sqe_map_);
    cqes = reinterpret_cast<io_uring_cqe*>(cq + p.cq_off.cqes);
    auto* sq_array = reinterpret_cast<unsigned*>(sq + p.sq_off.array);
    for (unsigned i = 0; i < p.sq_entries; ++i)
        sq_array[i] = i;
    return true;
}

void RingMap::unmap() noexcept {
    if (sqe_map_)
        munmap(sqe_map_, sqe_map_len_);
    if (cq_map_)
        munmap(cq_map_, cq_map_len_);
    if (sq_map_)
        munmap(sq_map_, sq_map_len_);
    sqe_map_ = cq_map_ = sq_map_ = nullptr;
    if (fd >= 0)
        ::close(fd);
    fd = -1;
}

bool SendRing::open(std::string& why) {
    close();
    io_uring_params p{};
    if (!r_.map(kEntries, p, why))
        return false;
    // Each SQE is a send, once: prep() fills in only what changes.
    for (unsigned i = 0; i < r_.sq_entries; ++i)
        r_.sqes[i] = kSend;
    if (!completes_at_once(*this, why)) {
        close();
        return false;
    }
    return true;
}

void SendRing::close() noexcept {
    r_.unmap();
}

bool SendRing::send_all(const UringSend* sends, unsigned n, int* res) noexcept {
    for (unsigned i = 0; i < n; ++i)
        prep(i, sends[i].fd, sends[i].data, sends[i].len);
    return submit(n, res);
}

bool SendRing::submit(unsigned n, int* res, bool wait) noexcept {
    unsigned tail = *r_.sq_tail;  // only we write it
    store_release(r_.sq_tail, tail + n);
    // Each send completes during the submission (non-blocking), so asking for n completions
    // does not wait. (open()'s check asks for none: on a kernel that would wait, it must not.)
    unsigned submitted = 0;
    while (submitted < n) {
        unsigned left = n - submitted;
        long r = uring_enter(r_.fd, left, wait ? left : 0);
        if (r <= 0) {
            if (r == -EINTR)
                continue;
            if (r < 0)
                errno = static_cast<int>(-r);  // for the caller's message
            // An error, or nothing taken (which would repeat forever): stop here.
            // Take back what the kernel has not consumed, so that no later call sends it.
            store_release(r_.sq_tail, load_acquire(r_.sq_head));
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
    auto* cqes = r_.cqes;
    unsigned head = *r_.cq_head;
    unsigned got = 0;
    while (got < submitted) {
        unsigned ctail = load_acquire(r_.cq_tail);
        if (head == ctail) {
            if (!wait)
                break;
            // Not posted yet (should not happen: they complete inline); wait for the rest.
            if (long r = uring_enter(r_.fd, 0, submitted - got); r < 0 && r != -EINTR) {
                for (unsigned i = 0; i < n; ++i)
                    res[i] = -EIO;  // unknown: the callers treat the sockets as failed
                break;
            }
            continue;
        }
        for (; head != ctail; ++head, ++got) {
            const io_uring_cqe& c = cqes[head & r_.cq_mask];
            res[c.user_data] = c.res;
        }
        store_release(r_.cq_head, head);
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// IoRing

bool IoRing::open(unsigned entries, std::string& why) {
    close();
    io_uring_params p{};
    // One thread submits (SINGLE_ISSUER), and work the kernel finishes for us (a read once
    // data arrived) runs when we next wait rather than interrupting us (DEFER_TASKRUN).
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    p.cq_entries = entries * 4;
    if (!r_.map(entries, p, why))
        return false;
    if (!(p.features & IORING_FEAT_NODROP)) {
        why = "this kernel's io_uring may drop completions";
        close();
        return false;
    }
    tail_ = *r_.sq_tail;
    queued_ = 0;
    return true;
}

void IoRing::close() noexcept {
    r_.unmap();  // the ring first: it holds the buffer rings' pages
    for (Group& g : groups_) {
        if (g.map)
            munmap(g.map, g.map_len);
        g = Group{};
    }
    queued_ = 0;
}

int IoRing::enter_rest(unsigned n, long r, unsigned wait) noexcept {
    for (;;) {
        if (r >= 0) {
            if (static_cast<unsigned>(r) >= n)
                return 0;
            n -= static_cast<unsigned>(r);  // not all taken (no memory): try the rest again
        } else if (r == -EINTR) {
            n = tail_ - load_acquire(r_.sq_head);
        } else {
            // Take back what the kernel did not consume, so that no later call submits it.
            tail_ = load_acquire(r_.sq_head);
            store_release(r_.sq_tail, tail_);
            return static_cast<int>(r);
        }
        r = uring_enter(r_.fd, n, wait);
    }
}

unsigned IoRing::cqes_ready() const noexcept {
    return load_acquire(r_.cq_tail) - *r_.cq_head;
}

io_uring_cqe& IoRing::cqe_at(unsigned i) const noexcept {
    return r_.cqes[(*r_.cq_head + i) & r_.cq_mask];
}

void IoRing::consume(unsigned n) noexcept {
    store_release(r_.cq_head, *r_.cq_head + n);
}

bool IoRing::take(uint64_t user_data, uint64_t quiet, int& res, uint32_t& flags) noexcept {
    for (unsigned i = 0, n = cqes_ready(); i < n; ++i) {
        io_uring_cqe& c = r_.cqes[(*r_.cq_head + i) & r_.cq_mask];
        if (c.user_data == user_data) {
            res = c.res;
            flags = c.flags;
            c.user_data = quiet;
            return true;
        }
    }
    return false;
}

// The ring's tail overlays entry 0's reserved field (bytes 14-15).
static_assert(offsetof(io_uring_buf_ring, tail) == 14 && sizeof(io_uring_buf) == 16);

bool IoRing::add_buffers(uint16_t group, unsigned count, uint32_t size, std::string& why) {
    if (group >= kGroups || count == 0 || count > 32768 || (count & (count - 1)) != 0) {
        why = "bad provided buffer group";
        return false;
    }
    Group& g = groups_[group];
    // Page-aligned, as the kernel wants the ring; the buffers follow it in one mapping.
    size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    size_t ring_span = (size_t{count} * sizeof(io_uring_buf) + page - 1) / page * page;
    size_t mem_len = size_t{count} * size;
    void* m = mmap(nullptr, ring_span + mem_len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        g = Group{};
        why = std::string("mmap of provided buffers: ") + strerror(errno);
        return false;
    }
    g.map = m;
    g.map_len = ring_span + mem_len;
    g.ring = static_cast<io_uring_buf_ring*>(m);
    // Entry i is at 16 * i, as in C. Not g.ring->bufs: in C++ the header's flexible array
    // sits behind an empty struct, 8 bytes further (a kernel that reads the entries where
    // they are not finds the ring empty: every RECV fails with -ENOBUFS).
    g.bufs = static_cast<io_uring_buf*>(m);
    g.mem = static_cast<uint8_t*>(m) + ring_span;
    g.count = count;
    g.size = size;
    // A ring-mapped group (IORING_REGISTER_PBUF_RING, 5.19): a buffer goes back by writing
    // its entry and moving the tail, no SQE and no system call.
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uintptr_t>(g.ring);
    reg.ring_entries = count;
    reg.bgid = group;
    if (syscall(__NR_io_uring_register, r_.fd, IORING_REGISTER_PBUF_RING, &reg, 1) != 0) {
        why = std::string("IORING_REGISTER_PBUF_RING: ") + strerror(errno);
        munmap(g.map, g.map_len);
        g = Group{};
        return false;
    }
    for (unsigned bid = 0; bid < count; ++bid)
        recycle(group, static_cast<uint16_t>(bid));
    return true;
}

uint8_t* IoRing::buffer(uint16_t group, uint16_t bid) const noexcept {
    return groups_[group].mem + size_t{bid} * groups_[group].size;
}

uint32_t IoRing::buffer_size(uint16_t group) const noexcept {
    return groups_[group].size;
}

void IoRing::recycle(uint16_t group, uint16_t bid) noexcept {
    Group& g = groups_[group];
    io_uring_buf& b = g.bufs[g.tail & (g.count - 1)];
    b.addr = reinterpret_cast<uintptr_t>(buffer(group, bid));
    b.len = g.size;
    b.bid = bid;
    ++g.tail;
    std::atomic_ref<uint16_t>(g.ring->tail).store(g.tail, std::memory_order_release);
}

int IoRing::cancel_now(uint64_t user_data) noexcept {
    io_uring_sync_cancel_reg reg{};
    reg.addr = user_data;
    reg.timeout.tv_sec = -1;
    reg.timeout.tv_nsec = -1;
    if (syscall(__NR_io_uring_register, r_.fd, IORING_REGISTER_SYNC_CANCEL, &reg, 1) == 0)
        return 0;
    return -errno;
}

}  // namespace sluice
