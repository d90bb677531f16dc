// SBuf over real AF_UNIX socketpairs and the event loop (net/loop.h) driven by the test.
//
//   fake client app (app) <== pair A ==> [client SBuf] <-link-> [server SBuf] <== pair B ==> fake
//   PostgreSQL (pg)
//
// The test writes into `app` / `pg`, runs the loop with EVLOOP_NONBLOCK (edge-triggered events:
// the loop must run after every write for callbacks to fire) and reads what came out at the
// other end. Unix-socket writes are synchronous, so no sleeps are needed: every wait is a
// bounded loop of pump + read.
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <memory>
extern "C" {
#include <cmocka.h>
}

#include <cerrno>
#include <cstdio>
#include <fcntl.h>
#include <functional>
#include <map>
#include <set>
#include <poll.h>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

#include <event2/event.h>

#include "sluice/net/loop.h"
#include "sluice/net/sbuf.h"
#include "sluice/proto/packet.h"

namespace {

using sluice::PacketAction;
using sluice::PacketHeader;
using sluice::SBuf;
using sluice::SBufEvent;

// Which shape of the loop the rigs use: the suite runs once with libevent nested in our epoll
// set (production) and once with our set inside libevent (the fallback).
sluice::LoopOptions g_loop_opts;

constexpr uint32_t kBufSize = 4096;

// A message: type byte, length, body.
std::string msg(char type, std::string_view body) {
    std::string s;
    s.push_back(type);
    auto n = static_cast<uint32_t>(body.size() + 4);
    s.push_back(static_cast<char>(n >> 24));
    s.push_back(static_cast<char>((n >> 16) & 0xff));
    s.push_back(static_cast<char>((n >> 8) & 0xff));
    s.push_back(static_cast<char>(n & 0xff));
    s.append(body);
    return s;
}

std::string query(std::string_view sql) {
    std::string body(sql);
    body.push_back('\0');
    return msg('Q', body);
}

std::string pattern(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (char& c : s)
        c = static_cast<char>('a' + rng() % 26);
    return s;
}

uint64_t fnv1a(std::string_view s) {
    uint64_t h = 1469598103934665603ull;
    for (char c : s) {
        h ^= static_cast<uint8_t>(c);
        h *= 1099511628211ull;
    }
    return h;
}

void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    assert_true(fl >= 0);
    assert_int_equal(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

struct Rec {
    uint8_t type;
    uint32_t len;
    size_t have;
};

class TestOwner final : public sluice::SBufOwner {
public:
    std::vector<Rec> packets;
    std::vector<SBufEvent> events;
    int drained = 0;
    // Per-type action; Forward when absent. Hold means "hold until complete, then Forward".
    std::map<uint8_t, PacketAction> actions;
    bool pause_all = false;
    // When set, decides instead of `actions` (after pause_all).
    std::function<PacketAction(SBuf&, const PacketHeader&, std::span<const uint8_t>)> hook;
    std::vector<std::string> complete;  // full bytes of packets held until complete

    PacketAction on_packet(SBuf& sb, const PacketHeader& hdr,
                           std::span<const uint8_t> data) override {
        packets.push_back({hdr.type, hdr.len, data.size()});
        if (pause_all)
            return PacketAction::Pause;
        if (hook)
            return hook(sb, hdr, data);
        auto it = actions.find(hdr.type);
        PacketAction a = it == actions.end() ? PacketAction::Forward : it->second;
        if (a == PacketAction::Hold) {
            if (data.size() < hdr.len)
                return PacketAction::Hold;
            complete.emplace_back(reinterpret_cast<const char*>(data.data()), data.size());
            return PacketAction::Forward;
        }
        return a;
    }
    size_t pending_at_event = 0;  // decided-forward bytes not yet sent at the last event
    bool blocked_at_event = false;
    void on_sbuf_event(SBuf& sb, SBufEvent ev) override {
        events.push_back(ev);
        pending_at_event = sb.pending_bytes();
        blocked_at_event = sb.blocked();
        if (ev != SBufEvent::Connected)
            sb.close();  // the contract: the owner closes on failures
    }
    void on_sbuf_drained(SBuf&) override { ++drained; }
    // Types taken by the fast walk (take_plain_run) when whole; each run is recorded.
    std::set<uint8_t> plain;
    std::vector<std::vector<uint8_t>> runs;
    uint32_t take_plain_run(SBuf& sb, std::span<const uint8_t> data) override {
        std::vector<uint8_t> run;
        size_t off = 0;
        uint8_t t;
        uint32_t len;
        while (sluice::whole_message_at(data, off, sb.max_packet(), t, len) && plain.count(t)) {
            run.push_back(t);
            off += len;
        }
        if (!run.empty())
            runs.push_back(run);
        return static_cast<uint32_t>(off);
    }

    bool saw(SBufEvent ev) const {
        for (SBufEvent e : events)
            if (e == ev)
                return true;
        return false;
    }
};

struct Rig {
    event_base* base = nullptr;
    int app = -1;  // the fake client application's end
    int pg = -1;   // the fake PostgreSQL's end
    SBuf client;
    SBuf server;
    TestOwner cown;
    TestOwner sown;

    // sndbuf > 0: shrink the socket buffers of pair B (towards the fake PostgreSQL) and of
    // the app end, so that backpressure sets in after a few KB.
    explicit Rig(int sndbuf = 0) {
        std::string err;
        base = sluice::loop_create(err, g_loop_opts);
        assert_non_null(base);
        assert_int_equal(sluice::loop_nested(), g_loop_opts.nest_libevent);
        int a[2], b[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
        if (sndbuf > 0) {
            for (int fd : {a[0], a[1], b[0], b[1]}) {
                assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);
                assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof sndbuf), 0);
            }
        }
        for (int fd : {a[0], a[1], b[0], b[1]})
            set_nonblock(fd);
        app = a[0];
        pg = b[0];
        assert_true(client.attach(a[1], &cown, false));
        assert_true(server.attach(b[1], &sown, false));
        SBuf::link(client, server);
        pump();
    }
    ~Rig() {
        client.close();
        server.close();
        if (app >= 0)
            ::close(app);
        if (pg >= 0)
            ::close(pg);
        sluice::loop_destroy();
    }
    Rig(const Rig&) = delete;
    Rig& operator=(const Rig&) = delete;

