// Stream buffer: reads, frames, forwards. See sbuf.h for the buffer layout and ordering rule.
#include "sluice/net/sbuf.h"

#include "sluice/net/loop.h"
#include "sluice/net/tls.h"
#include "sluice/net/uring.h"
#include "sluice/util/log.h"
#include "sluice/util/time.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

namespace sluice {
namespace {

constexpr size_t kMaxFreeBufs = 32;
uint32_t g_bufsize = 4096;
// Bulk buffers: a socket whose reads keep filling a pkt_buf-sized buffer (COPY, big result
// sets) reads into one of these instead: a sixteenth of the recv and send calls, and the
// receiver is woken once per 64 KiB rather than per 4 KiB. Bounded in number so that many
// streaming connections cannot take more than kMaxBulkBuffers * kBulkSize (16 MiB).
constexpr uint32_t kBulkSize = kBulkBufferSize;
size_t g_max_bulk_in_use = kMaxBulkBuffers;
constexpr size_t kMaxFreeBulk = 4;
std::vector<uint8_t*> g_free_bulk;
size_t g_bulk_in_use = 0;
uint64_t g_bulk_takes = 0;
// Sbufs asked to run without a socket edge (resumed, read again for fairness, first read of
// an accepted socket): run by the loop (SBuf::run_pending), in order.
SBuf* g_pend_head = nullptr;
SBuf* g_pend_tail = nullptr;
size_t g_pend_count = 0;
// Pooled receive buffers of g_bufsize bytes: a fixed stack, so that giving one back and
// taking it again (a client does both every transaction) neither allocates nor calls.
uint8_t* g_free_bufs[kMaxFreeBufs];
size_t g_free_count = 0;
size_t g_bufs_in_use = 0;           // g_bufsize buffers held by sockets
// Idle clients hold no buffer (5,000 idle clients cost 5,000 pkt_bufs otherwise), except the
// first few to go quiet, which keep theirs ("parked") until they close or it is swapped:
// their next message is read straight into it. Under the proactor, a client without a buffer
// reads into a provided buffer that is copied out and given back every message; with one,
// the RECV fills it. Bounded in bytes, not clients.
constexpr size_t kParkBytes = 256 * 1024;
size_t g_park_limit = kParkBytes / 4096;  // clients; sbuf_set_buffer_size() recomputes it
size_t g_parked = 0;
uint64_t g_forward_sends = 0;

// The send batch (SBuf::set_batching): bytes copied into one slab, one entry per socket.
// Sends bigger than kDeferMax (bulk data) go out at once: the copy would cost more than
// the system call saves.
constexpr size_t kDeferMax = 8192;
constexpr size_t kSlabSize = 128 * 1024;
constexpr unsigned kMaxDeferred = SendRing::kEntries;
struct Deferred {
    SBuf* sb;  // nullptr: sent or dropped since (close, a direct send)
    uint32_t off;
    uint32_t len;
};
SendRing g_ring;
bool g_batching = false;
char g_slab[kSlabSize];
size_t g_slab_used = 0;
Deferred g_deferred[kMaxDeferred];
unsigned g_deferred_count = 0;
uint64_t g_ring_batches = 0;  // batches that went out through the ring (tests)

// The proactor (SBuf::proactor()). Requests carry a tag: the socket's fd and generation, so
// that a completion for a socket closed since (its fd perhaps reused) is recognised.
IoRing g_pro;
bool g_proactor = false;
int g_pro_epfd = -1;
bool g_ep_polled = false;  // a POLL_ADD on the epoll set is in flight
uint32_t g_gen = 0;
std::vector<SBuf*> g_by_fd;
unsigned g_prepped = 0;  // batch entries in the ring's submission, results after the enter
// Provided buffers, for the reads of sockets that hold no buffer of their own (idle clients):
// only the reads that complete in one turn hold one, until the turn gives it back. The kernel
// takes them in turn (first in, first out), so each is touched sooner or later: they are few
// and small (128 KiB in all, not per client). A message that does not fit is read on into the
// socket's own buffer by the next RECV.
constexpr uint16_t kSelectGroup = 0;
constexpr unsigned kSelectBuffers = 128;
constexpr uint32_t kSelectSize = 1024;
enum RingOp : uint64_t { kOpRecv = 1, kOpSend = 2, kOpPollOut = 3, kOpEpoll = 4, kOpQuiet = 5 };

uint64_t ring_tag(RingOp op, uint32_t index, uint32_t gen) {
    return (static_cast<uint64_t>(gen) << 32) | (op << 24) | index;
}
RingOp tag_op(uint64_t t) {
    return static_cast<RingOp>((t >> 24) & 0xff);
}
uint32_t tag_index(uint64_t t) {
    return static_cast<uint32_t>(t & 0xffffff);
}
uint32_t tag_gen(uint64_t t) {
    return static_cast<uint32_t>(t >> 32);
}
const uint64_t kQuietTag = ring_tag(kOpQuiet, 0, 0);
uint32_t next_gen() {
    if (++g_gen == 0)
        g_gen = 1;
    return g_gen;
}
// The sbuf a completion names by fd (nullptr: none now; its generation says if it is the one).
SBuf* sbuf_of(uint64_t t) {
    uint32_t fd = tag_index(t);
    return fd < g_by_fd.size() ? g_by_fd[fd] : nullptr;
}

// One plain send; -errno on failure.
int send_once(int fd, const void* data, size_t len) {
    for (;;) {
        ssize_t n = ::send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0)
            return static_cast<int>(n);
        if (errno != EINTR)
            return -errno;
    }
}

[[gnu::noinline, gnu::cold]] uint8_t* new_buffer() {
    auto* b = static_cast<uint8_t*>(malloc(g_bufsize));
    if (!b)
        abort();
    return b;
}

uint8_t* take_buffer() {
    ++g_bufs_in_use;
    return g_free_count > 0 ? g_free_bufs[--g_free_count] : new_buffer();
}

// nullptr when the cap is reached or pkt_buf is as big already.
uint8_t* take_bulk() {
    if (g_bulk_in_use >= g_max_bulk_in_use || g_bufsize >= kBulkSize)
        return nullptr;
    uint8_t* b;
    if (!g_free_bulk.empty()) {
        b = g_free_bulk.back();
        g_free_bulk.pop_back();
    } else {
        b = static_cast<uint8_t*>(malloc(kBulkSize));
        if (!b)
            return nullptr;
    }
    ++g_bulk_in_use;
    ++g_bulk_takes;
    return b;
}

// give_buffer() for a bulk buffer, a grown one (held a big message: back to the allocator)
// or a full pool. The pool is small: enough for the buffers in use at one moment in steady
// traffic, while a burst of concurrent logins or reads leaves little RSS behind.
[[gnu::noinline, gnu::cold]] void give_buffer_slow(uint8_t* b, uint32_t cap, bool bulk) {
    if (bulk) {
        --g_bulk_in_use;
        if (g_free_bulk.size() < kMaxFreeBulk)
            g_free_bulk.push_back(b);
        else
            free(b);
        return;
    }
    if (cap == g_bufsize)
        --g_bufs_in_use;
    free(b);
}

void give_buffer(uint8_t* b, uint32_t cap, bool bulk) {
    if (!bulk && cap == g_bufsize && g_free_count < kMaxFreeBufs) [[likely]] {
        --g_bufs_in_use;
        g_free_bufs[g_free_count++] = b;
        return;
    }
    give_buffer_slow(b, cap, bulk);
}

void free_pooled_buffers() noexcept {
    while (g_free_count > 0)
        free(g_free_bufs[--g_free_count]);
}

}  // namespace

