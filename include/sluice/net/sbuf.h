// The stream buffer: one per connection. It reads from its socket, walks message headers,
// asks its owner what to do with each message and moves bytes to the peer sbuf's socket.
//
// The receive buffer is pkt_buf bytes from a pool, taken when input arrives and given back
// when it is consumed (server connections keep theirs); while reads keep filling it, a bulk
// buffer (kBulkBufferSize) replaces it. Layout (offsets into buf_):
//   [0, pos_)        consumed: sent to the peer or skipped
//   [pos_, parse_)   decided "forward" but not yet sent (the pending range)
//   [parse_, end_)   received, not yet shown to the owner
// Bytes we build ourselves go to out_ (sent on this socket before anything forwarded to it).
// Ordering rule: anything appended to X.out_ is newer than X.peer's pending range, so the
// pending range is first moved ("spilled") into X.out_.
//
// Each socket is in the loop's epoll set (net/loop.h), edge-triggered for reading and the
// peer's shutdown, from attach() until close() closes the fd; for writing too from its first
// send that could not complete (or from the start: connecting, TLS), which is the only
// epoll_ctl after attach(). Pausing is a flag, never an epoll_ctl. Reads go until a short read or EAGAIN; a paused or blocked sbuf is resumed
// without a syscall: it joins the loop's pending list, run right after the ready socket whose
// callback queued it (or at the end of the turn when queued from elsewhere).
//
// TLS: after start_tls() the same buffers and events carry TLS. Reads use SSL_read until
// SSL_ERROR_WANT_READ (never stopping at a short read: decrypted bytes may wait inside OpenSSL
// while the socket is quiet, and edge-triggered events would not report them again); writes
// use SSL_write piece by piece. Bytes inside a TLS record that could not be written completely
// are always in the destination's out_, so that the retry OpenSSL requires sees the same
// bytes even if the source unlinks. The plain path only tests ssl_ (no extra syscalls).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <event2/event.h>  // EV_READ and friends name the readiness bits
#include <openssl/types.h>

#include "sluice/proto/packet.h"

namespace sluice {

class SBuf;

enum class PacketAction : uint8_t {
    Forward,  // stream the whole packet to the peer as its bytes arrive
    Skip,     // drop the whole packet (we answered locally or it is void)
    Hold,     // call again when the whole packet is in the buffer
    Pause,    // stop here; the owner calls resume() later; the packet is shown again
    Closed,   // the owner closed this sbuf; touch nothing
};

enum class SBufEvent : uint8_t {
    Eof,          // peer closed
    SocketError,  // recv/send failed
    BadPacket,    // impossible header
    TooLong,      // a held packet exceeds the hold limit
    Connected,    // outgoing connect finished (socket writable)
    ConnectFailed,
    TlsReady,   // start_tls() handshake finished; the sbuf flushes out_ after the event
    TlsFailed,  // TLS handshake failed (tls_last_error() says why); the owner must close
    TlsHello,   // startup mode and the input starts with a TLS record (direct TLS): the owner
                // calls start_tls() or does nothing (then BadPacket follows)
};

// Implemented by Client and Server. Called only from inside SBuf callbacks.
class SBufOwner {
public:
    // A packet starts at the front of the unprocessed input. `data` holds the bytes of it
    // that have arrived (header included; data.size() == hdr.len when complete).
    virtual PacketAction on_packet(SBuf& sb, const PacketHeader& hdr,
                                   std::span<const uint8_t> data) = 0;
    // Connection events; for Eof/SocketError/BadPacket/TooLong/ConnectFailed/TlsFailed the
    // owner must close the sbuf. Returns nothing: afterwards the sbuf checks closed().
    virtual void on_sbuf_event(SBuf& sb, SBufEvent ev) = 0;
    // Everything this sbuf decided to forward has reached the peer's socket.
    virtual void on_sbuf_drained(SBuf& sb) = 0;
    // The fast walk (most messages are plain: rows, tags, the client's unnamed extended
    // queries). `data` is the unparsed input. Returns how many bytes at its front are whole
    // messages the owner took as Forward, each with exactly the effect on_packet() would have
    // had; the sbuf forwards them without showing them again. The owner stops at the first
    // message it cannot take that way (whole_message_at() walks them); on_packet() sees that
    // one. Called only while the sbuf is linked to a peer, past the startup phase and not
    // paused; it must not close, pause or write to either sbuf.
    virtual uint32_t take_plain_run(SBuf&, std::span<const uint8_t>) { return 0; }

protected:
    ~SBufOwner() = default;
};

struct SBufStats {
    uint64_t recv_bytes = 0;
    uint64_t sent_bytes = 0;
};

class SBuf {
public:
    SBuf() = default;
    SBuf(const SBuf&) = delete;
    SBuf& operator=(const SBuf&) = delete;
    ~SBuf();

