// TLS contexts built from the client_tls_* / server_tls_* settings, the SSL objects of single
// connections, and their description for log lines. SBuf (sbuf.cpp) drives the handshakes and
// moves the bytes; this file never touches a socket.
#include "sluice/net/tls.h"

#include <arpa/inet.h>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string_view>
#include <strings.h>
#include <vector>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "sluice/util/hex.h"
#include "sluice/util/log.h"

namespace sluice {
namespace {

struct CtxFree {
    void operator()(SSL_CTX* c) const noexcept { SSL_CTX_free(c); }
};
using CtxPtr = std::unique_ptr<SSL_CTX, CtxFree>;

// What is in force. The fingerprints hold the settings and the SHA-256 of the files the
// contexts were built from, so that RELOAD can tell whether anything changed.
struct TlsState {
    CtxPtr client_ctx;  // sluice as TLS server for its clients; null = client TLS off
    CtxPtr server_ctx;  // sluice as TLS client of PostgreSQL; null = server TLS off
    SslMode client_mode = SslMode::Disable;
    SslMode server_mode = SslMode::Disable;
    std::string client_fp;
    std::string server_fp;
    bool built = false;
};

TlsState& tls_state() {
    static TlsState s;
    return s;
}

char g_last_error[320];

// ALPN protocol list in wire format: length byte + name.
constexpr unsigned char kAlpnPostgres[] = {10, 'p', 'o', 's', 't', 'g', 'r', 'e', 's', 'q', 'l'};

constexpr std::array<const char*, 5> kTls13Suites = {
    "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256",
    "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"};

bool ieq(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

// Splits on any of `seps`; items are trimmed, empty ones dropped.
std::vector<std::string_view> split_any(std::string_view s, std::string_view seps) {
    std::vector<std::string_view> out;
    while (!s.empty()) {
        size_t i = s.find_first_of(seps);
        std::string_view item = trim(s.substr(0, i));
        if (!item.empty())
            out.push_back(item);
        if (i == std::string_view::npos)
            break;
        s.remove_prefix(i + 1);
    }
    return out;
}

// Drains OpenSSL's error queue into one line ("reason (detail); reason").
std::string openssl_errors() {
    std::string out;
    const char* data = nullptr;
    int flags = 0;
    unsigned long e;
    while ((e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) != 0) {
        if (!out.empty())
            out += "; ";
        const char* reason = ERR_reason_error_string(e);
        if (reason) {
            out += reason;
        } else {
            char buf[256];
            ERR_error_string_n(e, buf, sizeof(buf));
            out += buf;
        }
        if ((flags & ERR_TXT_STRING) && data && *data) {
            out += " (";
            out += data;
            out += ")";
        }
    }
    return out.empty() ? std::string("unknown error") : out;
}

// TLS protocol versions as a bit set, parsed like PgBouncer (libusual's
// tls_config_parse_protocols): items separated by ',' or ':', '!' removes.
constexpr unsigned kTls10 = 1, kTls11 = 2, kTls12 = 4, kTls13 = 8;
constexpr unsigned kTlsAll = kTls10 | kTls11 | kTls12 | kTls13;
constexpr unsigned kTlsSecure = kTls12 | kTls13;

bool parse_protocols(std::string_view text, unsigned& out) {
    if (trim(text).empty()) {
        out = kTlsSecure;
        return true;
    }
    unsigned mask = 0;
    for (std::string_view item : split_any(text, ",:")) {
        bool negate = item.front() == '!';
        if (negate) {
            item = trim(item.substr(1));
            if (mask == 0)
                mask = kTlsAll;
        }
        unsigned p = 0;
        if (ieq(item, "all") || ieq(item, "legacy") || ieq(item, "tlsv1"))
            p = kTlsAll;
        else if (ieq(item, "default") || ieq(item, "secure"))
            p = kTlsSecure;
        else if (ieq(item, "tlsv1.0"))
            p = kTls10;
        else if (ieq(item, "tlsv1.1"))
            p = kTls11;
        else if (ieq(item, "tlsv1.2"))
            p = kTls12;
        else if (ieq(item, "tlsv1.3"))
            p = kTls13;
        if (p == 0)
            return false;
        mask = negate ? mask & ~p : mask | p;
    }
    out = mask;
    return mask != 0;
}

// Allowed versions = [lowest, highest] minus the holes (SSL_OP_NO_TLSv1_x).
bool apply_protocols(SSL_CTX* ctx, unsigned mask) {
    static constexpr int kVersions[4] = {TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION,
                                         TLS1_3_VERSION};
    static constexpr uint64_t kNoFlags[4] = {SSL_OP_NO_TLSv1, SSL_OP_NO_TLSv1_1, SSL_OP_NO_TLSv1_2,
                                             SSL_OP_NO_TLSv1_3};
    int lo = -1, hi = -1;
    for (int i = 0; i < 4; ++i) {
        if (mask & (1u << i)) {
            if (lo < 0)
                lo = i;
            hi = i;
        }
    }
    if (lo < 0)
        return false;
    if (SSL_CTX_set_min_proto_version(ctx, kVersions[lo]) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, kVersions[hi]) != 1)
        return false;
    for (int i = lo + 1; i < hi; ++i)
        if (!(mask & (1u << i)))
            SSL_CTX_set_options(ctx, kNoFlags[i]);
    return true;
}

// The shortcuts PgBouncer documents as "the OpenSSL defaults".
bool is_default_ciphers(std::string_view v) {
    v = trim(v);
    return v.empty() || ieq(v, "default") || ieq(v, "secure") || ieq(v, "fast") ||
           ieq(v, "normal") || ieq(v, "compat") || ieq(v, "legacy");
}

bool apply_ciphers(SSL_CTX* ctx, const std::string& value) {
    if (is_default_ciphers(value))
        return true;
    std::string_view v = trim(value);
    std::string list = ieq(v, "all") || ieq(v, "insecure") ? "ALL:!aNULL:!eNULL" : std::string(v);
    return SSL_CTX_set_cipher_list(ctx, list.c_str()) == 1;
}

bool apply_tls13_ciphers(SSL_CTX* ctx, const std::string& value) {
    if (is_default_ciphers(value))
        return true;
    std::string list;
    if (ieq(trim(value), "all")) {
        for (const char* s : kTls13Suites)
            list += list.empty() ? s : std::string(":") + s;
    } else {
        // OpenSSL silently skips unknown TLS 1.3 suite names: check them ourselves.
        for (std::string_view item : split_any(value, ":,")) {
            bool known = false;
            for (const char* s : kTls13Suites)
                known = known || item == s;
            if (!known)
                return false;
            if (!list.empty())
                list += ':';
            list.append(item);
        }
        if (list.empty())
            return false;
    }
    return SSL_CTX_set_ciphersuites(ctx, list.c_str()) == 1;
}

bool apply_ecdhcurve(SSL_CTX* ctx, const std::string& value) {
    std::string_view v = trim(value);
    // none/auto: OpenSSL's own group list (it always offers ECDHE; libusual did the same).
    if (v.empty() || ieq(v, "none") || ieq(v, "auto"))
        return true;
    std::string name(v);
    int nid = OBJ_sn2nid(name.c_str());
    if (nid == NID_undef)
        nid = OBJ_txt2nid(name.c_str());
    if (nid != NID_undef && SSL_CTX_set1_groups(ctx, &nid, 1) == 1)
        return true;
    ERR_clear_error();
    return SSL_CTX_set1_groups_list(ctx, name.c_str()) == 1;
}

bool apply_dheparams(SSL_CTX* ctx, const std::string& value) {
    std::string_view v = trim(value);
    if (ieq(v, "none"))
        return SSL_CTX_set_dh_auto(ctx, 0) == 1;
    if (v.empty() || ieq(v, "auto"))
        return SSL_CTX_set_dh_auto(ctx, 1) == 1;
    // 1024-bit DH for old clients: OpenSSL's auto mode 2, as libusual does. At security
    // level 2 (Debian's default) OpenSSL then simply offers no DHE suites.
    if (ieq(v, "legacy"))
        return SSL_CTX_set_dh_auto(ctx, 2) == 1;
    return false;
}

// Never prompt on the terminal for a key passphrase: encrypted keys are a config error.
int no_passphrase(char*, int, int, void*) {
    return 0;
}

// Settings shared by both directions. `pfx` is "client_tls" or "server_tls" for messages.
bool common_setup(SSL_CTX* ctx, const char* pfx, const std::string& protocols,
                  const std::string& ciphers, const std::string& tls13, std::string& err) {
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // An abrupt close (no close_notify) is an ordinary EOF: libpq clients often just close.
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    unsigned mask = 0;
    if (!parse_protocols(protocols, mask) || !apply_protocols(ctx, mask)) {
        err = std::string("invalid ") + pfx + "_protocols: " + protocols;
        return false;
    }
    if (!apply_ciphers(ctx, ciphers)) {
        err = std::string("invalid ") + pfx + "_ciphers: " + ciphers;
        return false;
    }
    if (!apply_tls13_ciphers(ctx, tls13)) {
        err = std::string("invalid ") + (pfx[0] == 'c' ? "client_tls13" : "server_tls13") +
              "_ciphers: " + tls13;
        return false;
    }
    return true;
}

bool load_keypair(SSL_CTX* ctx, const char* pfx, const std::string& cert, const std::string& key,
                  std::string& err) {
    if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
        err = std::string("invalid ") + pfx + "_cert_file: " + cert + ": " + openssl_errors();
        return false;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
        err = std::string("invalid ") + pfx + "_key_file: " + key + ": " + openssl_errors();
        return false;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        err = std::string(pfx) + "_key_file " + key + " does not match " + pfx + "_cert_file " +
              cert + ": " + openssl_errors();
        return false;
    }
    return true;
}

bool load_ca(SSL_CTX* ctx, const char* pfx, const std::string& ca, std::string& err) {
    if (ca.empty()) {
        SSL_CTX_set_default_verify_paths(ctx);  // the system bundle, like libusual
        ERR_clear_error();
        return true;
    }
    if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
        err = std::string("invalid ") + pfx + "_ca_file: " + ca + ": " + openssl_errors();
        return false;
    }
    return true;
}