void sbuf_release_buffers() noexcept {
    free_pooled_buffers();
    for (uint8_t* b : g_free_bulk)
        free(b);
    g_free_bulk.clear();
    g_free_bulk.shrink_to_fit();
}

size_t sbuf_bulk_buffers_in_use() noexcept {
    return g_bulk_in_use;
}

SBufMemory sbuf_memory() noexcept {
    return {g_bufsize, g_bufs_in_use, g_free_count,
            kBulkSize, g_bulk_in_use, g_free_bulk.size()};
}

size_t sbuf_park_limit() noexcept {
    return g_park_limit;
}

void sbuf_set_park_limit(size_t clients) noexcept {
    g_park_limit = clients;
}

uint64_t sbuf_bulk_buffers_taken() noexcept {
    return g_bulk_takes;
}

void sbuf_set_bulk_limit(size_t n) noexcept {
    g_max_bulk_in_use = n;
}

void sbuf_set_buffer_size(uint32_t size) noexcept {
    free_pooled_buffers();
    g_bufsize = size < 512 ? 512 : size;
    g_park_limit = kParkBytes / g_bufsize;
}

uint64_t SBuf::forward_sends() noexcept {
    return g_forward_sends;
}

uint64_t SBuf::recv_tag() const noexcept {
    return ring_tag(kOpRecv, static_cast<uint32_t>(fd_), ring_rgen_);
}

uint64_t SBuf::pollout_tag() const noexcept {
    return ring_tag(kOpPollOut, static_cast<uint32_t>(fd_), ring_gen_);
}

uint64_t SBuf::ring_batches() noexcept {
    return g_ring_batches;
}

SBuf::~SBuf() {
    close();
}

bool SBuf::attach(int fd, SBufOwner* owner, bool connecting) {
    fd_ = fd;
    owner_ = owner;
    connecting_ = connecting;
    eof_ = rdhup_ = false;
    paused_ = blocked_ = false;
    backed_up_ = false;
    raw_byte_ = false;
    cut_ = false;
    pos_left_ = 0;
    tls_ = TlsState::Off;
    tls_read_wants_write_ = tls_write_wants_read_ = false;
    remain_ = 0;
    pos_ = parse_ = end_ = 0;
    out_.clear();
    out_pos_ = 0;
    stats_ = {};
    // Writable is asked for only while connecting: a fresh socket is writable, and reporting
    // that would cost an epoll_wait per connection. The first send that cannot complete
    // asks for it (want_write()).
    write_armed_ = connecting;
    ring_ = recv_armed_ = ring_short_ = false;
    if (g_proactor && !connecting) {
        ring_join();
        return true;
    }
    if (!loop_add(fd, this, connecting)) {
        ::close(fd_);
        fd_ = -1;
        return false;
    }
    return true;
}

void SBuf::read_soon() noexcept {
    // Runs in this loop turn: the first packet is answered one epoll_wait sooner.
    run_soon(EV_READ);
}

void SBuf::run_soon(short what) noexcept {
    if (fd_ < 0)
        return;
    if (pend_what_ == 0) {
        pend_prev_ = g_pend_tail;
        pend_next_ = nullptr;
        (g_pend_tail ? g_pend_tail->pend_next_ : g_pend_head) = this;
        g_pend_tail = this;
        ++g_pend_count;
    }
    pend_what_ = static_cast<short>(pend_what_ | what);
}

void SBuf::forget_pending() noexcept {
    if (pend_what_ == 0)
        return;
    (pend_prev_ ? pend_prev_->pend_next_ : g_pend_head) = pend_next_;
    (pend_next_ ? pend_next_->pend_prev_ : g_pend_tail) = pend_prev_;
    pend_prev_ = pend_next_ = nullptr;
    pend_what_ = 0;
    --g_pend_count;
}

bool SBuf::has_pending() noexcept {
    return g_pend_head != nullptr;
}

void SBuf::run_pending() noexcept {
    // Only those queued before this call: one that asks again (fairness) waits for the next
    // call. Entries closed meanwhile have left the list.
    for (size_t n = g_pend_count; n > 0 && g_pend_head; --n) {
        SBuf* sb = g_pend_head;
        short what = sb->pend_what_;
        sb->forget_pending();
        sb->handle_event(what);
    }
}

void SBuf::on_ready(SBuf* sb, uint32_t events) noexcept {
    if (sb->fd_ < 0)
        return;  // closed by an earlier report of the same batch
    // Hang-up and error: let recv and send say what happened.
    short what = 0;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        what |= EV_READ;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        what |= EV_WRITE;
    if (events & EPOLLRDHUP)
        what |= EV_CLOSED;
    if (sb->pend_what_ != 0) {
        // Also queued (read_soon() of a fresh connection, resume()): one run serves both;
        // a second would only find the socket empty (a recv that returns EAGAIN).
        what = static_cast<short>(what | sb->pend_what_);
        sb->forget_pending();
    }
    sb->handle_event(what);
}

void SBuf::close() {
    unlink();
    forget_pending();
    if (ssl_) {
        // One non-blocking close_notify attempt; none after a fatal error (OpenSSL forbids it).
        if (tls_ == TlsState::Up && fd_ >= 0)
            SSL_shutdown(ssl_);
        ERR_clear_error();
        SSL_free(ssl_);
        ssl_ = nullptr;
        tls_ = TlsState::Off;
    }
    if (defer_slot_) {
        // Batched bytes go out before the socket closes (a last error message, say).
        Deferred& e = g_deferred[defer_slot_ - 1];
        if (fd_ >= 0)
            send_once(fd_, g_slab + e.off, e.len);
        e.sb = nullptr;
        defer_slot_ = 0;
    }
    if (ring_) {
        ring_cancel();  // a request in flight holds the socket open: the FIN waits for it
        g_by_fd[static_cast<size_t>(fd_)] = nullptr;
        ring_ = false;
    }
    if (fd_ >= 0) {
        ::close(fd_);
        fd_ = -1;
    }
    backed_up_ = false;
    drop_buffer();
    streaming_ = false;
    pos_ = parse_ = end_ = remain_ = pos_left_ = 0;
    cut_ = false;
    std::string().swap(out_);
    out_pos_ = 0;
    paused_ = blocked_ = false;
}

void SBuf::link(SBuf& a, SBuf& b) noexcept {
    a.peer_ = &b;
    b.peer_ = &a;
}

void SBuf::unlink() noexcept {
    if (!peer_)
        return;
    SBuf* p = peer_;
    peer_ = nullptr;
    p->peer_ = nullptr;
    // Bytes decided for a peer that is gone are dropped.
    pos_ = parse_;
    p->pos_ = p->parse_;
    if (p->blocked_) {
        p->blocked_ = false;
        p->resume();
    }
    if (blocked_) {
        blocked_ = false;
        resume();
    }
}