    void pump(int turns = 4) {
        for (int i = 0; i < turns; ++i)
            sluice::loop_turn(0);
    }
};

// Writes what the socket takes now; returns the count (0 when full).
size_t write_some(int fd, std::string_view s) {
    if (s.empty())
        return 0;
    for (;;) {
        ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
        if (n >= 0)
            return static_cast<size_t>(n);
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        fail_msg("send: %d", errno);
        return 0;
    }
}

// Writes everything, running the loop when the socket is full.
void write_all(Rig& r, int fd, std::string_view s) {
    size_t off = 0;
    for (int i = 0; off < s.size() && i < 100000; ++i) {
        off += write_some(fd, s.substr(off));
        if (off < s.size())
            r.pump(1);
    }
    assert_int_equal(off, s.size());
}

// Reads whatever is there now.
std::string read_avail(int fd) {
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            out.append(buf, static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        break;
    }
    return out;
}

// Runs the loop and reads until `n` bytes came (bounded).
std::string read_n(Rig& r, int fd, size_t n) {
    std::string out;
    for (int i = 0; out.size() < n && i < 10000; ++i) {
        r.pump(1);
        out += read_avail(fd);
    }
    return out;
}

// Runs the loop a few times and returns whatever arrived (for "nothing arrives" checks).
std::string settle(Rig& r, int fd) {
    std::string out;
    for (int i = 0; i < 10; ++i) {
        r.pump(1);
        out += read_avail(fd);
    }
    return out;
}

void assert_bytes(const std::string& got, const std::string& want) {
    if (got != want) {
        fprintf(stderr, "got %zu bytes, want %zu\n", got.size(), want.size());
        size_t i = 0;
        while (i < got.size() && i < want.size() && got[i] == want[i])
            ++i;
        fprintf(stderr, "first difference at byte %zu\n", i);
        fail();
    }
}

// ---------------------------------------------------------------- forwarding

void test_forward_as_bytes_arrive(void**) {
    Rig r;
    const std::string sql = "select '" + pattern(3000, 1) + "'";
    const std::string m = query(sql);
    const size_t half = 5 + 1000;  // header + part of the text

    uint64_t sends0 = SBuf::forward_sends();
    assert_int_equal(write_some(r.app, std::string_view(m).substr(0, half)), half);
    std::string got = read_n(r, r.pg, half);
    // The first half is at the fake server before the rest was even written.
    assert_bytes(got, m.substr(0, half));
    assert_true(SBuf::forward_sends() > sends0);
    assert_int_equal(r.cown.packets.size(), 1);
    assert_int_equal(r.cown.packets[0].type, 'Q');
    assert_int_equal(r.cown.packets[0].len, m.size());
    assert_int_equal(r.cown.packets[0].have, half);
    assert_int_equal(r.client.packet_remaining(), m.size() - half);

    uint64_t sends1 = SBuf::forward_sends();
    assert_int_equal(write_some(r.app, std::string_view(m).substr(half)), m.size() - half);
    got += read_n(r, r.pg, m.size() - half);
    assert_bytes(got, m);
    assert_true(SBuf::forward_sends() > sends1);
    assert_int_equal(r.cown.packets.size(), 1);  // shown once, at its header
    assert_int_equal(r.client.packet_remaining(), 0);
    assert_int_equal(r.client.stats().recv_bytes, m.size());
    assert_int_equal(r.server.stats().sent_bytes, m.size());

    // And back: the server's reply reaches the app.
    std::string reply = msg('C', std::string("SELECT 1\0", 9)) + msg('Z', "I");
    assert_int_equal(write_some(r.pg, reply), reply.size());
    assert_bytes(read_n(r, r.app, reply.size()), reply);
    assert_int_equal(r.sown.packets.size(), 2);
    assert_int_equal(r.sown.packets[0].type, 'C');
    assert_int_equal(r.sown.packets[1].type, 'Z');
    assert_true(r.cown.events.empty());
    assert_true(r.sown.events.empty());
}

void test_header_split_at_every_offset(void**) {
    Rig r;
    const std::string m = query("select 42");
    size_t shown = 0;
    for (size_t k = 0; k <= m.size(); ++k) {
        assert_int_equal(write_some(r.app, std::string_view(m).substr(0, k)), k);
        std::string got = settle(r, r.pg);
        if (k < sluice::kTypedHeaderLen) {
            assert_true(got.empty());  // only the header is waited for
            assert_int_equal(r.cown.packets.size(), shown);
        } else {
            assert_bytes(got, m.substr(0, k));
            assert_int_equal(r.cown.packets.size(), shown + 1);
            assert_int_equal(r.cown.packets.back().have, k);
        }
        assert_int_equal(write_some(r.app, std::string_view(m).substr(k)), m.size() - k);
        got += read_n(r, r.pg, m.size() - got.size());
        assert_bytes(got, m);
        ++shown;
        assert_int_equal(r.cown.packets.size(), shown);
        assert_int_equal(r.cown.packets.back().type, 'Q');
        assert_int_equal(r.cown.packets.back().len, m.size());
        assert_int_equal(r.cown.packets.back().have, k < 5 ? m.size() : k);
    }
    assert_true(r.cown.events.empty());
}

void test_two_packets_in_one_write(void**) {
    Rig r;
    const std::string a = msg('P', std::string("\0select 1\0\0\0", 12));
    const std::string b = msg('S', "");
    const std::string both = a + b;
    assert_int_equal(write_some(r.app, both), both.size());
    assert_bytes(read_n(r, r.pg, both.size()), both);
    assert_int_equal(r.cown.packets.size(), 2);
    assert_int_equal(r.cown.packets[0].type, 'P');
    assert_int_equal(r.cown.packets[0].len, a.size());
    assert_int_equal(r.cown.packets[0].have, a.size());
    assert_int_equal(r.cown.packets[1].type, 'S');
    assert_int_equal(r.cown.packets[1].len, 5);
    assert_int_equal(r.cown.packets[1].have, 5);

    // Many small packets in one write, crossing the 4 KB buffer boundary mid-header.
    std::string many;
    for (int i = 0; i < 1000; ++i)
        many += (i % 3 == 0) ? msg('S', "") : query("select " + std::to_string(i));
    assert_int_equal(write_some(r.app, many), many.size());
    assert_bytes(read_n(r, r.pg, many.size()), many);
    assert_int_equal(r.cown.packets.size(), 1002);
    for (size_t i = 0; i < 1000; ++i)
        assert_int_equal(r.cown.packets[2 + i].type, i % 3 == 0 ? 'S' : 'Q');
}