    // Takes ownership of a connected (or connecting) non-blocking fd and adds it to the loop.
    // False: it could not be added (the fd is closed).
    [[nodiscard]] bool attach(int fd, SBufOwner* owner, bool connecting);
    // Closes the fd (which leaves the loop's set) and unlinks the peer. Safe to call twice.
    void close();
    bool closed() const noexcept { return fd_ < 0; }
    int fd() const noexcept { return fd_; }

    // First packet(s) are untyped startup-phase packets until set_startup(false).
    void set_startup(bool on) noexcept { startup_ = on; }
    void set_max_packet(uint32_t max_len) noexcept { max_len_ = max_len; }
    uint32_t max_packet() const noexcept { return max_len_; }
    void set_hold_limit(uint32_t n) noexcept { hold_limit_ = n; }
    void set_loop_count(int n) noexcept {
        if (loopcnt_ != 0)  // 0: suspended, until unsuspend()
            loopcnt_ = n < 1 ? 1 : n;
    }
    // Keep the receive buffer while empty (server connections); clients give it back so that
    // an idle client holds none.
    void set_keep_buffer(bool on) noexcept { keep_buffer_ = on; }
    // Free out_'s heap block whenever this sbuf goes idle (nothing to send, no peer linked):
    // for clients, which are many and mostly idle. Servers keep theirs (reused every
    // transaction for injected messages).
    void set_trim_output(bool on) noexcept { trim_output_ = on; }
    // Frees out_'s heap block now if nothing waits in it and no peer is linked.
    void trim_output() noexcept;

    // Links two sbufs so that forwarded bytes of each go to the other.
    static void link(SBuf& a, SBuf& b) noexcept;
    // Unlinks from the peer. Pending forward bytes of either side are dropped.
    void unlink() noexcept;
    SBuf* peer() const noexcept { return peer_; }

    // Queues owner-built bytes for this socket (after anything the peer already forwarded).
    void queue(std::string_view bytes);
    std::string& out_for_append();  // spills the peer's pending range, returns out_
    // Tries to send out_ now. False = socket error (the owner was told).
    bool flush_out();
    // One send attempt of out_ by a caller about to close(): a failure is not reported (the
    // owner is already closing for its own reason).
    void flush_out_before_close();
    bool has_output() const noexcept { return out_pos_ < out_.size(); }
    // True while the last forward to the peer could not be completed.
    bool blocked() const noexcept { return blocked_; }
    bool paused() const noexcept { return paused_; }
    // Nothing of the connection is held here: no input not yet passed on, no forward or
    // output not yet sent, no message half forwarded (SUSPEND, online restart). Bytes in the
    // turn's send batch do not count: they leave at the end of the turn whatever happens
    // (SUSPEND waits for them through has_deferred(); SHOW FDS sends the batch first). A
    // client that just got its reply that way is at rest, so SUSPEND stops reading it before
    // it can send its next query, as without the batch.
    bool at_rest() const noexcept {
        return end_ == pos_ && remain_ == 0 && out_pos_ == out_.size();
    }
    // Bytes for this socket wait in the loop turn's send batch (see "Send batch" below).
    bool has_deferred() const noexcept { return defer_slot_ != 0; }
    // Sends the batched bytes and out_ now, in one system call (a caller about to write to
    // the fd itself). False = socket error (not reported).
    bool flush_now();

    // What went to the peer (sent, or in its out_) ends inside a message: the first part of
    // it went, the rest has not. Unlinked now, the peer's stream could only be closed.
    bool ends_inside_message() const noexcept { return pos_left_ != 0; }
    // This socket's output ends inside a message forwarded from a peer unlinked since (the
    // owner marks it, from the peer's ends_inside_message()): anything queued now would be
    // read as the rest of that message (an ErrorResponse as the end of a DataRow, say).
    void mark_cut() noexcept { cut_ = true; }
    bool cut() const noexcept { return cut_; }