std::string& SBuf::out_for_append() {
    if (peer_ && peer_->parse_ > peer_->pos_)
        peer_->spill_pending();
    if (out_pos_ == out_.size()) {
        out_.clear();
        out_pos_ = 0;
    }
    return out_;
}

void SBuf::queue(std::string_view bytes) {
    out_for_append().append(bytes);
}

void SBuf::spill_pending() {
    uint32_t n = parse_ - pos_;
    if (n && peer_) {
        if (peer_->out_pos_ == peer_->out_.size()) {
            peer_->out_.clear();
            peer_->out_pos_ = 0;
        }
        peer_->out_.append(reinterpret_cast<const char*>(buf_ + pos_), n);
    }
    committed_all();
}

void SBuf::committed_part(uint32_t n) noexcept {
    // Part of the pending range (a send the socket took only in part): pass over the
    // headers of the messages it ends in. Each one was walked, so its header is here.
    uint32_t at = pos_;
    uint32_t left = pos_left_;
    while (n > left) {
        n -= left;
        at += left;
        if (parse_ - at < kTypedHeaderLen) {  // not expected: say "cut" rather than guess
            left = n + 1;
            break;
        }
        left = 1 + read_be32(buf_ + at + 1);
    }
    pos_left_ = left - n;
    pos_ = at + n;
}

void SBuf::want_write() noexcept {
    // A failure (ENOMEM) leaves the socket without write reports; the next send that cannot
    // complete tries again.
    if (write_armed_ || fd_ < 0)
        return;
    if (ring_) {
        io_uring_sqe& e = g_pro.sqe();
        e.opcode = IORING_OP_POLL_ADD;
        e.fd = fd_;
        e.poll32_events = POLLOUT | POLLERR | POLLHUP;
        e.user_data = pollout_tag();
        write_armed_ = true;  // one report: the next send that cannot complete asks again
        return;
    }
    write_armed_ = loop_want_write(fd_, this);
}

bool SBuf::send_iov(iovec* iov, int cnt, size_t& sent) {
    if (g_batching && !backed_up_ && !ssl_) {
        size_t total = iov[0].iov_len + (cnt > 1 ? iov[1].iov_len : 0);
        if (defer(iov, cnt, total)) {
            sent = total;
            stats_.sent_bytes += total;
            return true;
        }
    }
    return send_iov_slow(iov, cnt, sent);
}

bool SBuf::send_iov_slow(iovec* iov, int cnt, size_t& sent) {
    if (ssl_)
        return tls_send_iov(iov, cnt, sent);
    if (defer_slot_)
        return send_direct(iov, cnt, sent);
    sent = 0;
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = static_cast<size_t>(cnt);
    for (;;) {
        // One range (the common case) goes through send(): the kernel skips copying in a
        // msghdr and an iovec array.
        ssize_t n = cnt == 1 ? ::send(fd_, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL)
                             : ::sendmsg(fd_, &mh, MSG_NOSIGNAL);
        if (n >= 0) {
            sent = static_cast<size_t>(n);
            stats_.sent_bytes += sent;
            backed_up_ = sent < iov[0].iov_len + (cnt > 1 ? iov[1].iov_len : 0);
            if (backed_up_ && !write_armed_)
                want_write();
            return true;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            backed_up_ = true;
            want_write();
            return true;
        }
        return false;
    }
}

void SBuf::append_deferred(const iovec* iov, int cnt, size_t total) noexcept {
    // Our entry ends at the end of the slab (a new one, or moved there).
    char* to = g_slab + g_slab_used;
    memcpy(to, iov[0].iov_base, iov[0].iov_len);
    if (cnt > 1)
        memcpy(to + iov[0].iov_len, iov[1].iov_base, iov[1].iov_len);
    g_slab_used += total;
    g_deferred[defer_slot_ - 1].len += static_cast<uint32_t>(total);
}

bool SBuf::defer(const iovec* iov, int cnt, size_t total) noexcept {
    // The common case inline: the socket's first send of the turn, a slot and room free.
    if (defer_slot_ == 0 && total <= kDeferMax && g_slab_used + total <= kSlabSize &&
        g_deferred_count < kMaxDeferred) {
        g_deferred[g_deferred_count++] = {this, static_cast<uint32_t>(g_slab_used), 0};
        defer_slot_ = static_cast<uint16_t>(g_deferred_count);
        append_deferred(iov, cnt, total);
        return true;
    }
    return defer_more(iov, cnt, total);
}

bool SBuf::defer_more(const iovec* iov, int cnt, size_t total) noexcept {
    if (total > kDeferMax)
        return false;
    if (!defer_slot_) {
        send_batch();  // full: this batch goes now, ours starts the next
        return defer(iov, cnt, total);
    }
    Deferred& e = g_deferred[defer_slot_ - 1];
    if (e.len + total > kDeferMax)
        return false;
    if (e.off + e.len != g_slab_used) {
        // Not at the end of the slab: move our bytes there, the new ones follow them.
        if (g_slab_used + e.len + total > kSlabSize)
            return false;
        memcpy(g_slab + g_slab_used, g_slab + e.off, e.len);
        e.off = static_cast<uint32_t>(g_slab_used);
        g_slab_used += e.len;
    } else if (g_slab_used + total > kSlabSize) {
        return false;
    }
    append_deferred(iov, cnt, total);
    return true;
}