// Streams a 1 MB CopyData through the rig; returns the forward sends it took. The buffer
// never holds more than `bound`, whatever the message size.
uint64_t stream_large_message(uint32_t bound, uint64_t* bulk_taken) {
    Rig r;
    const std::string m = msg('d', pattern(1 << 20, 7));  // 1 MB CopyData
    size_t off = 0;
    std::string got;
    uint64_t sends0 = SBuf::forward_sends();
    uint64_t taken0 = sluice::sbuf_bulk_buffers_taken();
    for (int i = 0; got.size() < m.size() && i < 200000; ++i) {
        off += write_some(r.app, std::string_view(m).substr(off));
        r.pump(1);
        assert_true(r.client.recv_pos() <= bound);
        assert_true(r.client.pending_bytes() <= bound);
        assert_false(r.server.has_output());
        got += read_avail(r.pg);
    }
    assert_bytes(got, m);
    assert_int_equal(r.cown.packets.size(), 1);
    assert_int_equal(r.cown.packets[0].len, m.size());
    assert_true(r.cown.packets[0].have <= bound);
    uint64_t sends = SBuf::forward_sends() - sends0;
    *bulk_taken = sluice::sbuf_bulk_buffers_taken() - taken0;
    // A short message ends the stream: the bulk buffer goes back.
    const std::string q = msg('Q', std::string("select 1\0", 9));
    write_all(r, r.app, q);
    assert_bytes(read_n(r, r.pg, q.size()), q);
    assert_int_equal(sluice::sbuf_bulk_buffers_in_use(), 0);
    return sends;
}

// A message far bigger than any buffer streams through a bounded buffer: a bulk buffer once
// the reads show a stream, pkt_buf when none may be taken (the cap); the bulk buffer needs a
// fraction of the sends.
void test_large_message_streams_bounded(void**) {
    uint64_t taken = 0;
    uint64_t bulk_sends = stream_large_message(sluice::kBulkBufferSize, &taken);
    assert_true(taken > 0);
    sluice::sbuf_set_bulk_limit(0);
    uint64_t small_sends = stream_large_message(kBufSize, &taken);
    sluice::sbuf_set_bulk_limit(sluice::kMaxBulkBuffers);
    assert_int_equal(taken, 0);
    fprintf(stderr, "1 MB message: %llu sends with a bulk buffer, %llu without\n",
            static_cast<unsigned long long>(bulk_sends),
            static_cast<unsigned long long>(small_sends));
    assert_true(small_sends >= (1u << 20) / kBufSize);
    assert_true(bulk_sends * 4 <= small_sends);
}

// ---------------------------------------------------------------- owner verdicts

void test_hold_shows_complete_packet(void**) {
    Rig r;
    r.cown.actions['P'] = PacketAction::Hold;
    const std::string p = msg('P', std::string("s1\0select $1\0\0\0", 16));
    assert_int_equal(write_some(r.app, std::string_view(p).substr(0, 9)), 9);
    assert_true(settle(r, r.pg).empty());  // held: nothing forwarded
    assert_int_equal(r.cown.packets.size(), 1);
    assert_int_equal(r.cown.packets[0].have, 9);
    assert_int_equal(write_some(r.app, std::string_view(p).substr(9)), p.size() - 9);
    assert_bytes(read_n(r, r.pg, p.size()), p);
    // The owner may be asked again while the packet is still incomplete (process() runs at
    // the top of every read turn, before recv); what matters is that it is shown complete
    // exactly once, at the end, and that nothing moved before that.
    assert_true(r.cown.packets.size() >= 2);
    for (size_t i = 0; i + 1 < r.cown.packets.size(); ++i) {
        assert_int_equal(r.cown.packets[i].type, 'P');
        assert_int_equal(r.cown.packets[i].have, 9);
    }
    assert_int_equal(r.cown.packets.back().type, 'P');
    assert_int_equal(r.cown.packets.back().len, p.size());
    assert_int_equal(r.cown.packets.back().have, p.size());
    assert_int_equal(r.cown.complete.size(), 1);
    assert_bytes(r.cown.complete[0], p);
}

void test_hold_larger_than_buffer(void**) {
    Rig r;
    r.cown.actions['P'] = PacketAction::Hold;
    const std::string a = query("select 1");  // forwarded, still pending when P is held
    const std::string p = msg('P', pattern(10000, 3));
    const std::string c = msg('S', "");
    std::string all = a + p + c;
    // Dribble it in: 1000-byte writes, running the loop after each.
    std::string got;
    for (size_t off = 0; off < all.size(); off += 1000) {
        std::string_view part = std::string_view(all).substr(off, 1000);
        assert_int_equal(write_some(r.app, part), part.size());
        r.pump(2);
        got += read_avail(r.pg);
        if (off + 1000 < a.size() + p.size())
            assert_true(got.size() <= a.size());  // nothing of P before it is complete
    }
    got += read_n(r, r.pg, all.size() - got.size());
    assert_bytes(got, all);
    assert_int_equal(r.cown.complete.size(), 1);
    assert_bytes(r.cown.complete[0], p);
    size_t p_shown = 0;
    for (const Rec& rec : r.cown.packets)
        if (rec.type == 'P') {
            ++p_shown;
            assert_int_equal(rec.len, p.size());
        }
    assert_true(p_shown >= 2);
    assert_int_equal(r.cown.packets.back().type, 'S');
    assert_true(r.cown.events.empty());
    // The grown buffer was given back once empty.
    assert_int_equal(r.client.recv_pos(), 0);
}

void test_hold_too_long(void**) {
    Rig r;
    r.client.set_hold_limit(8192);
    r.cown.actions['P'] = PacketAction::Hold;
    const std::string p = msg('P', pattern(10000, 4));
    assert_int_equal(write_some(r.app, std::string_view(p).substr(0, 100)), 100);
    r.pump();
    assert_true(r.cown.saw(SBufEvent::TooLong));
    assert_true(r.client.closed());
    assert_true(read_avail(r.pg).empty());
}

