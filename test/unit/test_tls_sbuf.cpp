// SBuf in TLS mode over real AF_UNIX socketpairs, with the event loop driven by the test:
//
//   app (plain fd) <== pair A ==> [client SBuf, plain] <-link-> [server SBuf, TLS connect]
//                                   <== pair B (tiny buffers) ==> [pg SBuf, TLS accept]
//
// A self-signed certificate is made in memory and written to a temp dir for tls_init().
// Pair B gets 4 KB socket buffers so that SSL_write hits WANT_WRITE and resumes on EV_WRITE,
// and SSL_read leaves whole records inside OpenSSL while the socket is empty.
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
extern "C" {
#include <cmocka.h>
}

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <random>
#include <signal.h>
#include <span>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "sluice/config/config.h"
#include "sluice/net/loop.h"
#include "sluice/net/sbuf.h"
#include "sluice/net/tls.h"
#include "sluice/proto/packet.h"

namespace {

using sluice::PacketAction;
using sluice::PacketHeader;
using sluice::SBuf;
using sluice::SBufEvent;

// The loop the rigs use: plain sockets read through io_uring (a TLS start leaves the ring
// first), then all in the epoll set.
sluice::LoopOptions g_loop_opts;

std::string g_dir;

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

// Many messages of random sizes (a few bytes to 70 KB), fixed seed.
std::string stream(size_t total, uint32_t seed) {
    std::mt19937 rng(seed);
    std::string out;
    while (out.size() < total) {
        size_t n = rng() % 4 == 0 ? rng() % 70000 : rng() % 300;
        std::string body(n, '\0');
        for (char& c : body)
            c = static_cast<char>('a' + rng() % 26);
        out += msg('d', body);
    }
    return out;
}

// The TLS end that plays PostgreSQL: keeps every complete packet, answers nothing itself.
class Owner final : public sluice::SBufOwner {
public:
    std::vector<SBufEvent> events;
    std::string got;            // bytes of complete packets (hold mode)
    bool hold = false;          // true: hold each packet whole and keep it; false: forward
    bool accept_hello = false;  // TlsHello: start TLS with the buffered ClientHello