    // Bytes bound for the peer are on their way: a message partly walked, or walked bytes
    // not sent yet. The peer's stream is then not at a message boundary, and cut here (the
    // owner closing) it could hold a message's first part without the rest.
    bool mid_forward() const noexcept { return remain_ != 0 || parse_ > pos_; }
    // Only the first part of a message passed on has arrived: the rest is still to be read.
    bool mid_message() const noexcept { return remain_ != 0; }

    // The socket most likely holds input already (a connection accepted under
    // TCP_DEFER_ACCEPT): read it in this loop turn rather than after the next epoll_wait.
    void read_soon() noexcept;

    // Stops showing packets to the owner until resume().
    void pause() noexcept { paused_ = true; }
    // SUSPEND: reads nothing from the socket, so that its bytes stay in the kernel (where a
    // process taking the socket over finds them), until unsuspend(), which restores the
    // sbuf_loopcnt given; sending goes on. Independent of pause(): the protocol may pause and
    // resume meanwhile. (A loop count of 0 is the mark: no test on the read path.)
    void suspend() noexcept {
        loopcnt_ = 0;
        if (ring_)
            settle_recv();
    }
    void unsuspend(int loop_count) noexcept;
    bool suspended() const noexcept { return loopcnt_ == 0; }
    // Resumes processing (later in this loop turn, no syscall).
    void resume() noexcept;

    // --- for the loop (net/loop.cpp) ---
    // A readiness report of our epoll set for `sb` (EPOLLIN, ...); none once it is closed.
    static void on_ready(SBuf* sb, uint32_t events) noexcept;
    // Runs the sbufs queued by resume(), read_soon() and the fairness limit; those queued while
    // this runs wait for the next call (the loop calls it after each ready socket and at the
    // end of the batch).
    static void run_pending() noexcept;
    static bool has_pending() noexcept;
    // Send batch: while on (the loop turns it on for a turn with more than one ready socket),
    // a small send to a socket that is not backed up is copied into the turn's batch and
    // counts as sent; send_batch() hands the whole batch to the kernel in one system call
    // (net/uring.h) at the end of the turn. What a socket could not take then goes to the
    // front of its out_ (and it asks for write reports); a failed socket is run with EV_WRITE,
    // so that its own send reports the error. A socket's later sends join its batched bytes
    // or go after them; close() sends them first.
    static void set_batching(bool on) noexcept;
    static void send_batch() noexcept;

    // --- the proactor (where a system call is dear, or SLUICE_PROACTOR=1; net/loop.cpp) ---
    // Plain connected sockets leave the epoll set: each has a RECV in the io_uring ring while
    // it wants input (the kernel reads when data arrives, into a provided buffer that the
    // completion hands over), and the turn's batched sends go into the same io_uring_enter
    // that waits for the next completion: one system call per message at -c 1 instead of
    // epoll_wait + recv + send.
    static bool proactor() noexcept;
    // Submits the batch and the queued requests, waits for a completion when `wait`, and runs
    // what completed; epoll_ready() when the epoll set (listeners, libevent, TLS) has reports.
    static void ring_turn(bool wait, void (*epoll_ready)()) noexcept;

    // Buffered byte counts for SHOW SOCKETS.
    size_t recv_pos() const noexcept { return end_; }
    size_t pending_bytes() const noexcept { return parse_ - pos_; }
    uint32_t packet_remaining() const noexcept { return remain_; }
    const SBufStats& stats() const noexcept { return stats_; }
    size_t output_capacity() const noexcept { return out_.capacity(); }  // tests

    // Global count of forward sends (debug/tests: proves bytes moved before a packet ended).
    static uint64_t forward_sends() noexcept;
    // Global count of send batches that went out in one io_uring_enter (tests).
    static uint64_t ring_batches() noexcept;

