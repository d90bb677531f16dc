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

#include <cstddef>
#include <cstdint>
#include <string>

namespace sluice {

struct UringSend {
    int fd;
    const void* data;
    uint32_t len;
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
    bool is_open() const noexcept { return fd_ >= 0; }

    // Sends sends[i] for i < n (n <= kEntries) with MSG_DONTWAIT | MSG_NOSIGNAL, in order.
    // res[i]: bytes sent, or -errno (-EAGAIN: no room). False: the system call itself failed
    // (errno; no result is valid and nothing was sent).
    bool send_all(const UringSend* sends, unsigned n, int* res) noexcept;
    // The same in two steps, without an array of UringSend: prep() fills send i of the next
    // submit(), which sends 0 to n-1.
    // Every SQE holds kSend's other fields since open() (the kernel only reads them).
    void prep(unsigned i, int fd, const void* data, uint32_t len) noexcept {
        io_uring_sqe& e = static_cast<io_uring_sqe*>(sqes_)[(*sq_tail_ + i) & sq_mask_];
        e.fd = fd;
        e.addr = reinterpret_cast<uintptr_t>(data);
        e.len = len;
        e.user_data = i;
    }
    // wait = false (open()'s check only): a send not completed yet is left -EINPROGRESS.
    bool submit(unsigned n, int* res, bool wait = true) noexcept;

private:
    static const io_uring_sqe kSend;  // a non-blocking send, fd/data/len left to prep()

    int fd_ = -1;
    void* sq_map_ = nullptr;
    size_t sq_map_len_ = 0;
    void* cq_map_ = nullptr;
    size_t cq_map_len_ = 0;
    void* sqe_map_ = nullptr;
    size_t sqe_map_len_ = 0;
    unsigned* sq_head_ = nullptr;
    unsigned* sq_tail_ = nullptr;
    unsigned sq_mask_ = 0;  // the rings' masks never change: read once
    unsigned* sq_array_ = nullptr;
    unsigned* cq_head_ = nullptr;
    unsigned* cq_tail_ = nullptr;
    unsigned cq_mask_ = 0;
    void* sqes_ = nullptr;
    void* cqes_ = nullptr;
};

}  // namespace sluice