void test_skip_drops_bytes(void**) {
    Rig r;
    r.cown.actions['H'] = PacketAction::Skip;
    const std::string a = msg('H', "");
    const std::string b = query("select 1");
    const std::string big = msg('H', pattern(20000, 5));  // skipped across many reads
    const std::string c = msg('S', "");
    std::string all = a + b + big + c;
    write_all(r, r.app, all);
    std::string want = b + c;
    assert_bytes(read_n(r, r.pg, want.size()), want);
    assert_true(settle(r, r.pg).empty());
    assert_int_equal(r.cown.packets.size(), 4);
    assert_int_equal(r.cown.packets[2].type, 'H');
    assert_int_equal(r.cown.packets[2].len, big.size());
    assert_int_equal(r.client.packet_remaining(), 0);
}

void test_queue_keeps_order(void**) {
    Rig r;
    const std::string x = query("SET application_name = 'x'");
    // The owner of packet B answers it by queueing X towards the server, then skips B.
    r.cown.hook = [&](SBuf& sb, const PacketHeader& h, std::span<const uint8_t>) {
        if (h.type == 'B') {
            sb.peer()->queue(x);
            return PacketAction::Skip;
        }
        return PacketAction::Forward;
    };
    const std::string a = query("select 'A'");
    const std::string b = msg('B', "bbbb");
    const std::string c = query("select 'C'");
    // All in one read: A is still pending in the client's buffer when X is queued.
    assert_int_equal(write_some(r.app, a + b + c), a.size() + b.size() + c.size());
    std::string want = a + x + c;
    assert_bytes(read_n(r, r.pg, want.size()), want);
    assert_true(settle(r, r.pg).empty());

    // Again with A already sent, and B/C in separate writes.
    assert_int_equal(write_some(r.app, a), a.size());
    std::string got = read_n(r, r.pg, a.size());
    assert_int_equal(write_some(r.app, b), b.size());
    r.pump();
    assert_int_equal(write_some(r.app, c), c.size());
    got += read_n(r, r.pg, want.size() - got.size());
    assert_bytes(got, want);

    // A partially arrived packet A, then B and the rest: X after the whole of A.
    std::string big_a = query("select '" + pattern(6000, 6) + "'");
    assert_int_equal(write_some(r.app, std::string_view(big_a).substr(0, 3000)), 3000);
    got = read_n(r, r.pg, 3000);
    std::string rest = big_a.substr(3000) + b + c;
    write_all(r, r.app, rest);
    std::string want2 = big_a + x + c;
    got += read_n(r, r.pg, want2.size() - got.size());
    assert_bytes(got, want2);
}

void test_pause_then_resume(void**) {
    Rig r;
    r.cown.pause_all = true;
    const std::string a = query("select 1");
    const std::string b = msg('S', "");
    assert_int_equal(write_some(r.app, a), a.size());
    assert_true(settle(r, r.pg).empty());
    assert_int_equal(r.cown.packets.size(), 1);
    assert_true(r.client.paused());
    // More input while paused: read, but not shown.
    assert_int_equal(write_some(r.app, b), b.size());
    assert_true(settle(r, r.pg).empty());
    assert_int_equal(r.cown.packets.size(), 1);

    r.cown.pause_all = false;
    r.client.resume();
    assert_false(r.client.paused());
    std::string want = a + b;
    assert_bytes(read_n(r, r.pg, want.size()), want);
    assert_int_equal(r.cown.packets.size(), 3);
    assert_int_equal(r.cown.packets[1].type, 'Q');  // the paused packet, shown again
    assert_int_equal(r.cown.packets[1].have, a.size());
    assert_int_equal(r.cown.packets[2].type, 'S');
}

void test_pause_mid_stream(void**) {
    Rig r;
    // Pause on the second packet: the first is forwarded, the second waits.
    r.cown.hook = [&](SBuf&, const PacketHeader& h, std::span<const uint8_t>) {
        return h.type == 'S' ? PacketAction::Pause : PacketAction::Forward;
    };
    const std::string a = query("select 1");
    const std::string b = msg('S', "");
    assert_int_equal(write_some(r.app, a + b), a.size() + b.size());
    assert_bytes(read_n(r, r.pg, a.size()), a);
    assert_true(settle(r, r.pg).empty());
    assert_true(r.client.paused());
    r.cown.hook = nullptr;
    r.client.resume();
    assert_bytes(read_n(r, r.pg, b.size()), b);
}

// ---------------------------------------------------------------- backpressure

void test_backpressure(void**) {
    Rig r(4096);
    // ~4 MB of CopyData messages of assorted sizes.
    std::string data;
    std::mt19937 rng(11);
    for (uint32_t i = 0; data.size() < (4u << 20); ++i)
        data += msg('d', pattern(1 + rng() % 30000, i));
    const uint64_t want_sum = fnv1a(data);
    fprintf(stderr, "test_backpressure: %zu bytes, fnv1a %016llx\n", data.size(),
            static_cast<unsigned long long>(want_sum));

    // Phase 1: the fake server does not read.
    size_t off = 0;
    bool saw_blocked = false;
    for (int i = 0; i < 2000; ++i) {
        size_t n = write_some(r.app, std::string_view(data).substr(off));
        off += n;
        r.pump(1);
        saw_blocked = saw_blocked || r.client.blocked();
        if (n == 0 && r.client.blocked())
            break;
    }
    assert_true(saw_blocked);
    assert_true(r.client.blocked());
    assert_true(off < data.size());  // the app could not push everything
    assert_true(r.client.recv_pos() <= sluice::kBulkBufferSize);
    assert_true(r.client.pending_bytes() <= sluice::kBulkBufferSize);
    // What waits is the client's: with the proactor, whose turns always batch their sends,
    // the part of the batch the full socket did not take (a few KB at most) waits in the
    // server's output instead.
    assert_true(!r.server.has_output() || SBuf::proactor());
    // It stopped reading: more turns read nothing.
    uint64_t recv1 = r.client.stats().recv_bytes;
    r.pump(20);
    assert_int_equal(write_some(r.app, std::string_view(data).substr(off)), 0);
    r.pump(20);
    assert_int_equal(r.client.stats().recv_bytes, recv1);
    assert_true(recv1 < 512 * 1024);  // far from the several MB the app wanted to send

    // Phase 2: drain.
    std::string got;
    for (int i = 0; got.size() < data.size() && i < 1000000; ++i) {
        off += write_some(r.app, std::string_view(data).substr(off));
        r.pump(1);
        assert_true(r.client.recv_pos() <= sluice::kBulkBufferSize);
        got += read_avail(r.pg);
    }
    assert_int_equal(got.size(), data.size());
    assert_true(fnv1a(got) == want_sum);
    assert_bytes(got, data);
    assert_false(r.client.blocked());
    assert_true(r.cown.events.empty());
    assert_true(r.sown.events.empty());
    assert_true(r.cown.drained > 0);
}