bool SBuf::send_direct(const iovec* in, int cnt, size_t& sent) {
    iovec iov[3];
    int k = 0;
    const char* first = nullptr;  // our batched bytes: valid until the batch is sent
    size_t first_len = 0;
    if (defer_slot_) {
        Deferred& e = g_deferred[defer_slot_ - 1];
        first = g_slab + e.off;
        first_len = e.len;
        iov[k++] = {const_cast<char*>(first), first_len};
        e.sb = nullptr;
        defer_slot_ = 0;
    }
    size_t total = first_len;
    for (int i = 0; i < cnt; ++i) {
        if (in[i].iov_len)
            iov[k++] = in[i];
        total += in[i].iov_len;
    }
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = static_cast<size_t>(k);
    ssize_t n;
    do
        n = ::sendmsg(fd_, &mh, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        return false;
    size_t done = n < 0 ? 0 : static_cast<size_t>(n);
    sent = done > first_len ? done - first_len : 0;
    stats_.sent_bytes += sent;  // the batched bytes were counted when they joined the batch
    if (done < first_len)
        unsent_first(first + done, first_len - done);
    backed_up_ = done < total;
    if (backed_up_ && !write_armed_)
        want_write();
    return true;
}

void SBuf::unsent_first(const char* data, size_t n) {
    if (out_pos_ == out_.size()) {
        out_.assign(data, n);
        out_pos_ = 0;
    } else {
        out_.insert(out_pos_, data, n);
    }
}

bool sbuf_open_send_ring(std::string& why) {
    return g_ring.is_open() || g_ring.open(why);
}

void sbuf_close_send_ring() noexcept {
    SBuf::send_batch();
    g_batching = false;
    g_ring.close();
}

bool sbuf_send_ring_open() noexcept {
    return g_ring.is_open();
}

void SBuf::set_batching(bool on) noexcept {
    g_batching = g_proactor || (on && g_ring.is_open());
}

void SBuf::send_batch() noexcept {
    if (g_proactor) {
        // Through the proactor's ring, now: the sends complete during the submission.
        prep_batch();
        if (int err = g_pro.enter(0); err < 0)
            log_error("io_uring_enter failed: %s", strerror(-err));
        reap_batch();
        return;
    }
    unsigned n = 0;
    const Deferred* what[kMaxDeferred];
    for (unsigned i = 0; i < g_deferred_count; ++i) {
        const Deferred& e = g_deferred[i];
        if (!e.sb)
            continue;
        e.sb->defer_slot_ = 0;  // nothing joins the entry from here on
        g_ring.prep(n, e.sb->fd_, g_slab + e.off, e.len);
        what[n++] = &e;
    }
    int res[kMaxDeferred];
    bool ringed = n > 1 && g_ring.submit(n, res);
    g_ring_batches += ringed;
    if (n > 0 && !ringed) {
        for (unsigned i = 0; i < n; ++i)
            res[i] = send_once(what[i]->sb->fd_, g_slab + what[i]->off, what[i]->len);
    }
    for (unsigned i = 0; i < n; ++i) {
        if (res[i] != static_cast<int>(what[i]->len)) [[unlikely]]
            batch_unsent(*what[i]->sb, g_slab + what[i]->off, what[i]->len, res[i]);
    }
    g_deferred_count = 0;
    g_slab_used = 0;
}

void SBuf::batch_unsent(SBuf& sb, const char* data, uint32_t len, int res) noexcept {
    size_t done = res > 0 ? static_cast<size_t>(res) : 0;
    try {
        sb.unsent_first(data + done, len - done);
    } catch (...) {
        sb.run_soon(EV_WRITE);  // no memory: the socket's own send path reports it
        return;
    }
    sb.backed_up_ = true;
    if (res >= 0 || res == -EAGAIN)
        sb.want_write();
    else
        sb.run_soon(EV_WRITE);  // its own send meets the error and reports it
}

bool SBuf::flush_now() {
    if (fd_ < 0 || ssl_)
        return fd_ >= 0 && (!has_output() || flush_out());
    if (!defer_slot_ && !has_output())
        return true;
    iovec iov{out_.data() + out_pos_, out_.size() - out_pos_};
    size_t sent;
    if (!send_direct(&iov, 1, sent))
        return false;
    consume_out(sent);
    return true;
}

bool SBuf::flush_out() {
    if (fd_ < 0)
        return false;
    if (connecting_ || out_pos_ == out_.size())
        return true;
    iovec iov{out_.data() + out_pos_, out_.size() - out_pos_};
    size_t sent;
    if (!send_iov(&iov, 1, sent)) {
        report(SBufEvent::SocketError);
        return false;
    }
    consume_out(sent);
    return true;
}

void SBuf::consume_out(size_t n) noexcept {
    out_pos_ += n;
    if (out_pos_ == out_.size()) {
        out_.clear();
        out_pos_ = 0;
    }
}

void SBuf::flush_out_before_close() {
    if (fd_ < 0 || connecting_ || out_pos_ == out_.size())
        return;
    iovec iov{out_.data() + out_pos_, out_.size() - out_pos_};
    size_t sent;
    if (send_iov(&iov, 1, sent))
        out_pos_ += sent;
}

bool SBuf::forward_pending() {
    uint32_t pending = parse_ - pos_;
    if (!peer_) {
        pos_ = parse_;
        blocked_ = false;
        return true;
    }
    SBuf& dst = *peer_;
    size_t out_len = dst.out_.size() - dst.out_pos_;
    if (pending == 0 && out_len == 0) {
        if (blocked_) {
            // Our bytes went out through dst.out_ (spilled): that is drained too.
            blocked_ = false;
            owner_->on_sbuf_drained(*this);
            return !closed();
        }
        return true;
    }
    if (dst.connecting_ || dst.fd_ < 0) {
        blocked_ = pending > 0;
        return !blocked_;
    }
    iovec iov[2];
    int cnt = 0;
    if (out_len)
        iov[cnt++] = {dst.out_.data() + dst.out_pos_, out_len};
    if (pending) {
        iov[cnt++] = {buf_ + pos_, pending};
        ++g_forward_sends;
    }
    size_t sent;
    if (!dst.send_iov(iov, cnt, sent)) {
        dst.report(SBufEvent::SocketError);
        return false;
    }
    size_t from_out = std::min(sent, out_len);
    if (from_out)  // (mostly nothing waited in dst.out_)
        dst.consume_out(from_out);
    if (sent < out_len + pending) {
        committed_part(static_cast<uint32_t>(sent - from_out));
        // TLS: the unsent front may sit in a half-written record that must be retried with
        // the same bytes; keep them where only the destination can drop them.
        if (dst.ssl_ && parse_ > pos_)
            spill_pending();
        blocked_ = parse_ > pos_ || dst.has_output();
        return false;
    }
    committed_all();
    blocked_ = false;
    owner_->on_sbuf_drained(*this);
    return !closed();
}

void SBuf::resume() noexcept {
    paused_ = false;
    // EV_TIMEOUT marks "resumed by us" (not a socket edge): if the socket was drained when we
    // stopped, only the buffered bytes are walked, without a recv that would hit EAGAIN.
    run_soon(EV_TIMEOUT);
}

void SBuf::unsuspend(int loop_count) noexcept {
    if (loopcnt_ != 0)
        return;
    loopcnt_ = loop_count < 1 ? 1 : loop_count;
    sock_drained_ = false;  // edges came and went meanwhile: read the socket again
    run_soon(EV_READ);
}

void SBuf::report(SBufEvent ev) {
    if (owner_)
        owner_->on_sbuf_event(*this, ev);
}

void SBuf::handle_event(short what) {
    if (connecting_) {
        if (!(what & EV_WRITE))
            return;
        int err = 0;
        socklen_t len = sizeof(err);
        connecting_ = false;
        if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            errno = err;
            report(SBufEvent::ConnectFailed);
            return;
        }
        report(SBufEvent::Connected);
        if (closed())
            return;
        if (g_proactor && !ssl_) {
            // Connected: the socket leaves the epoll set for the ring.
            loop_unwatch(fd_);
            write_armed_ = false;
            ring_join();
        }
        // The owner queued its startup packet; send it.
        if (!flush_out())
            return;
        what = static_cast<short>(what & ~EV_WRITE);
    }
    if (ssl_)
        what = tls_events(what);
    // Writable is reported with nearly every read edge; act only when something waits.
    if ((what & EV_WRITE) && (has_output() || (peer_ && peer_->blocked_))) {
        handle_write();
        if (closed())
            return;
    }
    if (what & EV_CLOSED)
        rdhup_ = true;
    bool resumed = (what & EV_TIMEOUT) != 0;
    if (what & EV_READ)
        sock_drained_ = false;  // a real edge: new bytes (or EOF) wait in the socket
    if (what & (EV_READ | EV_CLOSED) || resumed)
        handle_read(resumed && sock_drained_ && !ssl_);
}