// Clients offering ALPN must offer "postgresql" (PostgreSQL 17 does the same); clients
// without ALPN are let through here (direct TLS checks for it after the handshake).
int alpn_select(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, outlen, kAlpnPostgres, sizeof(kAlpnPostgres), in, inlen) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

// Context for accepting clients; null (and no error) when client TLS is disabled.
CtxPtr build_client_ctx(const Settings& s, std::string& err) {
    SslMode mode = s.client_tls_sslmode;
    if (s.auth_type == AuthType::Cert) {
        if (mode != SslMode::VerifyFull) {
            err = "auth_type=cert requires client_tls_sslmode=verify-full";
            return {};
        }
        if (s.client_tls_ca_file.empty()) {
            err = "auth_type=cert requires client_tls_ca_file";
            return {};
        }
    } else if (mode == SslMode::VerifyFull && s.client_tls_ca_file.empty()) {
        err = "client_tls_sslmode requires client_tls_ca_file";
        return {};
    }
    if (mode == SslMode::Disable)
        return {};
    if (s.client_tls_key_file.empty() || s.client_tls_cert_file.empty()) {
        err = "To allow TLS connections from clients, client_tls_key_file and "
              "client_tls_cert_file must be set.";
        return {};
    }
    CtxPtr ctx(SSL_CTX_new(TLS_server_method()));
    if (!ctx) {
        err = "SSL_CTX_new failed: " + openssl_errors();
        return {};
    }
    SSL_CTX* c = ctx.get();
    if (!common_setup(c, "client_tls", s.client_tls_protocols, s.client_tls_ciphers,
                      s.client_tls13_ciphers, err))
        return {};
    SSL_CTX_set_options(c, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    static const unsigned char sid_ctx[] = "sluice";
    SSL_CTX_set_session_id_context(c, sid_ctx, sizeof(sid_ctx) - 1);
    if (!load_keypair(c, "client_tls", s.client_tls_cert_file, s.client_tls_key_file, err))
        return {};
    if (!apply_dheparams(c, s.client_tls_dheparams)) {
        ERR_clear_error();
        err = "invalid client_tls_dheparams: " + s.client_tls_dheparams;
        return {};
    }
    if (!apply_ecdhcurve(c, s.client_tls_ecdhcurve)) {
        ERR_clear_error();
        err = "invalid client_tls_ecdhcurve: " + s.client_tls_ecdhcurve;
        return {};
    }
    // verify-ca/verify-full: a client certificate is required and verified. Below that a
    // certificate is asked for (and verified when sent) only when a CA file is configured.
    bool require_cert = mode >= SslMode::VerifyCa;
    if (require_cert || !s.client_tls_ca_file.empty()) {
        if (!load_ca(c, "client_tls", s.client_tls_ca_file, err))
            return {};
        if (!s.client_tls_ca_file.empty()) {
            if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(s.client_tls_ca_file.c_str()))
                SSL_CTX_set_client_CA_list(c, names);
            ERR_clear_error();
        }
        SSL_CTX_set_verify(
            c, SSL_VERIFY_PEER | (require_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), nullptr);
    }
    SSL_CTX_set_alpn_select_cb(c, alpn_select, nullptr);
    return ctx;
}