// The server goes away while the client is blocked on it: the client is released from the
// block (unlink), its further input is consumed and dropped, nothing is touched after close.
void test_peer_closed_while_blocked(void**) {
    Rig r(4096);
    std::string data;
    for (uint32_t i = 0; data.size() < (1u << 20); ++i)
        data += msg('d', pattern(1000 + i % 5000, i));
    size_t off = 0;
    for (int i = 0; i < 2000 && !r.client.blocked(); ++i) {
        off += write_some(r.app, std::string_view(data).substr(off));
        r.pump(1);
    }
    assert_true(r.client.blocked());
    ::close(r.pg);
    r.pg = -1;
    r.pump();
    assert_true(r.server.closed());
    assert_true(r.sown.saw(SBufEvent::Eof) || r.sown.saw(SBufEvent::SocketError));
    assert_null(r.client.peer());
    assert_false(r.client.blocked());
    // The client keeps reading (and dropping) what the app sends.
    for (int i = 0; off < data.size() && i < 100000; ++i) {
        off += write_some(r.app, std::string_view(data).substr(off));
        r.pump(1);
    }
    assert_int_equal(off, data.size());
    r.pump();
    assert_int_equal(r.client.stats().recv_bytes, data.size());
    assert_true(r.cown.events.empty());
    assert_false(r.client.closed());
}

// ---------------------------------------------------------------- events

void test_eof_reported(void**) {
    Rig r;
    ::close(r.app);
    r.app = -1;
    r.pump();
    assert_int_equal(r.cown.events.size(), 1);
    assert_int_equal(r.cown.events[0], SBufEvent::Eof);
    assert_true(r.client.closed());
    assert_null(r.server.peer());  // closing unlinked the pair
    assert_true(r.sown.events.empty());
}

// The client app sends a last message and closes before sluice reads: both the message and
// the EOF are waiting when the socket becomes readable.
void test_eof_after_data_reported(void**) {
    Rig r;
    const std::string a = query("select pg_sleep(3600)");
    assert_int_equal(write_some(r.app, a), a.size());
    ::close(r.app);
    r.app = -1;
    std::string got = read_n(r, r.pg, a.size());
    assert_bytes(got, a);
    settle(r, r.pg);
    if (!r.cown.saw(SBufEvent::Eof)) {
        // Show that the EOF is sitting in the socket: level-triggered poll sees it at once.
        pollfd p{r.client.fd(), POLLIN, 0};
        int n = poll(&p, 1, 0);
        char c;
        ssize_t rn = ::recv(r.client.fd(), &c, 1, MSG_PEEK);
        fprintf(stderr,
                "EOF that arrived together with data was never reported "
                "(poll=%d revents=0x%x, recv(MSG_PEEK)=%zd)\n",
                n, p.revents, rn);
    }
    assert_true(r.cown.saw(SBufEvent::Eof));
    assert_true(r.client.closed());
}

// Same from the server side: PostgreSQL sends a FATAL ErrorResponse and closes.
void test_server_fatal_then_close(void**) {
    Rig r;
    std::string err;
    sluice::write_error(err, "FATAL", "57P01",
                        "terminating connection due to administrator command");
    assert_int_equal(write_some(r.pg, err), err.size());
    ::close(r.pg);
    r.pg = -1;
    assert_bytes(read_n(r, r.app, err.size()), err);
    settle(r, r.app);
    assert_true(r.sown.saw(SBufEvent::Eof));
    assert_true(r.server.closed());
}

// PostgreSQL streams rows to a slow client, then closes (a FATAL, a crash, a terminated
// backend). Everything it sent before the EOF must still reach the client: the EOF may be
// reported only once the bytes already read have been forwarded.
void test_eof_waits_for_pending_data(void**) {
    Rig r(4096);
    std::string data;
    for (uint32_t i = 0; data.size() < (1u << 20); ++i)
        data += msg('D', pattern(200 + i % 300, i));
    // Rows in 2 KB writes until the app's socket is full and the server SBuf is blocked with
    // bytes it already read; its buffer still has room. Then PostgreSQL closes.
    size_t written = 0;
    for (int i = 0; i < 5000 && !r.server.blocked(); ++i) {
        written += write_some(r.pg, std::string_view(data).substr(written, 2048));
        r.pump(1);
    }
    assert_true(r.server.blocked());
    assert_true(r.server.recv_pos() < kBufSize);  // room left: the EOF will be read
    ::close(r.pg);
    r.pg = -1;
    // The client app reads slowly: 1 KB per turn.
    std::string got;
    int idle_turns = 0;
    for (int i = 0; got.size() < written && i < 200000 && idle_turns < 200; ++i) {
        char buf[1024];
        ssize_t n = ::recv(r.app, buf, sizeof buf, 0);
        if (n > 0) {
            got.append(buf, static_cast<size_t>(n));
            idle_turns = 0;
        } else {
            ++idle_turns;
        }
        r.pump(1);
    }
    if (got.size() != written)
        fprintf(stderr,
                "pg wrote %zu bytes before closing, the app got %zu (Eof seen: %d, with %zu "
                "bytes pending, blocked %d)\n",
                written, got.size(), r.sown.saw(SBufEvent::Eof), r.sown.pending_at_event,
                r.sown.blocked_at_event);
    assert_int_equal(got.size(), written);
    assert_bytes(got, data.substr(0, written));
    settle(r, r.app);
    assert_true(r.sown.saw(SBufEvent::Eof));
}