void SBuf::handle_write() {
    if (has_output() && !flush_out())
        return;
    if (has_output())
        return;
    // Our socket has room again: let a peer that was blocked on us continue.
    if (peer_ && peer_->blocked_) {
        SBuf* p = peer_;
        if (p->forward_flush())
            p->resume();
    }
}

void SBuf::drop_buffer() noexcept {
    if (!buf_)
        return;
    settle_direct();
    if (parked_) {
        parked_ = false;
        --g_parked;
    }
    give_buffer(buf_, cap_, bulk_buf_);
    buf_ = nullptr;
    cap_ = 0;
    bulk_buf_ = false;
}

void SBuf::preload_input(std::span<const uint8_t> bytes) {
    if (bytes.empty())
        return;
    ensure_buffer(bytes.size());
    memcpy(buf_ + end_, bytes.data(), bytes.size());
    end_ += static_cast<uint32_t>(bytes.size());
    run_soon(EV_READ);
}

// A bulk buffer while streaming (if one is free under the cap), else a pkt_buf. Apart from
// ensure_buffer(): the read path takes one every transaction and needs no growing.
void SBuf::attach_buffer() noexcept {
    uint8_t* b = streaming_ ? take_bulk() : nullptr;
    bulk_buf_ = b != nullptr;
    cap_ = b ? kBulkSize : g_bufsize;
    buf_ = b ? b : take_buffer();
    pos_ = parse_ = end_ = 0;
}

bool SBuf::ensure_buffer(size_t need_total) {
    if (!buf_)
        attach_buffer();
    if (need_total <= cap_)
        return true;
    settle_direct();
    size_t cap = std::max<size_t>(need_total, size_t{cap_} * 2);
    auto* nb = static_cast<uint8_t*>(malloc(cap));
    if (!nb)
        abort();
    memcpy(nb, buf_ + pos_, end_ - pos_);
    drop_buffer();
    buf_ = nb;
    cap_ = static_cast<uint32_t>(cap);
    parse_ -= pos_;
    end_ -= pos_;
    pos_ = 0;
    return true;
}

void SBuf::start_streaming() {
    settle_direct();
    if (pos_ != end_)
        return;
    // Only an empty buffer is swapped: nothing to copy.
    uint8_t* b = take_bulk();
    if (!b)
        return;
    drop_buffer();
    buf_ = b;
    cap_ = kBulkSize;
    bulk_buf_ = true;
    pos_ = parse_ = end_ = 0;
}

void SBuf::compact() {
    if (pos_ == 0)
        return;
    settle_direct();
    memmove(buf_, buf_ + pos_, end_ - pos_);
    parse_ -= pos_;
    end_ -= pos_;
    pos_ = 0;
}

bool SBuf::park_buffer() noexcept {
    if (parked_)
        return true;
    if (cap_ != g_bufsize || g_parked >= g_park_limit)
        return false;  // a grown or bulk buffer goes back; so does one over the allowance
    parked_ = true;
    ++g_parked;
    return true;
}

void SBuf::release_buffer_if_empty() {
    if (buf_ && pos_ == end_ && !recv_armed_) {
        // A server's is kept unless grown or a bulk buffer; a client's if it may park it.
        if (keep_buffer_ ? cap_ != g_bufsize : !park_buffer())
            drop_buffer();
        pos_ = parse_ = end_ = 0;
    }
    if (trim_output_)
        trim_output();
}

void SBuf::trim_output() noexcept {
    // A short out_ lives inside the string (SSO) and costs nothing to keep.
    if (!peer_ && out_pos_ == out_.size() && out_.capacity() > std::string().capacity()) {
        std::string().swap(out_);
        out_pos_ = 0;
    }
}

void SBuf::pass_bytes(uint32_t n, PacketAction a) {
    if (a == PacketAction::Forward && peer_) {
        parse_ += n;  // joins the pending range
        return;
    }
    spill_pending();  // dropped bytes end the pending range: it goes out before them
    parse_ += n;
    pos_ = parse_;
}

bool SBuf::process() {
    for (;;) {
        if (closed())
            return false;
        uint32_t avail = end_ - parse_;
        if (remain_ > 0) {
            if (avail == 0)
                return true;
            uint32_t n = std::min(avail, remain_);
            pass_bytes(n, cur_);
            remain_ -= n;
            continue;
        }
        if (paused_)
            return false;
        if (avail == 0)
            return true;
        if (peer_ && !startup_) {
            // Plain messages first, in one owner call; then the one it stopped at goes the
            // ordinary way below.
            uint32_t n = owner_->take_plain_run(*this, {buf_ + parse_, avail});
            parse_ += n;  // Forward to a linked peer: joins the pending range
            avail -= n;
            if (avail == 0)
                return true;
        }
        std::span<const uint8_t> data{buf_ + parse_, avail};
        PacketHeader h;
        Parse r = startup_ ? parse_startup_phase(data, h) : parse_typed_header(data, max_len_, h);
        if (r == Parse::NeedMore) {
            if (cap_ - parse_ < kTypedHeaderLen)
                compact();
            return true;
        }
        if (r == Parse::Bad) {
            if (startup_ && data[0] == kTlsHandshakeByte && !ssl_) {
                report(SBufEvent::TlsHello);  // direct TLS: the owner may start_tls()
                if (closed() || ssl_)
                    return false;
            }
            report(SBufEvent::BadPacket);
            return false;
        }
        uint32_t have = std::min(avail, h.len);
        PacketAction a = owner_->on_packet(*this, h, data.first(have));
        if (closed())
            return false;
        if (have == h.len && (a == PacketAction::Forward || a == PacketAction::Skip)) {
            pass_bytes(have, a);  // the whole packet is here (the common case): done with it
            continue;
        }
        switch (a) {
        case PacketAction::Forward:
        case PacketAction::Skip:
            cur_ = a;
            remain_ = h.len;
            break;
        case PacketAction::Hold:
            if (have == h.len) {  // owner asked to hold a complete packet: nothing more will come
                report(SBufEvent::BadPacket);
                return false;
            }
            if (h.len > hold_limit_ && h.len > cap_) {
                report(SBufEvent::TooLong);
                return false;
            }
            if (cap_ - parse_ < h.len) {
                compact();
                if (cap_ - parse_ < h.len)
                    ensure_buffer(size_t{parse_} + h.len);
            }
            return true;
        case PacketAction::Pause:
            paused_ = true;
            return false;
        case PacketAction::Closed:
            return false;
        }
    }
}