// Context for connecting to servers; null (and no error) when server TLS is disabled.
CtxPtr build_server_ctx(const Settings& s, std::string& err) {
    SslMode mode = s.server_tls_sslmode;
    if (mode == SslMode::Disable)
        return {};
    CtxPtr ctx(SSL_CTX_new(TLS_client_method()));
    if (!ctx) {
        err = "SSL_CTX_new failed: " + openssl_errors();
        return {};
    }
    SSL_CTX* c = ctx.get();
    if (!common_setup(c, "server_tls", s.server_tls_protocols, s.server_tls_ciphers,
                      s.server_tls13_ciphers, err))
        return {};
    if (!s.server_tls_cert_file.empty() || !s.server_tls_key_file.empty()) {
        if (s.server_tls_cert_file.empty() || s.server_tls_key_file.empty()) {
            err = "server_tls_cert_file and server_tls_key_file must be set together";
            return {};
        }
        if (!load_keypair(c, "server_tls", s.server_tls_cert_file, s.server_tls_key_file, err))
            return {};
    }
    if (mode >= SslMode::VerifyCa) {
        if (!load_ca(c, "server_tls", s.server_tls_ca_file, err))
            return {};
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
    } else {
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
    }
    if (SSL_CTX_set_alpn_protos(c, kAlpnPostgres, sizeof(kAlpnPostgres)) != 0) {
        err = "cannot set ALPN: " + openssl_errors();
        return {};
    }
    return ctx;
}