    // --- TLS (see sluice/net/tls.h for the SSL objects) ---
    // Takes ownership of `ssl` (SSL_new'd, accept or connect state) and starts the handshake
    // on this socket, driven by its events; TlsReady or TlsFailed follows, never from inside
    // this call. replay_input (direct TLS, from the TlsHello event): the unprocessed input is
    // the start of the ClientHello and is handed to OpenSSL. Otherwise (from on_packet() of
    // an SSLRequest or its answer) the current packet is consumed as the owner's verdict says
    // and nothing may follow it. Requires: attached, not TLS yet, nothing in out_.
    // False: the SSL could not be attached (it is freed; the owner closes).
    [[nodiscard]] bool start_tls(SSL* ssl, bool replay_input);
    bool is_tls() const noexcept { return ssl_ != nullptr; }
    const SSL* tls() const noexcept { return ssl_; }
    // "no", or "TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519" (login lines, SHOW CLIENTS).
    size_t tls_describe(char* buf, size_t size) const noexcept;
    // Bytes already received beyond the first `len` bytes of the unprocessed input. From
    // on_packet(): what arrived after the current packet (the SSLRequest buffer-stuffing check).
    size_t input_after(uint32_t len) const noexcept {
        return end_ - parse_ > len ? end_ - parse_ - len : 0;
    }
    // Online restart: bytes another process had read from this socket and not yet passed on
    // come first; they are walked in this loop turn (before anything newer from the socket).
    // Requires: nothing received yet.
    void preload_input(std::span<const uint8_t> bytes);
    // The received bytes not parsed yet (after a BadPacket report: the bad header).
    std::span<const uint8_t> unparsed() const noexcept {
        return {buf_ ? buf_ + parse_ : nullptr, end_ - parse_};
    }
    // The next input byte is shown to the owner as a packet of its own: hdr.type = the byte,
    // hdr_len = 0, len = 1 (the server's one-byte answer to SSLRequest). Then typed packets.
    // Requires: typed mode (set_startup(false)).
    void expect_byte() noexcept { startup_ = raw_byte_ = true; }

private:
    // Queues this sbuf for run_pending() with these event bits (ORed when queued already).
    void run_soon(short what) noexcept;
    void forget_pending() noexcept;  // leaves the pending list (close)
    void handle_event(short what);
    // drained: the socket is known to be empty; walk buffered bytes only.
    void handle_read(bool drained = false);
    void handle_write();
    // Walks packets in [parse_, end_). False when processing must stop (pause/close/hold).
    bool process();
    // Sends peer->out_ + our pending range to the peer. False if blocked or closed.
    bool forward_flush() {
        // Nothing walked for the peer, nothing queued for it, nothing held back: no call (a
        // client whose request waits for a server comes here every transaction).
        if (parse_ == pos_ && !blocked_ && (!peer_ || !peer_->has_output()))
            return true;
        return forward_pending();
    }
    bool forward_pending();
    // Walks n bytes of the current packet: into the pending range (Forward with a peer) or
    // dropped (everything pending before them is spilled first).
    void pass_bytes(uint32_t n, PacketAction a);
    // Moves our pending range into the peer's out_ (keeps order when the peer queues bytes).
    void spill_pending();
    // The whole pending range went to the peer: its stream ends where the walk is, inside
    // the current message if that is forwarded and not walked to its end.
    void committed_all() noexcept {
        pos_ = parse_;
        pos_left_ = cur_ == PacketAction::Forward ? remain_ : 0;
    }
    // Only n bytes of it went (a send the socket took in part); keeps pos_left_.
    void committed_part(uint32_t n) noexcept;
    bool ensure_buffer(size_t need_total);
    void attach_buffer() noexcept;  // a receive buffer for an sbuf without one
    void drop_buffer() noexcept;  // gives buf_ back (pool, bulk pool or allocator)
    void start_streaming();       // an empty pkt_buf buffer becomes a bulk one, if one is free
    void compact();
    void release_buffer_if_empty();
    bool park_buffer() noexcept;  // may this idle client keep its empty buffer? (sbuf.cpp)
    void report(SBufEvent ev);
    // Sends what it can; one that cannot send everything asks the loop for write reports.
    [[gnu::always_inline]] inline bool send_iov(iovec* iov, int cnt, size_t& sent);
    // send_iov() when the bytes are not batched: TLS, direct sends.
    [[gnu::noinline]] bool send_iov_slow(iovec* iov, int cnt, size_t& sent);
    // Copies the ranges (cnt <= 2) into the send batch. False: not now (too big, no room).
    [[gnu::always_inline]] inline bool defer(const iovec* iov, int cnt, size_t total) noexcept;
    // defer() beyond the socket's first batched send of the turn: joining its batched
    // bytes, or a full batch (sent at once, a new one started).
    [[gnu::noinline]] bool defer_more(const iovec* iov, int cnt, size_t total) noexcept;
    [[gnu::always_inline]] inline void append_deferred(const iovec* iov, int cnt,
                                                       size_t total) noexcept;
    // send() of the batched bytes, then the ranges; `sent` counts only the ranges' bytes.
    bool send_direct(const iovec* iov, int cnt, size_t& sent);
    // n bytes of out_ were sent (the emptied string is reset for reuse).
    void consume_out(size_t n) noexcept;
    // Puts bytes before everything in out_ (batched bytes the socket did not take).
    void unsent_first(const char* data, size_t n);
    void want_write() noexcept;  // loop_want_write() once per socket
    // Proactor: this socket's reads go through the ring from now on (not in the epoll set).
    void ring_join() noexcept;
    void arm_recv() noexcept;   // a RECV for the next turn's submission
    void ring_cancel() noexcept;  // cancels what is in flight for this socket (close)
    static void cancel_async(uint64_t tag) noexcept;
    // The socket goes back to the epoll set (TLS). False: it could not, or bytes arrived that
    // must not have (more_input_ok false: after a packet that starts TLS).
    bool leave_ring(bool more_input_ok) noexcept;
    // The armed RECV writes into buf_: before buf_ moves or goes, the RECV is cancelled, or
    // its result taken now if it completed.
    void settle_recv() noexcept;
    void settle_direct() noexcept {  // settle_recv() when the RECV writes into buf_
        if (recv_armed_ && !ring_select_)
            settle_recv();
    }
    void ring_input(const uint8_t* src, uint32_t n) noexcept;  // a RECV's bytes into buf_
    // A RECV's provided buffer: its bytes into sb (nullptr: not wanted any more), the
    // buffer given back.
    static void provided_input(SBuf* sb, int res, uint32_t flags) noexcept;
    uint64_t recv_tag() const noexcept;     // the armed RECV's user_data
    uint64_t pollout_tag() const noexcept;  // the armed write poll's
    static void on_ring_recv(SBuf* sb, int res) noexcept;
    // A batched send that did not send everything (res: bytes sent or -errno).
    static void batch_unsent(SBuf& sb, const char* data, uint32_t len, int res) noexcept;
    static void prep_batch() noexcept;  // the batch's sends into the proactor's submission
    static void reap_batch() noexcept;  // their failures, after the enter
    // Startup-phase header (or the single byte of expect_byte()).
    Parse parse_startup_phase(std::span<const uint8_t> data, PacketHeader& h) noexcept;
    // TLS counterparts of recv/sendmsg; same contracts (-1 + errno EAGAIN = would block).
    ssize_t tls_read(uint8_t* dst, size_t len);
    bool tls_send_iov(const iovec* iov, int cnt, size_t& sent);
    short tls_events(short what) noexcept;
    enum class HsStep : uint8_t {
        Done,  // handshake finished, TlsReady reported, out_ flushed
        Wait,  // OpenSSL waits for the socket
        Stop,  // failed or closed: the owner was told, touch nothing
    };
    HsStep tls_handshake();