void SBuf::handle_read(bool drained) {
    for (int loop = 0;; ++loop) {
        // An empty buffer with nothing queued for the peer has nothing to walk or send: go
        // straight to recv (a fresh read event usually starts like this).
        bool idle = pos_ == end_ && (!peer_ || !peer_->has_output());
        if (!paused_ && !blocked_ && !idle) {
            process();
            if (closed())
                return;
            if (!forward_flush() && closed())
                return;
        }
        if (eof_) {
            // Bytes already read still go to the peer first; the unblock path resumes us.
            if (blocked_ && pos_ < end_)
                return;
            report(SBufEvent::Eof);
            return;
        }
        if (ring_) {
            // The ring reads for us: one RECV in flight while we want input. A client with
            // nothing buffered gives its buffer back first (idle clients hold none), unless
            // its reads keep filling it (COPY: the next read goes on into it).
            if (!recv_armed_ && loopcnt_ != 0) {
                if (buf_ && pos_ == end_ && !blocked_ && !paused_) {
                    // Empty: an idle client's buffer goes back (the last read found the
                    // socket drained) unless it may park it, and a grown one, or a bulk one
                    // no longer streaming, is swapped for a pkt_buf one as
                    // release_buffer_if_empty() does.
                    bool odd = cap_ != g_bufsize && !(bulk_buf_ && streaming_);
                    bool quiet = !odd && !keep_buffer_ && ring_short_ && !streaming_ &&
                                 !park_buffer();
                    if (quiet || odd) {
                        drop_buffer();
                        pos_ = parse_ = end_ = 0;
                    }
                }
                arm_recv();
            }
            break;
        }
        if (drained)
            break;
        if (loop >= loopcnt_) {
            if (loopcnt_ == 0)
                return;  // suspended: no recv (unsuspend() comes back)
            run_soon(EV_READ);  // fairness: let others run, come back next turn
            return;
        }
        if (!buf_) [[unlikely]]
            attach_buffer();
        else if (streaming_ && !bulk_buf_ && pos_ == end_ && cap_ == g_bufsize) [[unlikely]]
            start_streaming();
        if (end_ == cap_) {
            compact();
            if (end_ == cap_)
                break;  // full: resume()/unblock re-triggers the read
        }
        size_t space = cap_ - end_;
        ssize_t n;
        if (!ssl_) {
            n = ::recv(fd_, buf_ + end_, space, 0);
        } else {
            n = tls_read(buf_ + end_, space);
            if (closed())
                return;
        }
        if (n > 0) {
            end_ += static_cast<uint32_t>(n);
            // As much as a pkt_buf holds was waiting: the next empty buffer is a bulk one.
            streaming_ = static_cast<size_t>(n) >= g_bufsize;
            stats_.recv_bytes += static_cast<uint64_t>(n);
            // A short read emptied the socket; ET reports new bytes. Not so with TLS: a short
            // SSL_read says nothing about the socket or OpenSSL's buffers.
            if (static_cast<size_t>(n) < space && !rdhup_ && !ssl_)
                drained = sock_drained_ = true;
            continue;
        }
        if (n == 0) {
            eof_ = true;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            sock_drained_ = true;
            break;
        }
        report(SBufEvent::SocketError);
        return;
    }
    if (!closed() && !blocked_ && !paused_)
        release_buffer_if_empty();
}

Parse SBuf::parse_startup_phase(std::span<const uint8_t> data, PacketHeader& h) noexcept {
    if (!raw_byte_)
        return parse_startup_header(data, h);
    h.type = data[0];  // process() never calls this without input
    h.hdr_len = 0;
    h.len = 1;
    raw_byte_ = startup_ = false;
    return Parse::Ok;
}

// ---------------------------------------------------------------------------------------------
// TLS

bool SBuf::start_tls(SSL* ssl, bool replay_input) {
    if (defer_slot_)
        flush_now();  // the plain bytes before TLS (the 'S' answer) go first
    if (ring_ && fd_ >= 0 && !ssl_ && !leave_ring(replay_input)) {
        SSL_free(ssl);
        return false;
    }
    if (fd_ < 0 || ssl_ || has_output()) {
        SSL_free(ssl);
        return false;
    }
    ssl_ = ssl;  // freed by close() from here on
    tls_ = TlsState::Handshake;
    if (SSL_set_fd(ssl_, fd_) != 1) {
        tls_note_error(ssl_, SSL_ERROR_SSL);
        tls_ = TlsState::Failed;
        return false;
    }
    if (replay_input && end_ > parse_) {
        // Direct TLS: the first bytes of the ClientHello are already in our buffer. OpenSSL
        // reads them back through a buffering BIO placed in front of the socket.
        BIO* sock = SSL_get_rbio(ssl_);
        BIO* pre = BIO_new(BIO_f_buffer());
        if (!pre || BIO_up_ref(sock) != 1) {
            BIO_free(pre);
            tls_note_error(ssl_, SSL_ERROR_SSL);
            tls_ = TlsState::Failed;
            return false;
        }
        BIO_push(pre, sock);  // pre now holds the reference taken above
        if (BIO_set_buffer_read_data(pre, buf_ + parse_, static_cast<long>(end_ - parse_)) <= 0) {
            BIO_free_all(pre);
            tls_note_error(ssl_, SSL_ERROR_SSL);
            tls_ = TlsState::Failed;
            return false;
        }
        SSL_set0_rbio(ssl_, pre);
        pos_ = parse_ = end_;
    }
    // OpenSSL may wait for either direction at any time (handshake, SSL_write's records):
    // TLS sockets report writable for good, one epoll_ctl per TLS connection.
    want_write();
    // The handshake runs from the event loop: a connecting side must send its ClientHello
    // even though no read event is due.
    run_soon(EV_READ);
    return true;
}

size_t SBuf::tls_describe(char* buf, size_t size) const noexcept {
    return sluice::tls_describe(tls_ == TlsState::Up ? ssl_ : nullptr, buf, size);
}

// OpenSSL may need the other direction of the socket: a handshake or an SSL_read waiting to
// write, an SSL_write waiting to read. Route the event to the side that is waiting.
short SBuf::tls_events(short what) noexcept {
    if ((what & EV_WRITE) && (tls_ == TlsState::Handshake || tls_read_wants_write_)) {
        tls_read_wants_write_ = false;
        what = static_cast<short>(what | EV_READ);
    }
    if ((what & EV_READ) && tls_write_wants_read_) {
        tls_write_wants_read_ = false;
        what = static_cast<short>(what | EV_WRITE);
    }
    return what;
}

SBuf::HsStep SBuf::tls_handshake() {
    ERR_clear_error();  // SSL_get_error() needs an empty queue (libcrypto is used elsewhere)
    int r = SSL_do_handshake(ssl_);
    if (r == 1) {
        tls_ = TlsState::Up;
        report(SBufEvent::TlsReady);
        if (closed() || !flush_out())
            return HsStep::Stop;
        return HsStep::Done;
    }
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return HsStep::Wait;
    tls_note_error(ssl_, e);
    tls_ = TlsState::Failed;
    report(SBufEvent::TlsFailed);
    return HsStep::Stop;
}