void test_bad_header_reported(void**) {
    Rig r;
    const std::string ok = query("select 1");
    const char bad[] = {'Q', 0, 0, 0, 2};
    std::string all = ok + std::string(bad, sizeof bad);
    assert_int_equal(write_some(r.app, all), all.size());
    r.pump();
    assert_int_equal(r.cown.events.size(), 1);
    assert_int_equal(r.cown.events[0], SBufEvent::BadPacket);
    assert_true(r.client.closed());
    assert_int_equal(r.cown.packets.size(), 1);  // the bad one never reached the owner
}

void test_bad_header_after_split(void**) {
    Rig r;
    const char bad[] = {'d', 0, 0, 0, 0};
    assert_int_equal(write_some(r.app, std::string_view(bad, 3)), 3);
    r.pump();
    assert_true(r.cown.events.empty());
    assert_int_equal(write_some(r.app, std::string_view(bad + 3, 2)), 2);
    r.pump();
    assert_int_equal(r.cown.events.size(), 1);
    assert_int_equal(r.cown.events[0], SBufEvent::BadPacket);
    assert_true(r.cown.packets.empty());
}

void test_max_packet_enforced(void**) {
    Rig r;
    r.client.set_max_packet(1000);
    const std::string ok = msg('d', pattern(995, 8));  // exactly 1000 bytes
    assert_int_equal(ok.size(), 1000);
    assert_int_equal(write_some(r.app, ok), ok.size());
    assert_bytes(read_n(r, r.pg, ok.size()), ok);
    const std::string big = msg('d', pattern(996, 9));
    assert_int_equal(write_some(r.app, big), big.size());
    r.pump();
    assert_true(r.cown.saw(SBufEvent::BadPacket));
}

// ---------------------------------------------------------------- idle memory

// An owner that answers each 'Q' with `reply` from its own out_ (as a login answers with the
// welcome), without a peer.
void answer_locally(Rig& r, const std::string& reply) {
    r.client.unlink();
    r.cown.hook = [&](SBuf& sb, const PacketHeader&, std::span<const uint8_t>) {
        sb.queue(reply);
        assert_true(sb.flush_out());
        return PacketAction::Skip;
    };
}

void test_idle_output_block_freed(void**) {
    const size_t sso = std::string().capacity();
    const std::string reply = msg('S', pattern(500, 7));  // bigger than the inline buffer
    const std::string q = query("select 1");
    {
        Rig r;
        answer_locally(r, reply);
        r.client.set_trim_output(true);
        assert_int_equal(write_some(r.app, q), q.size());
        assert_bytes(read_n(r, r.app, reply.size()), reply);
        r.pump();
        assert_int_equal(r.client.output_capacity(), sso);  // idle: the block went
        // And the next answer still goes out whole.
        assert_int_equal(write_some(r.app, q), q.size());
        assert_bytes(read_n(r, r.app, reply.size()), reply);
    }
    {
        Rig r;  // without set_trim_output (servers): the block is kept for reuse
        answer_locally(r, reply);
        assert_int_equal(write_some(r.app, q), q.size());
        assert_bytes(read_n(r, r.app, reply.size()), reply);
        r.pump();
        assert_true(r.client.output_capacity() >= reply.size());
        r.client.trim_output();  // on request it goes
        assert_int_equal(r.client.output_capacity(), sso);
    }
    {
        Rig r;  // linked to a peer (inside a transaction): kept
        r.client.set_trim_output(true);
        r.cown.hook = [&](SBuf& sb, const PacketHeader&, std::span<const uint8_t>) {
            sb.queue(reply);
            assert_true(sb.flush_out());
            return PacketAction::Skip;
        };
        assert_int_equal(write_some(r.app, q), q.size());
        assert_bytes(read_n(r, r.app, reply.size()), reply);
        r.pump();
        assert_true(r.client.output_capacity() >= reply.size());
    }
}

// Idle clients hold no receive buffer, except the first sbuf_park_limit() to go quiet, which
// keep theirs for their next message; closing gives every one back.
void test_idle_clients_park_few_buffers(void**) {
    Rig r;
    const size_t limit = sluice::sbuf_park_limit();
    const size_t before = sluice::sbuf_memory().used;
    // n clients send a message twice; after each round `kept` buffers are held. Closing
    // gives every one back. early: the first messages are there before the loop first
    // looks at the new sockets.
    auto idle_clients = [&](size_t n, size_t kept, bool early) {
        TestOwner own;
        own.actions['Q'] = PacketAction::Skip;
        std::vector<std::unique_ptr<SBuf>> clients;
        std::vector<int> apps;
        const std::string q = query("select 1");
        for (size_t i = 0; i < n; ++i) {
            int a[2];
            assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
            set_nonblock(a[0]);
            set_nonblock(a[1]);
            apps.push_back(a[0]);
            clients.push_back(std::make_unique<SBuf>());
            assert_true(clients.back()->attach(a[1], &own, false));
            if (early)
                assert_int_equal(write_some(a[0], q), q.size());
        }
        if (!early) {
            r.pump();
            assert_int_equal(sluice::sbuf_memory().used, before);  // none has read anything yet
        }
        for (size_t round = 1; round <= 2; ++round) {
            if (round > 1 || !early) {
                for (int fd : apps)
                    assert_int_equal(write_some(fd, q), q.size());
            }
            for (int i = 0; i < 100 && own.packets.size() < n * round; ++i)
                r.pump(1);
            assert_int_equal(own.packets.size(), n * round);
            r.pump();
            assert_int_equal(sluice::sbuf_memory().used - before, kept);
        }
        for (auto& c : clients)
            c->close();
        for (int fd : apps)
            ::close(fd);
        assert_int_equal(sluice::sbuf_memory().used, before);
    };
    idle_clients(limit + 36, limit, false);
    // With no allowance (SLUICE_KEPT_BUFFERS=0) none keeps one, and every message still
    // arrives. Under the proactor each goes through one of 128 provided buffers. The 200
    // first RECVs find their message already there and complete as they are submitted: the
    // last 72 find no buffer left (-ENOBUFS) and are armed again. 400 messages go round the
    // ring of buffers three times.
    sluice::sbuf_set_park_limit(0);
    idle_clients(200, 0, true);
    sluice::sbuf_set_park_limit(limit);
}

