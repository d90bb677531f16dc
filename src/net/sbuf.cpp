// Stream buffer: reads, frames, forwards. See sbuf.h for the buffer layout and ordering rule.
#include "sluice/net/sbuf.h"

#include "sluice/util/time.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace sluice {
namespace {

uint32_t g_bufsize = 4096;
std::vector<uint8_t*> g_free_bufs;  // pooled receive buffers of g_bufsize bytes
uint64_t g_forward_sends = 0;

uint8_t* take_buffer() {
    if (!g_free_bufs.empty()) {
        uint8_t* b = g_free_bufs.back();
        g_free_bufs.pop_back();
        return b;
    }
    auto* b = static_cast<uint8_t*>(malloc(g_bufsize));
    if (!b)
        abort();
    return b;
}

void give_buffer(uint8_t* b, uint32_t cap) {
    // Grown buffers (held big messages) go back to the allocator; keep a bounded pool.
    if (cap == g_bufsize && g_free_bufs.size() < 1024)
        g_free_bufs.push_back(b);
    else
        free(b);
}

}  // namespace

void sbuf_release_buffers() noexcept {
    for (uint8_t* b : g_free_bufs)
        free(b);
    g_free_bufs.clear();
    g_free_bufs.shrink_to_fit();
}

void sbuf_set_buffer_size(uint32_t size) noexcept {
    for (uint8_t* b : g_free_bufs)
        free(b);
    g_free_bufs.clear();
    g_bufsize = size < 512 ? 512 : size;
}

uint64_t SBuf::forward_sends() noexcept {
    return g_forward_sends;
}

SBuf::~SBuf() {
    close();
}

bool SBuf::attach(event_base* base, int fd, SBufOwner* owner, bool connecting) {
    fd_ = fd;
    owner_ = owner;
    connecting_ = connecting;
    eof_ = rdhup_ = false;
    paused_ = blocked_ = false;
    remain_ = 0;
    pos_ = parse_ = end_ = 0;
    out_.clear();
    out_pos_ = 0;
    stats_ = {};
    // EV_CLOSED (EPOLLRDHUP) tells us when data and the peer's FIN arrived in one wakeup, so a
    // short read is not mistaken for "drained" and the EOF is not missed.
    ev_ = event_new(base, fd, EV_READ | EV_WRITE | EV_CLOSED | EV_ET | EV_PERSIST, &SBuf::on_event,
                    this);
    if (!ev_ || event_add(ev_, nullptr) != 0) {
        if (ev_)
            event_free(ev_);
        ev_ = nullptr;
        ::close(fd_);
        fd_ = -1;
        return false;
    }
    return true;
}

void SBuf::close() {
    unlink();
    if (ev_) {
        event_free(ev_);
        ev_ = nullptr;
    }
    if (fd_ >= 0) {
        ::close(fd_);
        fd_ = -1;
    }
    if (buf_) {
        give_buffer(buf_, cap_);
        buf_ = nullptr;
        cap_ = 0;
    }
    pos_ = parse_ = end_ = remain_ = 0;
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
    pos_ = parse_;
}