// "sha256 hex" of a file's content, or a marker naming why it cannot be read.
std::string file_digest(const std::string& path) {
    if (path.empty())
        return "-";
    FILE* f = fopen(path.c_str(), "rb");
    if (!f)
        return std::string("unreadable:") + strerror(errno);
    EVP_MD_CTX* md = EVP_MD_CTX_new();
    std::string out = "unreadable";
    if (md && EVP_DigestInit_ex(md, EVP_sha256(), nullptr) == 1) {
        std::array<unsigned char, 8192> buf;
        size_t n;
        bool ok = true;
        while ((n = fread(buf.data(), 1, buf.size(), f)) > 0)
            ok = ok && EVP_DigestUpdate(md, buf.data(), n) == 1;
        std::array<unsigned char, EVP_MAX_MD_SIZE> dig;
        unsigned int len = 0;
        if (ok && !ferror(f) && EVP_DigestFinal_ex(md, dig.data(), &len) == 1) {
            out.clear();
            append_hex(out, dig.data(), len);
        }
    }
    EVP_MD_CTX_free(md);
    fclose(f);
    return out;
}

void fp_add(std::string& fp, std::string_view v) {
    fp.append(v);
    fp.push_back('\n');
}

std::string client_fingerprint(const Settings& s) {
    std::string fp;
    fp_add(fp, ssl_mode_name(s.client_tls_sslmode));
    fp_add(fp, s.auth_type == AuthType::Cert ? "cert" : "-");
    fp_add(fp, s.client_tls_protocols);
    fp_add(fp, s.client_tls_ciphers);
    fp_add(fp, s.client_tls13_ciphers);
    fp_add(fp, s.client_tls_ecdhcurve);
    fp_add(fp, s.client_tls_dheparams);
    for (const std::string* f :
         {&s.client_tls_cert_file, &s.client_tls_key_file, &s.client_tls_ca_file}) {
        fp_add(fp, *f);
        if (s.client_tls_sslmode != SslMode::Disable)
            fp_add(fp, file_digest(*f));
    }
    return fp;
}