// Closing takes the socket out of the loop's set, and the same SBuf can carry a new socket
// afterwards.
void test_close_then_attach_again(void**) {
    Rig r;
    r.client.close();
    r.pump();
    int a[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    set_nonblock(a[0]);
    set_nonblock(a[1]);
    ::close(r.app);
    r.app = a[0];
    assert_true(r.client.attach(a[1], &r.cown, false));
    SBuf::link(r.client, r.server);
    const std::string q = query("select 2");
    assert_int_equal(write_some(r.app, q), q.size());
    assert_bytes(read_n(r, r.pg, q.size()), q);
}

// ---------------------------------------------------------------- plain runs

// Whole plain messages go in one owner call each run; the message the run stops at (not
// plain, or not whole yet) goes to on_packet, and the walk resumes after it. The bytes reach
// the peer unchanged and in order.
void test_plain_run_and_packets_interleave(void**) {
    Rig r;
    r.cown.plain = {'D'};
    const std::string d1 = msg('D', "row one"), d2 = msg('D', "row two!"), c = msg('C', "SELECT 3");
    const std::string big = msg('D', pattern(3000, 5));
    std::string all = d1 + d2 + d1 + c + d2 + d1;
    const std::string split = all + big.substr(0, 100);  // the last row arrives in two parts
    assert_int_equal(write_some(r.app, split), split.size());
    assert_bytes(read_n(r, r.pg, split.size()), split);
    assert_int_equal(r.cown.runs.size(), 2);
    assert_int_equal(r.cown.runs[0].size(), 3);
    assert_int_equal(r.cown.runs[1].size(), 2);
    // on_packet saw the tag and the part of the big row that had arrived (it streams)
    assert_int_equal(r.cown.packets.size(), 2);
    assert_int_equal(r.cown.packets[0].type, 'C');
    assert_int_equal(r.cown.packets[1].type, 'D');
    assert_int_equal(r.cown.packets[1].len, big.size());
    assert_int_equal(r.cown.packets[1].have, 100);
    assert_int_equal(write_some(r.app, big.substr(100)), big.size() - 100);
    assert_bytes(read_n(r, r.pg, big.size() - 100), big.substr(100));
    assert_int_equal(r.cown.packets.size(), 2);  // the rest of a forwarded message is not shown
    // a run again afterwards
    assert_int_equal(write_some(r.app, d1 + d2), d1.size() + d2.size());
    assert_bytes(read_n(r, r.pg, d1.size() + d2.size()), d1 + d2);
    assert_int_equal(r.cown.runs.size(), 3);
    assert_int_equal(r.cown.runs[2].size(), 2);
}

// A plain type with a header the ordinary path refuses is not taken: BadPacket, nothing sent.
void test_plain_run_refuses_bad_header(void**) {
    {
        Rig r;  // one Rig at a time: each owns the process's loop
        r.cown.plain = {'D'};
        r.client.set_max_packet(1000);
        const std::string ok = msg('D', pattern(995, 8));  // exactly 1000 bytes
        const std::string big = msg('D', pattern(996, 9));
        assert_int_equal(write_some(r.app, ok), ok.size());
        assert_bytes(read_n(r, r.pg, ok.size()), ok);
        assert_int_equal(r.cown.runs.size(), 1);
        assert_int_equal(write_some(r.app, big), big.size());
        assert_bytes(settle(r, r.pg), "");
        assert_true(r.cown.saw(SBufEvent::BadPacket));
        assert_int_equal(r.cown.runs.size(), 1);
    }
    const char short_len[] = {'D', 0, 0, 0, 3};
    Rig r;
    r.cown.plain = {'D'};
    assert_int_equal(write_some(r.app, std::string_view(short_len, 5)), 5);
    assert_bytes(settle(r, r.pg), "");
    assert_true(r.cown.saw(SBufEvent::BadPacket));
}

// Without a peer (login, a client waiting for a server) nothing is walked: every message
// goes to on_packet.
void test_plain_run_needs_peer(void**) {
    Rig r;
    r.cown.plain = {'Q'};
    const std::string reply = msg('Z', "I");
    answer_locally(r, reply);
    const std::string q = query("select 1") + query("select 2");
    assert_int_equal(write_some(r.app, q), q.size());
    assert_bytes(read_n(r, r.app, 2 * reply.size()), reply + reply);
    assert_true(r.cown.runs.empty());
    assert_int_equal(r.cown.packets.size(), 2);
}


// --- The send batch (SBuf::set_batching / send_batch, net/uring.h) ---

// The batch needs the io_uring ring; a kernel without one sends everything at once, and
// these tests say so instead of passing without looking.
bool ring_or_skip() {
    if (sluice::sbuf_send_ring_open() || SBuf::proactor())
        return true;
    fprintf(stderr, "no io_uring here: the send batch is off\n");
    skip();
    return false;
}

// Two ready sockets in one turn: both sends wait for the end of the turn and arrive then.
void test_batch_both_directions_in_one_turn(void**) {
    Rig r;
    if (!ring_or_skip())
        return;
    const std::string q = query("select 1");
    const std::string reply = msg('Z', "I");
    assert_int_equal(write_some(r.app, q), q.size());
    assert_int_equal(write_some(r.pg, reply), reply.size());
    uint64_t batches = SBuf::ring_batches();
    // The proactor sends a turn's batch with the next turn's wait: one turn more.
    r.pump(SBuf::proactor() ? 2 : 1);
    assert_int_equal(SBuf::ring_batches(), batches + 1);  // both sends in one io_uring_enter
    assert_bytes(read_avail(r.pg), q);
    assert_bytes(read_avail(r.app), reply);
    assert_false(r.client.has_deferred());
    assert_false(r.server.has_deferred());
}

// Batched bytes are held until send_batch(); a socket's later bytes join them in order, a
// send too big to batch goes out at once behind them, close() sends them first.
void test_batch_order_and_close(void**) {
    Rig r;
    if (!ring_or_skip())
        return;
    SBuf::set_batching(true);
    const std::string a = msg('N', "first"), b = msg('N', "second");
    r.client.queue(a);
    assert_true(r.client.flush_out());
    assert_true(r.client.has_deferred());
    assert_true(r.client.at_rest());  // batched bytes leave at the end of the turn anyway
    r.client.queue(b);
    assert_true(r.client.flush_out());
    assert_bytes(read_avail(r.app), "");  // nothing sent yet
    r.server.queue(a);
    assert_true(r.server.flush_out());
    const std::string big = msg('d', pattern(9000, 3));  // over the batch's per-send limit
    r.server.queue(big);
    assert_true(r.server.flush_out());
    assert_false(r.server.has_deferred());
    assert_bytes(read_avail(r.pg), a + big);  // the batched bytes first
    r.client.close();  // sends its batched bytes before closing
    assert_bytes(read_avail(r.app), a + b);
    SBuf::send_batch();
    SBuf::set_batching(false);
    assert_bytes(read_avail(r.pg), "");
    assert_true(r.sown.events.empty());
}

// A batched send the socket cannot take: the rest waits in out_ (front), the socket asks
// for write reports, a peer forwarding to it is held back (flow control), and everything
// arrives in order once the other end reads.
void test_batch_socket_full(void**) {
    Rig r(4096);
    if (!ring_or_skip())
        return;
    // Fill the server socket towards the fake PostgreSQL with whole messages; the one the
    // socket cut short is finished through the batch.
    std::string filler;
    SBuf::set_batching(true);
    for (;;) {
        std::string chunk = msg('d', pattern(1000, static_cast<uint32_t>(filler.size())));
        size_t n = write_some(r.server.fd(), chunk);
        filler += chunk.substr(0, n);
        if (n < chunk.size()) {
            r.server.queue(chunk.substr(n));
            filler += chunk.substr(n);
            break;
        }
    }
    // A second socket in the batch: the batch goes through io_uring, not a plain send().
    const std::string note = msg('N', "to the client");
    r.client.queue(note);
    assert_true(r.client.flush_out());
    const std::string m = msg('N', "after the filler");
    r.server.queue(m);
    assert_true(r.server.flush_out());
    assert_true(r.server.has_deferred());
    uint64_t batches = SBuf::ring_batches();
    SBuf::send_batch();
    SBuf::set_batching(false);
    assert_int_equal(SBuf::ring_batches(), batches + 1);
    assert_false(r.server.has_deferred());
    assert_true(r.server.has_output());  // the socket took nothing: all of it in out_
    assert_bytes(read_avail(r.app), note);
    // The client's next query is not batched behind a full socket: it is held back.
    const std::string q = query("select 2");
    assert_int_equal(write_some(r.app, q), q.size());
    r.pump(2);
    assert_true(r.client.blocked());
    std::string want = filler + m + q;
    std::string got;
    for (int i = 0; got.size() < want.size() && i < 100000; ++i) {
        got += read_avail(r.pg);
        r.pump(1);
    }
    assert_bytes(got, want);
    assert_false(r.client.blocked());
    assert_true(r.sown.events.empty());
}

// A batched send to a socket whose other end is gone: the owner hears a SocketError from the
// socket's own send, after the batch (never from inside send_batch()).
void test_batch_send_error_reported(void**) {
    Rig r;
    if (!ring_or_skip())
        return;
    ::close(r.pg);
    r.pg = -1;
    SBuf::set_batching(true);
    r.server.queue(msg('N', "nobody reads this"));
    assert_true(r.server.flush_out());
    const std::string note = msg('N', "to the client");  // two sockets: through io_uring
    r.client.queue(note);
    assert_true(r.client.flush_out());
    uint64_t batches = SBuf::ring_batches();
    SBuf::send_batch();
    assert_int_equal(SBuf::ring_batches(), batches + 1);
    assert_bytes(read_avail(r.app), note);
    SBuf::set_batching(false);
    assert_true(r.sown.events.empty());
    r.pump(2);
    assert_true(r.sown.saw(SBufEvent::SocketError) || r.sown.saw(SBufEvent::Eof));
}

}  // namespace