bool SBuf::send_iov(iovec* iov, int cnt, size_t& sent) {
    sent = 0;
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = static_cast<size_t>(cnt);
    for (;;) {
        ssize_t n = ::sendmsg(fd_, &mh, MSG_NOSIGNAL);
        if (n >= 0) {
            sent = static_cast<size_t>(n);
            stats_.sent_bytes += sent;
            return true;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return true;
        return false;
    }
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
    out_pos_ += sent;
    if (out_pos_ == out_.size()) {
        out_.clear();
        out_pos_ = 0;
    }
    return true;
}

bool SBuf::forward_flush() {
    uint32_t pending = parse_ - pos_;
    if (!peer_) {
        pos_ = parse_;
        blocked_ = false;
        return true;
    }
    SBuf& dst = *peer_;
    size_t out_len = dst.out_.size() - dst.out_pos_;
    if (pending == 0 && out_len == 0) {
        blocked_ = false;
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
    dst.out_pos_ += from_out;
    if (dst.out_pos_ == dst.out_.size()) {
        dst.out_.clear();
        dst.out_pos_ = 0;
    }
    pos_ += static_cast<uint32_t>(sent - from_out);
    if (sent < out_len + pending) {
        blocked_ = pending > 0 || dst.has_output();
        return false;
    }
    blocked_ = false;
    owner_->on_sbuf_drained(*this);
    return !closed();
}

void SBuf::resume() noexcept {
    paused_ = false;
    if (ev_)
        event_active(ev_, EV_READ, 0);
}

void SBuf::report(SBufEvent ev) {
    if (owner_)
        owner_->on_sbuf_event(*this, ev);
}

void SBuf::on_event(evutil_socket_t, short what, void* arg) noexcept {
    time_update();
    static_cast<SBuf*>(arg)->handle_event(what);
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
        // The owner queued its startup packet; send it.
        if (!flush_out())
            return;
        what = static_cast<short>(what & ~EV_WRITE);
    }
    if (what & EV_WRITE) {
        handle_write();
        if (closed())
            return;
    }
    if (what & EV_CLOSED)
        rdhup_ = true;
    if (what & (EV_READ | EV_CLOSED))
        handle_read();
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

bool SBuf::ensure_buffer(size_t need_total) {
    if (!buf_) {
        buf_ = take_buffer();
        cap_ = g_bufsize;
        pos_ = parse_ = end_ = 0;
    }
    if (need_total <= cap_)
        return true;
    size_t cap = std::max<size_t>(need_total, size_t{cap_} * 2);
    auto* nb = static_cast<uint8_t*>(malloc(cap));
    if (!nb)
        abort();
    memcpy(nb, buf_ + pos_, end_ - pos_);
    give_buffer(buf_, cap_);
    buf_ = nb;
    cap_ = static_cast<uint32_t>(cap);
    parse_ -= pos_;
    end_ -= pos_;
    pos_ = 0;
    return true;
}

void SBuf::compact() {
    if (pos_ == 0)
        return;
    memmove(buf_, buf_ + pos_, end_ - pos_);
    parse_ -= pos_;
    end_ -= pos_;
    pos_ = 0;
}

void SBuf::release_buffer_if_empty() {
    if (buf_ && pos_ == end_) {
        give_buffer(buf_, cap_);
        buf_ = nullptr;
        cap_ = 0;
        pos_ = parse_ = end_ = 0;
    }
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
            if (cur_ == PacketAction::Forward && peer_) {
                parse_ += n;
            } else {
                spill_pending();
                parse_ += n;
                pos_ = parse_;
            }
            remain_ -= n;
            continue;
        }
        if (paused_)
            return false;
        if (avail == 0)
            return true;
        std::span<const uint8_t> data{buf_ + parse_, avail};
        PacketHeader h;
        Parse r = startup_ ? parse_startup_header(data, h) : parse_typed_header(data, max_len_, h);
        if (r == Parse::NeedMore) {
            if (cap_ - parse_ < kTypedHeaderLen)
                compact();
            return true;
        }
        if (r == Parse::Bad) {
            report(SBufEvent::BadPacket);
            return false;
        }
        uint32_t have = std::min(avail, h.len);
        PacketAction a = owner_->on_packet(*this, h, data.first(have));
        if (closed())
            return false;
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

void SBuf::handle_read() {
    bool drained = false;
    for (int loop = 0;; ++loop) {
        if (!paused_ && !blocked_) {
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
        if (drained)
            break;
        if (loop >= loopcnt_) {
            event_active(ev_, EV_READ, 0);  // fairness: let others run, come back next turn
            return;
        }
        ensure_buffer(0);
        if (end_ == cap_) {
            compact();
            if (end_ == cap_)
                break;  // full: resume()/unblock re-triggers the read
        }
        size_t space = cap_ - end_;
        ssize_t n = ::recv(fd_, buf_ + end_, space, 0);
        if (n > 0) {
            end_ += static_cast<uint32_t>(n);
            stats_.recv_bytes += static_cast<uint64_t>(n);
            if (static_cast<size_t>(n) < space && !rdhup_)
                drained = true;  // a short read emptied the socket; ET reports new bytes
            continue;
        }
        if (n == 0) {
            eof_ = true;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        report(SBufEvent::SocketError);
        return;
    }
    if (!closed() && !blocked_ && !paused_)
        release_buffer_if_empty();
}

}  // namespace sluice