// Like recv(): > 0 bytes, 0 at EOF, -1 with errno (EAGAIN: nothing more for now). While the
// handshake runs it drives the handshake instead; the sbuf may be closed on return.
ssize_t SBuf::tls_read(uint8_t* dst, size_t len) {
    if (tls_ != TlsState::Up) {
        if (tls_ != TlsState::Handshake) {
            errno = EPROTO;
            return -1;
        }
        switch (tls_handshake()) {
        case HsStep::Done:
            break;
        case HsStep::Wait:
            errno = EAGAIN;
            return -1;
        case HsStep::Stop:
            return -1;  // the caller sees closed()
        }
    }
    ERR_clear_error();
    int r = SSL_read(ssl_, dst, static_cast<int>(std::min<size_t>(len, INT_MAX)));
    if (r > 0)
        return r;
    int saved_errno = errno;
    int e = SSL_get_error(ssl_, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        tls_read_wants_write_ = true;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;  // close_notify, or EOF without it (SSL_OP_IGNORE_UNEXPECTED_EOF)
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0 && saved_errno == EINTR) {
            errno = EINTR;
            return -1;
        }
        [[fallthrough]];
    default:
        errno = saved_errno;
        tls_note_error(ssl_, e);
        tls_ = TlsState::Failed;
        errno = saved_errno ? saved_errno : EPROTO;
        return -1;
    }
}

// Like send_iov(): pieces go out one SSL_write after another (partial writes on: each call
// returns after one record). After WANT_WRITE OpenSSL must be called again with the same
// bytes first: the unsent tail always stays at the front of what the caller passes next.
bool SBuf::tls_send_iov(const iovec* iov, int cnt, size_t& sent) {
    sent = 0;
    if (tls_ != TlsState::Up)
        return tls_ == TlsState::Handshake;  // nothing can go before the handshake ends
    for (int i = 0; i < cnt; ++i) {
        const char* p = static_cast<const char*>(iov[i].iov_base);
        size_t left = iov[i].iov_len;
        while (left > 0) {
            ERR_clear_error();
            int r = SSL_write(ssl_, p, static_cast<int>(std::min<size_t>(left, INT_MAX)));
            if (r > 0) {
                sent += static_cast<size_t>(r);
                p += r;
                left -= static_cast<size_t>(r);
                continue;
            }
            int saved_errno = errno;
            int e = SSL_get_error(ssl_, r);
            switch (e) {
            case SSL_ERROR_WANT_WRITE:
                stats_.sent_bytes += sent;
                return true;
            case SSL_ERROR_WANT_READ:
                tls_write_wants_read_ = true;
                stats_.sent_bytes += sent;
                return true;
            default:
                errno = saved_errno;
                tls_note_error(ssl_, e);
                tls_ = TlsState::Failed;
                errno = saved_errno ? saved_errno : EPROTO;
                return false;
            }
        }
    }
    stats_.sent_bytes += sent;
    return true;
}

}  // namespace sluice

// ---------------------------------------------------------------------------------------------
// The proactor