int main() {
    sluice::sbuf_set_buffer_size(kBufSize);
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_as_bytes_arrive),
        cmocka_unit_test(test_header_split_at_every_offset),
        cmocka_unit_test(test_two_packets_in_one_write),
        cmocka_unit_test(test_large_message_streams_bounded),
        cmocka_unit_test(test_hold_shows_complete_packet),
        cmocka_unit_test(test_hold_larger_than_buffer),
        cmocka_unit_test(test_hold_too_long),
        cmocka_unit_test(test_skip_drops_bytes),
        cmocka_unit_test(test_queue_keeps_order),
        cmocka_unit_test(test_pause_then_resume),
        cmocka_unit_test(test_pause_mid_stream),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_peer_closed_while_blocked),
        cmocka_unit_test(test_eof_reported),
        cmocka_unit_test(test_eof_after_data_reported),
        cmocka_unit_test(test_server_fatal_then_close),
        cmocka_unit_test(test_eof_waits_for_pending_data),
        cmocka_unit_test(test_bad_header_reported),
        cmocka_unit_test(test_bad_header_after_split),
        cmocka_unit_test(test_max_packet_enforced),
        cmocka_unit_test(test_plain_run_and_packets_interleave),
        cmocka_unit_test(test_plain_run_refuses_bad_header),
        cmocka_unit_test(test_plain_run_needs_peer),
        cmocka_unit_test(test_idle_output_block_freed),
        cmocka_unit_test(test_idle_clients_park_few_buffers),
        cmocka_unit_test(test_close_then_attach_again),
        cmocka_unit_test(test_batch_both_directions_in_one_turn),
        cmocka_unit_test(test_batch_order_and_close),
        cmocka_unit_test(test_batch_socket_full),
        cmocka_unit_test(test_batch_send_error_reported),
    };
    // Every test in each shape of the loop: the proactor (the default where a system call is
    // dear), the epoll set (cheap calls, TLS sockets, kernels without io_uring), and the
    // fallback through libevent.
    g_loop_opts.proactor = sluice::LoopOptions::Proactor::On;
    int failed = cmocka_run_group_tests_name("sbuf, proactor", tests, nullptr, nullptr);
    g_loop_opts.proactor = sluice::LoopOptions::Proactor::Off;
    failed += cmocka_run_group_tests_name("sbuf, epoll", tests, nullptr, nullptr);
    g_loop_opts.nest_libevent = false;
    failed += cmocka_run_group_tests_name("sbuf, fallback loop", tests, nullptr, nullptr);
    sluice::sbuf_release_buffers();  // the buffer pool is process-wide: empty it for LSan
    return failed;
}