std::string server_fingerprint(const Settings& s) {
    std::string fp;
    fp_add(fp, ssl_mode_name(s.server_tls_sslmode));
    fp_add(fp, s.server_tls_protocols);
    fp_add(fp, s.server_tls_ciphers);
    fp_add(fp, s.server_tls13_ciphers);
    for (const std::string* f :
         {&s.server_tls_cert_file, &s.server_tls_key_file, &s.server_tls_ca_file}) {
        fp_add(fp, *f);
        if (s.server_tls_sslmode != SslMode::Disable)
            fp_add(fp, file_digest(*f));
    }
    return fp;
}

// Builds both contexts; installs them only when both could be built.
bool build_and_install(const Settings& s, std::string& err) {
    CtxPtr server = build_server_ctx(s, err);
    if (!err.empty())
        return false;
    CtxPtr client = build_client_ctx(s, err);
    if (!err.empty())
        return false;
    TlsState& st = tls_state();
    st.client_ctx = std::move(client);
    st.server_ctx = std::move(server);
    st.client_mode = st.client_ctx ? s.client_tls_sslmode : SslMode::Disable;
    st.server_mode = st.server_ctx ? s.server_tls_sslmode : SslMode::Disable;
    st.built = true;
    return true;
}

bool is_ip_literal(const std::string& host) {
    unsigned char buf[sizeof(in6_addr)];
    return inet_pton(AF_INET, host.c_str(), buf) == 1 ||
           inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

bool tls_init(const Settings& s, std::string& err) {
    err.clear();
    if (!build_and_install(s, err)) {
        ERR_clear_error();
        return false;
    }
    tls_state().client_fp = client_fingerprint(s);
    tls_state().server_fp = server_fingerprint(s);
    return true;
}

TlsReload tls_reload(const Settings& s, std::string& err, bool& server_changed) {
    err.clear();
    server_changed = false;
    TlsState& st = tls_state();
    std::string cfp = client_fingerprint(s);
    std::string sfp = server_fingerprint(s);
    if (st.built && cfp == st.client_fp && sfp == st.server_fp)
        return TlsReload::Unchanged;
    if (!build_and_install(s, err)) {
        ERR_clear_error();
        return TlsReload::Failed;
    }
    server_changed = sfp != st.server_fp;
    st.client_fp = std::move(cfp);
    st.server_fp = std::move(sfp);
    return TlsReload::Rebuilt;
}

void tls_free_all() noexcept {
    TlsState& st = tls_state();
    st.client_ctx.reset();
    st.server_ctx.reset();
    st.client_mode = st.server_mode = SslMode::Disable;
    st.built = false;
}

SslMode tls_client_mode() noexcept {
    return tls_state().client_mode;
}

SslMode tls_server_mode() noexcept {
    return tls_state().server_mode;
}

SSL* tls_new_accept() noexcept {
    SSL_CTX* ctx = tls_state().client_ctx.get();
    if (!ctx)
        return nullptr;
    SSL* ssl = SSL_new(ctx);
    if (!ssl) {
        std::string e = openssl_errors();
        log_error("SSL_new failed: %s", e.c_str());
        return nullptr;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

SSL* tls_new_connect(const std::string& host) noexcept {
    TlsState& st = tls_state();
    if (!st.server_ctx)
        return nullptr;
    SSL* ssl = SSL_new(st.server_ctx.get());
    if (!ssl) {
        std::string e = openssl_errors();
        log_error("SSL_new failed: %s", e.c_str());
        return nullptr;
    }
    SSL_set_connect_state(ssl);
    bool ip = is_ip_literal(host);
    bool ok = true;
    if (!host.empty() && !ip)
        ok = SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                      const_cast<char*>(host.c_str())) == 1;  // SSL_set_tlsext_host_name
    if (ok && st.server_mode == SslMode::VerifyFull) {
        // verify-full: the certificate must name the [databases] host (DNS name or IP SAN).
        X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) == 1
                : SSL_set1_host(ssl, host.c_str()) == 1;
    }
    if (!ok) {
        std::string e = openssl_errors();
        log_error("cannot set TLS host name \"%s\": %s", host.c_str(), e.c_str());
        SSL_free(ssl);
        return nullptr;
    }
    return ssl;
}

size_t tls_describe(const SSL* ssl, char* buf, size_t size) noexcept {
    if (size == 0)
        return 0;
    int n;
    if (!ssl) {
        n = snprintf(buf, size, "no");
    } else {
        SSL* s = const_cast<SSL*>(ssl);  // OpenSSL's getters below take a non-const SSL*
        const SSL_CIPHER* cipher = SSL_get_current_cipher(s);
        char kx[48] = "";
        int nid = static_cast<int>(SSL_get_negotiated_group(s));
        if (nid > 0 && (nid & TLSEXT_nid_unknown) == 0) {
            switch (nid) {
            case NID_ffdhe2048:
            case NID_ffdhe3072:
            case NID_ffdhe4096:
            case NID_ffdhe6144:
            case NID_ffdhe8192:
                snprintf(kx, sizeof(kx), "/DH=%s", OBJ_nid2sn(nid) + 5);  // "ffdhe2048" -> 2048
                break;
            default:
                snprintf(kx, sizeof(kx), "/ECDH=%s", OBJ_nid2sn(nid));
            }
        } else if (cipher && SSL_CIPHER_get_kx_nid(cipher) == NID_kx_dhe) {
            EVP_PKEY* key = nullptr;
            if (SSL_get_tmp_key(s, &key) == 1 && key)
                snprintf(kx, sizeof(kx), "/DH=%d", EVP_PKEY_get_bits(key));
            else
                snprintf(kx, sizeof(kx), "/DH=?");
            EVP_PKEY_free(key);
        }
        n = snprintf(buf, size, "%s/%s%s", SSL_get_version(s),
                     cipher ? SSL_CIPHER_get_name(cipher) : "-", kx);
    }
    if (n < 0) {
        buf[0] = '\0';
        return 0;
    }
    return static_cast<size_t>(n) < size ? static_cast<size_t>(n) : size - 1;
}

bool tls_alpn_postgresql(const SSL* ssl) noexcept {
    const unsigned char* data = nullptr;
    unsigned int len = 0;
    if (!ssl)
        return false;
    SSL_get0_alpn_selected(ssl, &data, &len);
    return len == sizeof(kAlpnPostgres) - 1 && memcmp(data, kAlpnPostgres + 1, len) == 0;
}

std::string tls_peer_common_name(const SSL* ssl) {
    if (!ssl || SSL_get_verify_result(ssl) != X509_V_OK)
        return {};
    X509* cert = SSL_get0_peer_certificate(ssl);
    if (!cert)
        return {};
    char cn[256];
    int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
    if (n <= 0)
        return {};
    return std::string(cn, static_cast<size_t>(n));
}

void tls_note_error(const SSL* ssl, int ssl_error) noexcept {
    int saved_errno = errno;
    std::string msg;
    if (ssl_error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        msg = saved_errno ? strerror(saved_errno) : "unexpected eof";
    } else if (ssl_error == SSL_ERROR_ZERO_RETURN) {
        msg = "connection closed by peer";
    } else {
        msg = openssl_errors();
    }
    ERR_clear_error();
    if (ssl) {
        long vr = SSL_get_verify_result(ssl);
        if (vr != X509_V_OK) {
            msg += ": ";
            msg += X509_verify_cert_error_string(vr);
        }
    }
    snprintf(g_last_error, sizeof(g_last_error), "%s", msg.c_str());
}

const char* tls_last_error() noexcept {
    return g_last_error[0] ? g_last_error : "unknown TLS error";
}

}  // namespace sluice