namespace sluice {

bool SBuf::proactor() noexcept {
    return g_proactor;
}

bool sbuf_open_proactor(int epoll_fd, std::string& why) {
    if (!g_pro.open(1024, why) ||
        !g_pro.add_buffers(kSelectGroup, kSelectBuffers, kSelectSize, why)) {
        g_pro.close();
        return false;
    }
    g_proactor = true;
    g_batching = true;
    g_pro_epfd = epoll_fd;
    g_ep_polled = false;
    return true;
}

void sbuf_close_proactor() noexcept {
    if (g_proactor)
        SBuf::send_batch();
    g_pro.close();
    g_proactor = false;
    g_batching = false;
    g_by_fd.clear();
}

void SBuf::ring_join() noexcept {
    ring_ = true;
    recv_armed_ = ring_short_ = false;
    ring_gen_ = next_gen();
    auto i = static_cast<size_t>(fd_);
    if (g_by_fd.size() <= i)
        g_by_fd.resize(i + 1 + i / 2);
    g_by_fd[i] = this;
    arm_recv();
}

void SBuf::arm_recv() noexcept {
    // An sbuf with a buffer (a server, a client in the middle of a message) has the kernel
    // read into it; one without (an idle client) has it pick a provided buffer when data
    // arrives, whose bytes are copied into a buffer taken then.
    bool select = !buf_ && !keep_buffer_;
    if (!select) {
        if (!buf_)
            attach_buffer();
        else if (pos_ == end_)
            pos_ = parse_ = end_ = 0;  // empty: the read goes to the front
        if (streaming_ && !bulk_buf_ && pos_ == end_ && cap_ == g_bufsize)
            start_streaming();
        if (end_ == cap_) {
            compact();
            if (end_ == cap_)
                return;  // full: the walk or the peer's drain comes back here
        }
    }
    ring_rgen_ = next_gen();
    ring_sqe_ = g_pro.next_pos();
    io_uring_sqe& e = g_pro.sqe();
    e.opcode = IORING_OP_RECV;
    e.fd = fd_;
    ring_select_ = select;
    if (select) {
        e.len = kSelectSize;
        e.flags = IOSQE_BUFFER_SELECT;
        e.buf_group = kSelectGroup;
    } else {
        e.addr = reinterpret_cast<uintptr_t>(buf_ + end_);
        e.len = cap_ - end_;
    }
    // The last read did not fill what it asked for: the socket was empty then, so the kernel
    // waits for data instead of trying a read that would find nothing.
    if (ring_short_)
        e.ioprio = IORING_RECVSEND_POLL_FIRST;
    e.user_data = recv_tag();
    recv_armed_ = true;
    ring_asked_ = e.len;
}

void SBuf::settle_recv() noexcept {
    if (!recv_armed_)
        return;
    recv_armed_ = false;
    if (io_uring_sqe* q = g_pro.unsubmitted(ring_sqe_)) {
        // Not submitted yet: it never runs.
        memset(q, 0, sizeof *q);
        q->opcode = IORING_OP_NOP;
        q->flags = IOSQE_CQE_SKIP_SUCCESS;
        q->user_data = kQuietTag;
        return;
    }
    uint64_t tag = recv_tag();
    // Synchronous: a RECV into buf_ must be over before buf_ changes, and one that read
    // something must have its bytes counted now (SUSPEND, TLS).
    if (g_pro.cancel_now(tag) == 0)
        return;  // cancelled before it read anything; its completion is stale (generation)
    // It completed, or its completion waits to be run (DEFER_TASKRUN): run it, take it.
    int res = 0;
    uint32_t flags = 0;
    for (int tries = 0; !g_pro.take(tag, kQuietTag, res, flags); ++tries) {
        if (tries == 3) {
            log_error("io_uring: a read on fd %d could not be settled", fd_);
            abort();
        }
        g_pro.enter(0);
    }
    if (flags & IORING_CQE_F_BUFFER) {
        provided_input(this, res, flags);
        if (res > 0)
            run_soon(EV_TIMEOUT);
    } else if (res > 0) {
        end_ += static_cast<uint32_t>(res);
        stats_.recv_bytes += static_cast<uint64_t>(res);
        run_soon(EV_TIMEOUT);  // walk what arrived
    } else if (res != -ECANCELED) {
        eof_ = true;  // end of stream or an error: the walk reports it
        run_soon(EV_TIMEOUT);
    }
}

bool SBuf::leave_ring(bool more_input_ok) noexcept {
    uint32_t had = end_;
    settle_recv();  // what the RECV read meanwhile is appended to the input
    if (end_ != had && !more_input_ok) {
        // Bytes after the packet that starts TLS, sent before our answer could be seen:
        // they would be taken as encrypted (the SSLRequest buffer-stuffing case).
        log_warning("TLS start: %u bytes arrived after the request before the answer",
                    end_ - had);
        return false;
    }
    if (write_armed_)
        cancel_async(pollout_tag());
    g_by_fd[static_cast<size_t>(fd_)] = nullptr;
    ring_ = false;
    write_armed_ = backed_up_;  // a send waiting for room asks the epoll set for it
    return loop_add(fd_, this, write_armed_);
}

void SBuf::cancel_async(uint64_t tag) noexcept {
    io_uring_sqe& e = g_pro.sqe();
    e.opcode = IORING_OP_ASYNC_CANCEL;
    e.addr = tag;
    e.flags = IOSQE_CQE_SKIP_SUCCESS;
    e.user_data = kQuietTag;
}

void SBuf::ring_cancel() noexcept {
    if (recv_armed_ && ring_select_) {
        // Nothing of ours is at stake (the kernel's buffer, given back if it was filled):
        // the cancel goes with the next submission.
        cancel_async(recv_tag());
        recv_armed_ = false;
    }
    settle_recv();
    if (write_armed_) {
        cancel_async(pollout_tag());
        write_armed_ = false;
    }
}

void SBuf::provided_input(SBuf* sb, int res, uint32_t flags) noexcept {
    auto bid = static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
    if (sb && res > 0)
        sb->ring_input(g_pro.buffer(kSelectGroup, bid), static_cast<uint32_t>(res));
    g_pro.recycle(kSelectGroup, bid);
}

void SBuf::ring_input(const uint8_t* src, uint32_t n) noexcept {
    if (!buf_)
        attach_buffer();
    if (cap_ - end_ < n)
        compact();
    if (cap_ - end_ < n)
        ensure_buffer(size_t{end_} + n);
    memcpy(buf_ + end_, src, n);
    end_ += n;
    streaming_ = n >= g_bufsize;
    stats_.recv_bytes += n;
}

void SBuf::on_ring_recv(SBuf* sb, int res) noexcept {
    uint32_t asked = sb->ring_asked_;
    sb->recv_armed_ = false;
    if (res == -ECANCELED)
        return;  // we cancelled it (suspend)
    short what = EV_READ;
    if (res > 0) {
        sb->ring_short_ = static_cast<uint32_t>(res) < asked;
        if (!sb->ring_select_) {  // read into buf_ at end_
            sb->end_ += static_cast<uint32_t>(res);
            sb->streaming_ = static_cast<uint32_t>(res) >= g_bufsize;
            sb->stats_.recv_bytes += static_cast<uint64_t>(res);
        }
    } else if (res == 0) {
        sb->eof_ = true;
    } else if (res == -ENOBUFS || res == -EAGAIN || res == -EINTR) {
        sb->ring_short_ = false;
        sb->run_soon(EV_READ);  // read again in the next submission (buffers given back)
        return;
    } else {
        errno = -res;
        sb->report(SBufEvent::SocketError);
        return;
    }
    if (sb->pend_what_ != 0) {
        what = static_cast<short>(what | sb->pend_what_);
        sb->forget_pending();
    }
    sb->handle_event(what);
}

[[gnu::always_inline]] inline void SBuf::prep_batch() noexcept {
    // Each send completes during the submission (MSG_DONTWAIT), and one that sent everything
    // posts nothing (CQE_SKIP_SUCCESS); MSG_WAITALL makes a short one a failure, so that it
    // posts its count.
    g_prepped = 0;
    for (unsigned i = 0; i < g_deferred_count; ++i) {
        Deferred& d = g_deferred[i];
        if (!d.sb)
            continue;
        d.sb->defer_slot_ = 0;
        io_uring_sqe& e = g_pro.sqe();
        e.opcode = IORING_OP_SEND;
        e.fd = d.sb->fd_;
        e.addr = reinterpret_cast<uintptr_t>(g_slab + d.off);
        e.len = d.len;
        e.msg_flags = MSG_DONTWAIT | MSG_WAITALL | MSG_NOSIGNAL;
        e.flags = IOSQE_CQE_SKIP_SUCCESS;
        e.user_data = ring_tag(kOpSend, i, 0);
        ++g_prepped;
    }
    if (g_prepped)
        ++g_ring_batches;
}

[[gnu::always_inline]] inline void SBuf::reap_batch() noexcept {
    // The batch's failures: their bytes go back to the front of their sockets' output before
    // anything else runs.
    if (g_prepped) {
            for (unsigned i = 0, n = g_pro.cqes_ready(); i < n; ++i) {
            io_uring_cqe& c = g_pro.cqe_at(i);
            if (tag_op(c.user_data) != kOpSend)
                continue;
            Deferred& d = g_deferred[tag_index(c.user_data)];
            c.user_data = kQuietTag;
            batch_unsent(*d.sb, g_slab + d.off, d.len, c.res);
        }
        g_prepped = 0;
    }
    g_deferred_count = 0;
    g_slab_used = 0;
}

void SBuf::ring_turn(bool wait, void (*epoll_ready)()) noexcept {
    prep_batch();
    if (!g_ep_polled) {
        // One-shot: armed again after each report, and a set still ready then reports at once
        // (a listener left with connections to accept).
        io_uring_sqe& e = g_pro.sqe();
        e.opcode = IORING_OP_POLL_ADD;
        e.fd = g_pro_epfd;
        e.poll32_events = POLLIN;
        e.user_data = ring_tag(kOpEpoll, 0, 0);
        g_ep_polled = true;
    }
    if (int err = g_pro.enter(wait ? 1 : 0); err < 0)
        log_error("io_uring_enter failed: %s", strerror(-err));
    time_invalidate();
    reap_batch();
    unsigned n = g_pro.cqes_ready();
    for (unsigned i = 0; i < n; ++i) {
        const io_uring_cqe& c = g_pro.cqe_at(i);
        uint64_t t = c.user_data;
        switch (tag_op(t)) {
        case kOpRecv: {
            SBuf* sb = sbuf_of(t);
            bool live = sb && sb->recv_armed_ && sb->ring_rgen_ == tag_gen(t);
            if (c.flags & IORING_CQE_F_BUFFER)  // copied out if still wanted, given back
                provided_input(live ? sb : nullptr, c.res, c.flags);
            if (live)
                on_ring_recv(sb, c.res);
            break;
        }
        case kOpPollOut: {
            SBuf* sb = sbuf_of(t);
            if (sb && sb->ring_gen_ == tag_gen(t) && sb->write_armed_) {
                sb->write_armed_ = false;
                on_ready(sb, EPOLLOUT);
            }
            break;
        }
        case kOpEpoll:
            g_ep_polled = false;
            epoll_ready();
            break;
        default:
            break;  // a cancel or a provide that failed (nothing was pending): nothing to do
        }
        if (has_pending())
            run_pending();
    }
    g_pro.consume(n);
    if (has_pending())
        run_pending();
}

}  // namespace sluice