    PacketAction on_packet(SBuf&, const PacketHeader& hdr, std::span<const uint8_t> data) override {
        if (!hold)
            return PacketAction::Forward;
        if (data.size() < hdr.len)
            return PacketAction::Hold;
        got.append(reinterpret_cast<const char*>(data.data()), data.size());
        return PacketAction::Skip;
    }
    void on_sbuf_event(SBuf& sb, SBufEvent ev) override {
        events.push_back(ev);
        if (ev == SBufEvent::TlsHello && accept_hello) {
            SSL* ssl = sluice::tls_new_accept();
            assert_non_null(ssl);
            assert_true(sb.start_tls(ssl, true));
            return;
        }
        if (ev != SBufEvent::TlsReady && ev != SBufEvent::Connected && ev != SBufEvent::TlsHello)
            sb.close();
    }
    void on_sbuf_drained(SBuf&) override {}
    bool saw(SBufEvent ev) const {
        for (SBufEvent e : events)
            if (e == ev)
                return true;
        return false;
    }
};

void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    assert_true(fl >= 0);
    assert_int_equal(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

struct Rig {
    event_base* base = nullptr;
    int app = -1;
    SBuf client, server, pg;
    Owner cown, sown, pown;

    Rig() {
        std::string err;
        base = sluice::loop_create(err, g_loop_opts);
        assert_non_null(base);
        int a[2], b[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
        int small = 4096;
        for (int fd : {b[0], b[1]}) {
            assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
            assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
        }
        for (int fd : {a[0], a[1], b[0], b[1]})
            set_nonblock(fd);
        app = a[0];
        assert_true(client.attach(a[1], &cown, false));
        assert_true(server.attach(b[1], &sown, false));
        assert_true(pg.attach(b[0], &pown, false));
        pown.hold = true;
        pump();
    }
    ~Rig() {
        client.close();
        server.close();
        pg.close();
        if (app >= 0)
            ::close(app);
        sluice::loop_destroy();
    }
    Rig(const Rig&) = delete;
    Rig& operator=(const Rig&) = delete;

    void pump(int turns = 4) {
        for (int i = 0; i < turns; ++i)
            sluice::loop_turn(0);
    }
    // Both ends of pair B do TLS (SSLRequest-style: nothing buffered before).
    void handshake() {
        SSL* c = sluice::tls_new_connect("localhost");
        SSL* s = sluice::tls_new_accept();
        assert_non_null(c);
        assert_non_null(s);
        assert_true(server.start_tls(c, false));
        assert_true(pg.start_tls(s, false));
        for (int i = 0;
             i < 1000 && !(sown.saw(SBufEvent::TlsReady) && pown.saw(SBufEvent::TlsReady)); ++i)
            pump(1);
        assert_true(sown.saw(SBufEvent::TlsReady));
        assert_true(pown.saw(SBufEvent::TlsReady));
        assert_true(server.is_tls());
        assert_true(pg.is_tls());
    }
};

size_t write_some(int fd, std::string_view s) {
    for (;;) {
        ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
        if (n >= 0)
            return static_cast<size_t>(n);
        if (errno == EINTR)
            continue;
        return 0;
    }
}

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
        return out;
    }
}

// --- fixtures ------------------------------------------------------------------------------

// A self-signed P-256 certificate for "localhost", written as PEM into g_dir.
void write_cert() {
    EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    assert_non_null(key);
    X509* x = X509_new();
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME* name = X509_get_subject_name(x);
    static const unsigned char cn[] = "localhost";
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    FILE* f = fopen((g_dir + "/cert.pem").c_str(), "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, x), 1);
    fclose(f);
    f = fopen((g_dir + "/key.pem").c_str(), "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr), 1);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
}

sluice::Settings tls_settings() {
    sluice::Settings s;
    s.client_tls_sslmode = sluice::SslMode::Require;
    s.client_tls_cert_file = g_dir + "/cert.pem";
    s.client_tls_key_file = g_dir + "/key.pem";
    s.server_tls_sslmode = sluice::SslMode::Require;  // no certificate check
    return s;
}

int setup(void**) {
    char tmpl[] = "/tmp/sluice-tls-unit-XXXXXX";
    char* d = mkdtemp(tmpl);
    if (!d)
        return -1;
    g_dir = d;
    write_cert();
    std::string err;
    if (!sluice::tls_init(tls_settings(), err)) {
        fprintf(stderr, "tls_init: %s\n", err.c_str());
        return -1;
    }
    sluice::sbuf_set_buffer_size(4096);
    return 0;
}

int teardown(void**) {
    sluice::tls_free_all();
    sluice::sbuf_release_buffers();
    unlink((g_dir + "/cert.pem").c_str());
    unlink((g_dir + "/key.pem").c_str());
    rmdir(g_dir.c_str());
    return 0;
}

// --- tests ---------------------------------------------------------------------------------

void test_handshake_and_describe(void**) {
    Rig r;
    char plain[16];
    r.server.tls_describe(plain, sizeof plain);
    assert_string_equal(plain, "no");
    r.handshake();
    char info[128];
    r.server.tls_describe(info, sizeof info);
    assert_true(std::string_view(info).starts_with("TLSv1.3/TLS_"));
    assert_true(std::string_view(info).find("/ECDH=") != std::string_view::npos);
}

// Owner-built bytes (out_) through TLS both ways, bigger than every buffer on the way.
void test_queued_output_both_ways(void**) {
    Rig r;
    r.handshake();
    r.sown.hold = true;
    std::string a = stream(3u << 20, 11);
    std::string b = stream(2u << 20, 12);
    r.server.queue(a);
    assert_true(r.server.flush_out());
    r.pg.queue(b);
    assert_true(r.pg.flush_out());
    for (int i = 0; i < 200000 && (r.pown.got.size() < a.size() || r.sown.got.size() < b.size());
         ++i)
        r.pump(1);
    assert_int_equal(r.pown.got.size(), a.size());
    assert_true(r.pown.got == a);
    assert_int_equal(r.sown.got.size(), b.size());
    assert_true(r.sown.got == b);
    assert_false(r.server.has_output());
    assert_false(r.pg.has_output());
}

// The forward path: app -> client (plain) -> server (TLS) -> pg, and pg -> server -> client
// -> app, with partial TLS writes and backpressure on both links.
void test_forward_through_tls(void**) {
    Rig r;
    r.handshake();
    SBuf::link(r.client, r.server);
    std::string up = stream(4u << 20, 21);
    size_t off = 0;
    for (int i = 0; i < 400000 && r.pown.got.size() < up.size(); ++i) {
        if (off < up.size())
            off += write_some(r.app, std::string_view(up).substr(off, 65536));
        r.pump(1);
    }
    assert_int_equal(r.pown.got.size(), up.size());
    assert_true(r.pown.got == up);

    std::string down = stream(4u << 20, 22);
    r.pg.queue(down);
    assert_true(r.pg.flush_out());
    std::string got;
    for (int i = 0; i < 400000 && got.size() < down.size(); ++i) {
        r.pump(1);
        got += read_avail(r.app);
    }
    assert_int_equal(got.size(), down.size());
    assert_true(got == down);
    assert_false(r.client.blocked());
    assert_false(r.server.blocked());
}

// Direct TLS: the accepting side first reads the ClientHello as plain bytes in startup mode,
// the owner starts TLS from the TlsHello event and OpenSSL gets those bytes back.
void test_direct_tls_replays_client_hello(void**) {
    Rig r;
    r.pg.set_startup(true);
    r.pown.accept_hello = true;
    SSL* c = sluice::tls_new_connect("localhost");
    assert_non_null(c);
    assert_true(r.server.start_tls(c, false));
    for (int i = 0;
         i < 1000 && !(r.sown.saw(SBufEvent::TlsReady) && r.pown.saw(SBufEvent::TlsReady)); ++i)
        r.pump(1);
    assert_true(r.pown.saw(SBufEvent::TlsHello));
    assert_true(r.pown.saw(SBufEvent::TlsReady));
    assert_true(r.sown.saw(SBufEvent::TlsReady));
    assert_true(sluice::tls_alpn_postgresql(r.pg.tls()));
    // and the session carries data
    r.pg.set_startup(false);
    std::string a = msg('Q', std::string("SELECT 1") + '\0');
    r.server.queue(a);
    assert_true(r.server.flush_out());
    for (int i = 0; i < 100 && r.pown.got.size() < a.size(); ++i)
        r.pump(1);
    assert_true(r.pown.got == a);
}

// A TLS handshake that cannot succeed (plain garbage instead of a ServerHello) is reported.
void test_handshake_failure_reported(void**) {
    {
        Rig r;  // plain bytes where the ServerHello should be
        r.pg.queue("this is not TLS at all, just some plain bytes\n");
        assert_true(r.pg.flush_out());
        SSL* c = sluice::tls_new_connect("localhost");
        assert_non_null(c);
        assert_true(r.server.start_tls(c, false));
        for (int i = 0; i < 100 && !r.sown.saw(SBufEvent::TlsFailed); ++i)
            r.pump(1);
        assert_true(r.sown.saw(SBufEvent::TlsFailed));
        assert_true(r.server.closed());
        assert_true(std::string_view(sluice::tls_last_error()).size() > 0);
    }
    {
        Rig r;  // the peer hangs up on the ClientHello (BadPacket: it speaks no TLS)
        r.pg.set_startup(true);
        SSL* c = sluice::tls_new_connect("localhost");
        assert_non_null(c);
        assert_true(r.server.start_tls(c, false));
        for (int i = 0; i < 100 && !r.sown.saw(SBufEvent::TlsFailed); ++i)
            r.pump(1);
        assert_true(r.pown.saw(SBufEvent::TlsHello));
        assert_true(r.pown.saw(SBufEvent::BadPacket));
        assert_true(r.sown.saw(SBufEvent::TlsFailed));
    }
}

// RELOAD: same settings = nothing; a bad setting keeps the old contexts.
void test_reload_rules(void**) {
    std::string err;
    bool server_changed = true;
    sluice::Settings s = tls_settings();
    assert_int_equal(static_cast<int>(sluice::tls_reload(s, err, server_changed)),
                     static_cast<int>(sluice::TlsReload::Unchanged));
    s.client_tls_protocols = "tlsv1.2,bogus";
    assert_int_equal(static_cast<int>(sluice::tls_reload(s, err, server_changed)),
                     static_cast<int>(sluice::TlsReload::Failed));
    assert_string_equal(err.c_str(), "invalid client_tls_protocols: tlsv1.2,bogus");
    assert_int_equal(static_cast<int>(sluice::tls_client_mode()),
                     static_cast<int>(sluice::SslMode::Require));
    s = tls_settings();
    s.server_tls_sslmode = sluice::SslMode::Prefer;
    assert_int_equal(static_cast<int>(sluice::tls_reload(s, err, server_changed)),
                     static_cast<int>(sluice::TlsReload::Rebuilt));
    assert_true(server_changed);
    assert_int_equal(static_cast<int>(sluice::tls_server_mode()),
                     static_cast<int>(sluice::SslMode::Prefer));
    for (const char* bad : {"client_tls_ciphers", "client_tls13_ciphers", "client_tls_ecdhcurve",
                            "client_tls_dheparams"}) {
        sluice::Settings t = tls_settings();
        std::string* field =
            std::string_view(bad) == "client_tls_ciphers"     ? &t.client_tls_ciphers
            : std::string_view(bad) == "client_tls13_ciphers" ? &t.client_tls13_ciphers
            : std::string_view(bad) == "client_tls_ecdhcurve" ? &t.client_tls_ecdhcurve
                                                              : &t.client_tls_dheparams;
        *field = "NO_SUCH_THING";
        assert_int_equal(static_cast<int>(sluice::tls_reload(t, err, server_changed)),
                         static_cast<int>(sluice::TlsReload::Failed));
        assert_true(err.find(bad) != std::string::npos);
    }
    sluice::Settings ok = tls_settings();
    ok.client_tls_protocols = "all,!tlsv1.0";
    ok.client_tls_ciphers = "all";
    ok.client_tls13_ciphers = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";
    ok.client_tls_ecdhcurve = "prime256v1";
    ok.client_tls_dheparams = "legacy";
    sluice::TlsReload res = sluice::tls_reload(ok, err, server_changed);
    if (res != sluice::TlsReload::Rebuilt)
        fail_msg("tls_reload: %s", err.c_str());
    assert_true(sluice::tls_init(tls_settings(), err));
}

}  // namespace

int main() {
    signal(SIGPIPE, SIG_IGN);  // as sluice's main: a closed peer is an error, not a signal
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_and_describe),
        cmocka_unit_test(test_queued_output_both_ways),
        cmocka_unit_test(test_forward_through_tls),
        cmocka_unit_test(test_direct_tls_replays_client_hello),
        cmocka_unit_test(test_handshake_failure_reported),
        cmocka_unit_test(test_reload_rules),
    };
    g_loop_opts.proactor = sluice::LoopOptions::Proactor::On;
    int failed = cmocka_run_group_tests_name("tls_sbuf, proactor", tests, setup, teardown);
    g_loop_opts.proactor = sluice::LoopOptions::Proactor::Off;
    failed += cmocka_run_group_tests_name("tls_sbuf, epoll", tests, setup, teardown);
    return failed;
}