    int fd_ = -1;
    SBufOwner* owner_ = nullptr;
    SBuf* peer_ = nullptr;

    uint8_t* buf_ = nullptr;
    uint32_t cap_ = 0;
    uint32_t pos_ = 0;
    uint32_t parse_ = 0;
    uint32_t end_ = 0;
    uint32_t remain_ = 0;  // bytes of the current packet not yet walked
    // The peer's stream (our bytes before pos_, sent or in its out_) ends this many bytes
    // before the end of a message; 0: at a message boundary. See committed_all().
    uint32_t pos_left_ = 0;
    PacketAction cur_ = PacketAction::Forward;

    std::string out_;
    size_t out_pos_ = 0;

    uint32_t max_len_ = 0x7fffffff;
    uint32_t hold_limit_ = 1u << 24;
    int loopcnt_ = 5;
    bool startup_ = false;
    bool paused_ = false;
    bool blocked_ = false;     // our pending range waits for the peer to become writable
    bool connecting_ = false;
    bool write_armed_ = false;  // the loop reports writable too (want_write())
    bool eof_ = false;
    bool rdhup_ = false;         // the peer shut down its side: read until recv returns 0
    bool sock_drained_ = false;  // the last recv found the socket empty (no edge since)
    bool raw_byte_ = false;  // expect_byte(): the next byte is a packet of its own
    bool cut_ = false;       // cut()
    bool keep_buffer_ = false;  // set_keep_buffer()
    bool bulk_buf_ = false;     // buf_ is a bulk buffer (sbuf.cpp: kBulkSize)
    bool streaming_ = false;    // the last recv took at least pkt_buf bytes
    bool trim_output_ = false;  // set_trim_output()
    bool parked_ = false;       // an idle client keeping its empty buffer (park_buffer())
    bool ring_ = false;         // proactor: reads through the ring, not in the epoll set
    bool recv_armed_ = false;   // a RECV is in flight (or queued for the next submission)
    bool ring_short_ = false;   // the last RECV did not fill what it asked for: poll first
    bool ring_select_ = false;  // the armed RECV takes a provided buffer (no buf_)
    uint32_t ring_gen_ = 0;     // tags this socket's requests (stale completions are dropped)
    uint32_t ring_asked_ = 0;   // the armed RECV's length
    uint32_t ring_rgen_ = 0;    // tags the armed RECV (each arming anew)
    unsigned ring_sqe_ = 0;     // the armed RECV's submission queue position
    bool backed_up_ = false;    // the last send could not send everything: no batching
    uint16_t defer_slot_ = 0;   // 1 + index of our entry in the send batch; 0: none
    short pend_what_ = 0;  // event bits for run_pending(); non-zero while in the pending list
    SBuf* pend_prev_ = nullptr;
    SBuf* pend_next_ = nullptr;

    enum class TlsState : uint8_t {
        Off,
        Handshake,  // start_tls() called, handshake running
        Up,
        Failed,  // fatal OpenSSL error: no close_notify on close()
    };
    SSL* ssl_ = nullptr;  // owned; non-null from start_tls() until close()
    TlsState tls_ = TlsState::Off;
    bool tls_read_wants_write_ = false;  // SSL_read needs the socket writable to go on
    bool tls_write_wants_read_ = false;  // SSL_write needs the socket readable to go on

    SBufStats stats_;
};

// The io_uring ring behind SBuf::send_batch() (net/uring.h). Without it every send is a
// send() of its own. False + why: not available here.
bool sbuf_open_send_ring(std::string& why);
void sbuf_close_send_ring() noexcept;  // sends what is batched first
bool sbuf_send_ring_open() noexcept;

// The proactor's ring (SBuf::proactor()); epoll_fd is polled through it. False + why.
bool sbuf_open_proactor(int epoll_fd, std::string& why);
void sbuf_close_proactor() noexcept;

// Size of the pooled receive buffers (pkt_buf); set once at start-up.
void sbuf_set_buffer_size(uint32_t size) noexcept;
// Frees the pooled buffers (at exit, so leak checkers see a clean heap).
void sbuf_release_buffers() noexcept;
// A socket whose recv takes a whole pkt_buf worth (COPY, big results) reads into a bulk
// buffer of this size while that lasts, if fewer than kMaxBulkBuffers are in use.
inline constexpr uint32_t kBulkBufferSize = 64 * 1024;
inline constexpr size_t kMaxBulkBuffers = 256;
// Receive buffers for SHOW MEM: size, held by sockets, pooled; pkt_buf ones and bulk ones.
struct SBufMemory {
    size_t size, used, free;
    size_t bulk_size, bulk_used, bulk_free;
};
SBufMemory sbuf_memory() noexcept;
// How many idle clients may keep their empty pkt_buf buffer (sbuf.cpp: parked); the rest hold
// none while idle. 256 KiB worth by default (sbuf_set_buffer_size() sets that); set: tests, and
// SLUICE_KEPT_BUFFERS (main.cpp). Clients already keeping one go on doing so.
size_t sbuf_park_limit() noexcept;
void sbuf_set_park_limit(size_t clients) noexcept;
// Bulk buffers held by sockets now, taken since start; the cap (tests).
size_t sbuf_bulk_buffers_in_use() noexcept;
uint64_t sbuf_bulk_buffers_taken() noexcept;
void sbuf_set_bulk_limit(size_t n) noexcept;

}  // namespace sluice
