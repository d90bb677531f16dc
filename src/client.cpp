// Client side: startup packet, authentication against auth_file, the welcome, then work:
// every message passes to the linked server and owes its replies in the server's tracker.
#include <strings.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>

#include <openssl/crypto.h>

#include "sluice/auth/md5.h"
#include "sluice/auth/scram.h"
#include "sluice/pool/control.h"
#include "sluice/pool/pool.h"

namespace sluice {
namespace {

bool list_contains_ci(const std::string& list, std::string_view item) {
    for (const std::string& x : split_list(list))
        if (x.size() == item.size() && strncasecmp(x.data(), item.data(), x.size()) == 0)
            return true;
    return false;
}

bool is_true_word(std::string_view v) {
    return v == "true" || v == "on" || v == "yes" || v == "1";
}

std::span<const uint8_t> as_bytes(std::string_view s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Checks a cleartext password against any stored secret form.
bool password_matches(const std::string& secret, std::string_view user, std::string_view pw) {
    if (is_md5_secret(secret))
        return pg_md5_secret(pw, user) == secret;
    if (is_scram_secret(secret)) {
        ScramSecret s;
        if (!parse_scram_secret(secret, s))
            return false;
        ScramSecret mine = make_scram_secret(pw, s.salt, s.iterations);
        return mine.stored_key == s.stored_key && mine.server_key == s.server_key;
    }
    return secret.size() == pw.size() && CRYPTO_memcmp(secret.data(), pw.data(), pw.size()) == 0;
}

const ScramSecret& scram_secret_for_plain(User& u, int iterations) {
    if (u.scram_cache_src != u.secret || u.scram_cache.iterations != iterations) {
        u.scram_cache = make_scram_secret(u.secret, iterations);
        u.scram_cache_src = u.secret;
    }
    return u.scram_cache;
}

// The message types a logged-in client may send (PgBouncer's list).
bool frontend_type(uint8_t t) noexcept {
    switch (t) {
    case msg::kQuery:
    case msg::kFunctionCall:
    case msg::kSync:
    case msg::kFlush:
    case msg::kCopyData:
    case msg::kCopyDone:
    case msg::kCopyFail:
    case msg::kParse:
    case msg::kBind:
    case msg::kDescribe:
    case msg::kExecute:
    case msg::kClose:
    case msg::kTerminate:
        return true;
    default:
        return false;
    }
}

}  // namespace

const std::string& Client::user_name() const noexcept {
    static const std::string none;
    if (login)
        return login->user_name;
    return user ? user->name : none;
}

const std::string& Client::db_name() const noexcept {
    static const std::string none;
    if (login)
        return login->db_name;
    return db ? db->name : none;
}

PeerAddr Client::local_addr() const {
    PeerAddr l;
    if (!addr.is_unix() && !sb.closed()) {
        l.len = sizeof(l.ss);
        if (getsockname(sb.fd(), reinterpret_cast<sockaddr*>(&l.ss), &l.len) == 0)
            return l;
        l = PeerAddr{};
    }
    l.ss.ss_family = addr.family;
    return l;
}

// PgBouncer's address text for application_name_add_host: host:port, [v6]:port, and for a
// unix socket unix(<peer pid>@<our host name>):<listen port>.
std::string Client::address_details() const {
    if (addr.is_unix()) {
        static std::string host = [] {
            char name[256] = {};
            return gethostname(name, sizeof(name) - 1) == 0 ? std::string(name)
                                                            : std::string("somehost");
        }();
        std::string port = std::to_string(settings().listen_port);
        return peer_pid > 0 ? "unix(" + std::to_string(peer_pid) + "@" + host + "):" + port
                            : "unix:" + port;
    }
    return addr.to_peer().host_port();
}

size_t Client::log_prefix(char* buf, size_t size) const noexcept {
    int n;
    using Named = ClientLogin::Named;
    Named named = login ? login->named : Named::Both;
    const char* dbn = named != Named::Both || db_name().empty() ? "(nodb)" : db_name().c_str();
    const char* us = named == Named::None || user_name().empty() ? "(nouser)" : user_name().c_str();
    if (addr.is_unix())
        n = snprintf(buf, size, "C-%p: %s/%s@unix(%d):%d", static_cast<const void*>(this), dbn, us,
                     peer_pid, settings().listen_port);
    else if (addr.family == AF_INET6)
        n = snprintf(buf, size, "C-%p: %s/%s@[%s]:%d", static_cast<const void*>(this), dbn, us,
                     addr.host().c_str(), addr.port());
    else
        n = snprintf(buf, size, "C-%p: %s/%s@%s:%d", static_cast<const void*>(this), dbn, us,
                     addr.host().c_str(), addr.port());
    if (n < 0)
        return 0;
    return static_cast<size_t>(n) < size ? static_cast<size_t>(n) : size - 1;
}

void Client::fatal(const char* sqlstate, const char* fmt, ...) {
    if (state == ClientState::Closing)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    std::string packet;
    write_error(packet, "FATAL", sqlstate, msg);
    fail_with(packet, msg);
}

void Client::fail_with(std::string_view error_packet, const char* reason) {
    close_logged(reason, true, error_packet);
}

void Client::close(const char* reason) {
    close_logged(reason, false, {});
}

void Client::close_logged(const char* reason, bool pooler_error, std::string_view error_packet) {
    if (state == ClientState::Closing)
        return;
    // Only a close without a reason (nullptr: a port probe, a client leaving between login
    // messages) is not logged; every other is, login failures and a silent client's
    // client_login_timeout included, as in PgBouncer.
    if (settings().log_disconnections && reason)
        slog_info(this, "closing because: %s (age=%llds)", reason,
                  static_cast<long long>((mono_now() - connect_time) / 1000000));
    if (Server* s = server) {
        // A message half passed on (or passed on only in part before this close) would leave
        // the backend waiting for its rest, and the next client's bytes would become it.
        if (s->tracker.idle() && !sb.mid_forward() && !s->pinned)
            pool_release_server(*s);
        else if (pooler_error || !s->run_orphaned())  // leaving on its own, what it sent
            s->close("client disconnect while server was not ready");  // runs (unlinks us)
    }
    // PgBouncer's order: "closing because", the server's close, then "pooler error", all
    // before the error goes out and the socket closes (a client that reads the error or sees
    // EOF finds every line written).
    if (pooler_error && reason && settings().log_pooler_errors)
        slog_warning(this, "pooler error: %s", reason);
    // The error goes after the log lines (a client that exits on reading it finds them
    // written, as with PgBouncer: it logs, then sends) and after the server is unlinked, so
    // that its bytes still pending are dropped rather than sent first. Not at all when the
    // client got part of a server message (a large row, say, when the server died or KILL
    // came): it would read the error as the rest of that message. PostgreSQL never splits a
    // message; the client sees the connection end, as when a backend is killed mid-row.
    if (!error_packet.empty() && !sb.cut())
        sb.queue(error_packet);
    sb.flush_out_before_close();
    if (pool) {
        if (db)
            db->client_count--;
        if (user)
            user->client_count--;
    }
    if (counted)
        rt().client_count--;
    counted = false;
    unregister_cancel_key(*this);
    ps.release_closed();
    sb.close();
    set_state(*this, ClientState::Closing);
}

PacketAction Client::on_packet(SBuf&, const PacketHeader& hdr, std::span<const uint8_t> data) {
    if (state == ClientState::Login || wait_for_welcome)
        return on_login_packet(hdr, data);
    return on_work_packet(hdr, data);
}

void Client::on_sbuf_event(SBuf&, SBufEvent ev) {
    switch (ev) {
    case SBufEvent::Eof:
    case SBufEvent::SocketError:  // a reset too: PgBouncer's one reason for both
        // As PgBouncer: no line for a client that leaves during login between messages (a
        // TLS probe after the SSLRequest's answer, psql going to ask for a password).
        close(state == ClientState::Login && sb.unparsed().empty() ? nullptr
                                                                    : "client unexpected eof");
        return;
    case SBufEvent::BadPacket: {
        // As PgBouncer: up to 8 bytes of the header in hex.
        std::span<const uint8_t> in = sb.unparsed();
        char hex[8 * 2 + 1] = "";
        for (size_t i = 0; i < std::min<size_t>(in.size(), 8); ++i)
            snprintf(hex + 2 * i, 3, "%02x", in[i]);
        fatal("08P01", "bad packet header: '%s'", hex);
        return;
    }
    case SBufEvent::TooLong:
        // Before login the hold limit is kMaxLoginMessageLen (PgBouncer's limit is pkt_buf,
        // with this message).
        if (state == ClientState::Login)
            fatal("08P01", "client sent partial pkt in startup phase");
        else
            fatal("08P01", "message too long");
        return;
    case SBufEvent::TlsReady:  // TLS (tls_login.cpp)
    case SBufEvent::TlsFailed:
    case SBufEvent::TlsHello:
        on_tls_event(ev);
        return;
    default:
        close("client connection error");
        return;
    }
}

void Client::on_sbuf_drained(SBuf&) {
    if (pause_mode() == PauseMode::Suspend) [[unlikely]]
        control_client_quiet(*this);
}

PacketAction Client::on_login_packet(const PacketHeader& hdr, std::span<const uint8_t> data) {
    if (data.size() < hdr.len)
        return wait_for_welcome && hdr.type != 0 ? PacketAction::Pause : PacketAction::Hold;
    if (wait_for_welcome)
        return PacketAction::Pause;
    if (hdr.type == 0) {
        uint32_t code = read_be32(data.data() + 4);
        if (code == kSslRequestCode || code == kGssEncRequestCode) {
            if (hdr.len != 8) {
                fatal("08P01", "bad startup packet");
                return PacketAction::Closed;
            }
            if (code == kSslRequestCode && tls_offered())
                return on_ssl_request(hdr);  // TLS: 'S' and the handshake (tls_login.cpp)
            // As PostgreSQL and PgBouncer, whatever the answer: bytes sent before it cannot
            // have been meant for after it.
            if (sb.input_after(hdr.len) > 0) {
                fatal("08P01", code == kSslRequestCode
                                   ? "received unencrypted data after SSL request"
                                   : "received unencrypted data after GSSAPI encryption request");
                return PacketAction::Closed;
            }
            sb.queue("N");
            if (!sb.flush_out())
                return PacketAction::Closed;
            return PacketAction::Skip;
        }
        if (code == kCancelRequestCode)
            return on_cancel(data);
        if (tls_required()) {  // client_tls_sslmode require and up (tls_login.cpp)
            fatal("08P01", "SSL required");
            return PacketAction::Closed;
        }
        return on_startup(data);
    }
    if (hdr.type == msg::kPassword)
        return on_password(data.subspan(hdr.hdr_len));
    if (hdr.type == msg::kTerminate) {
        close("client close request");
        return PacketAction::Closed;
    }
    fatal("08P01", "bad packet type during login: '%c'", hdr.type);
    return PacketAction::Closed;
}

PacketAction Client::on_cancel(std::span<const uint8_t> pkt) {
    if (pkt.size() != 16) {
        close("bad cancel request");
        return PacketAction::Closed;
    }
    uint32_t pid = read_be32(pkt.data() + 8);
    uint32_t key = read_be32(pkt.data() + 12);
    // PgBouncer's reasons for each outcome.
    const char* reason = "failed cancel request";  // no client has this key
    if (Client* target = find_cancel_key(pid, key)) {
        if (target->admin) {
            reason = "cancel request for console client";
        } else if (Server* s = target->server) {
            send_cancel_request(*s);  // failures are logged there
            reason = "successfully sent cancel request";
        } else {
            reason = "cancel request for idle client";
        }
    }
    close(reason);
    return PacketAction::Closed;
}

// The `options` startup parameter: "-c name=value" / "--name=value" items separated by
// blanks, backslash escaping the next character. Each name must be tracked or ignored.
bool Client::apply_startup_options(const std::string& opts, VarValues& v,
                                   std::vector<std::string>& keep) {
    std::vector<std::string> words;
    std::string cur;
    bool have = false;
    for (size_t i = 0; i < opts.size(); ++i) {
        char ch = opts[i];
        if (ch == '\\' && i + 1 < opts.size()) {
            cur.push_back(opts[++i]);
            have = true;
        } else if (ch == ' ' || ch == '\t') {
            if (have)
                words.push_back(cur);
            cur.clear();
            have = false;
        } else {
            cur.push_back(ch);
            have = true;
        }
    }
    if (have)
        words.push_back(cur);
    const char* bad = "unsupported options startup parameter: only '-c config=val' and "
                      "'--config=val' are allowed";
    keep.reserve(words.size());  // v views into keep's strings: they must not move
    for (size_t i = 0; i < words.size(); ++i) {
        std::string item;
        if (words[i] == "-c") {
            if (i + 1 >= words.size()) {
                fatal("08P01", "%s", bad);
                return false;
            }
            item = words[++i];
        } else if (words[i].starts_with("-c")) {
            item = words[i].substr(2);
        } else if (words[i].starts_with("--")) {
            item = words[i].substr(2);
        } else {
            fatal("08P01", "%s", bad);
            return false;
        }
        size_t eq = item.find('=');
        if (eq == std::string::npos || eq == 0) {
            fatal("08P01", "%s", bad);
            return false;
        }
        std::string name = item.substr(0, eq);
        for (char& ch : name)
            if (ch == '-')
                ch = '_';
        if (int vi = var_index(name); vi >= 0) {
            keep.push_back(item.substr(eq + 1));
            v[static_cast<size_t>(vi)] = keep.back();
        } else if (!list_contains_ci(settings().ignore_startup_parameters, name)) {
            slog_warning(this, "unsupported startup parameter in options: %s=%s", name.c_str(),
                         item.substr(eq + 1).c_str());
            fatal("08P01", "unsupported startup parameter in options: %s", name.c_str());
            return false;
        }
    }
    return true;
}

PacketAction Client::on_startup(std::span<const uint8_t> pkt) {
    uint32_t version = read_be32(pkt.data() + 4);
    uint16_t major = static_cast<uint16_t>(version >> 16);
    if (major != 3) {
        fatal("08P01", major == 2 ? "old V2 protocol not supported" : "unsupported protocol");
        return PacketAction::Closed;
    }
    auto proto_minor = static_cast<uint16_t>(version & 0xffff);
    if (pkt.back() != 0) {
        fatal("08P01", "invalid startup packet layout: expected terminator as last byte");
        return PacketAction::Closed;
    }
    PacketReader r(pkt.subspan(8));
    const Settings& st = settings();
    VarValues v{};  // tracked values, viewing into pkt (and into option_values): interned once
    std::string startup_options;
    std::vector<std::string> unsupported_pq_options;
    for (;;) {
        std::string_view name, value;
        if (!r.read_cstr(name)) {
            fatal("08P01", "invalid startup packet layout: expected terminator as last byte");
            return PacketAction::Closed;
        }
        if (name.empty())
            break;
        if (!r.read_cstr(value)) {
            fatal("08P01", "invalid startup packet layout: expected terminator as last byte");
            return PacketAction::Closed;
        }
        if (name == "user") {
            login->user_name.assign(value);
        } else if (name == "database") {
            login->db_name.assign(value);
        } else if (name.starts_with("_pq_.")) {
            unsupported_pq_options.emplace_back(name);
        } else if (int vi = var_index(name); vi >= 0) {
            v[static_cast<size_t>(vi)] = value;
        } else if (name == "replication") {
            // Refused even when ignore_startup_parameters lists it (PgBouncer 1.18 would then
            // serve a replication client an ordinary session); its text otherwise.
            if (is_true_word(value) || value == "database") {
                fatal("08P01", "unsupported startup parameter: replication");
                return PacketAction::Closed;
            }
        } else if (name == "options") {
            if (!list_contains_ci(st.ignore_startup_parameters, "options") && !value.empty()) {
                startup_options.assign(value);
            }
        } else if (!list_contains_ci(st.ignore_startup_parameters, name)) {
            std::string n(name);
            std::string val(value);  // the value goes to the log only, as in PgBouncer
            slog_warning(this, "unsupported startup parameter: %s=%s", n.c_str(), val.c_str());
            fatal("08P01", "unsupported startup parameter: %s", n.c_str());
            return PacketAction::Closed;
        }
    }
    if (user_name().empty()) {
        fatal("08P01", "no username supplied");
        return PacketAction::Closed;
    }
    if (user_name().size() >= kMaxUserNameLen) {
        std::string failed_db = login->db_name.empty() ? user_name() : login->db_name;
        std::string failed_user(user_name());
        fatal("08P01", "username too long");
        if (settings().log_connections)  // PgBouncer's line after the close
            slog_info(this, "login failed: db=%s user=%s", failed_db.c_str(), failed_user.c_str());
        return PacketAction::Closed;
    }
    if (login->db_name.empty())
        login->db_name = login->user_name;
    std::vector<std::string> option_values;
    if (!startup_options.empty()) {
        // PostgreSQL applies `options` first, then the parameters sent on their own: those win
        // (psql's application_name over PGOPTIONS='-c application_name=x').
        VarValues from_options{};
        if (!apply_startup_options(startup_options, from_options, option_values))
            return PacketAction::Closed;
        for (size_t i = 0; i < v.size(); ++i)
            if (!var_is_set(v[i]))
                v[i] = from_options[i];
    }
    // application_name_add_host: "<name, else app> - <client address>", PgBouncer's text; it
    // reaches the server, SHOW CLIENTS and the client's own ParameterStatus.
    std::string app_with_host;
    if (st.application_name_add_host) {
        auto ai = static_cast<size_t>(var_index("application_name"));
        app_with_host = std::string(v[ai].empty() ? "app" : v[ai]) + " - " + address_details();
        v[ai] = app_with_host;
    }
    // PostgreSQL keeps 63 bytes of an application_name (NAMEDATALEN - 1, whole UTF-8
    // characters) and reports that: so is the client's value, else every server would be
    // given the long one again at each assignment, and report the short one.
    if (auto ai = static_cast<size_t>(var_index("application_name")); v[ai].size() > 63) {
        size_t n = 63;
        while (n > 0 && (static_cast<uint8_t>(v[ai][n]) & 0xc0) == 0x80)
            --n;  // not inside a multibyte character
        std::string_view cut = v[ai].substr(0, n);
        write_notice(login->welcome_notice, "42622",
                     "identifier \"" + std::string(v[ai]) + "\" will be truncated to \"" +
                         std::string(cut) + "\"");
        v[ai] = cut;
    }
    vars.assign(v);
    sb.set_startup(false);

    if (proto_minor > 0 || !unsupported_pq_options.empty()) {
        std::string& out = sb.out_for_append();
        PacketWriter w(out);
        // The newest version we speak, whole (3 << 16 | 0), as PostgreSQL sends it: libpq reads
        // the field as a protocol number and refuses anything below 3.0.
        w.begin(msg::kNegotiateProtocol);
        w.put_u32(kProtocol30);
        w.put_u32(static_cast<uint32_t>(unsupported_pq_options.size()));
        for (const std::string& o : unsupported_pq_options)
            w.put_cstr(o);
        w.finish();
    }

    Database* d = find_database(db_name(), this);
    admin = d && d->admin;
    // As PgBouncer: console sessions count against max_client_conn too, but are never
    // refused by it (an operator can always get in to look).
    if (!admin && st.max_client_conn > 0 && rt().client_count >= st.max_client_conn) {
        fatal("08P01", "no more connections allowed (max_client_conn)");
        return PacketAction::Closed;
    }
    rt().client_count++;
    counted = true;
    user = find_user(user_name());
    if (admin && user_name() == "pgbouncer" && peer_is_self) {
        // PgBouncer knows the console's own user before it picks the pool: this line comes
        // first, its prefix still without the database.
        login->named = ClientLogin::Named::User;
        if (st.log_connections)
            slog_info(this, "pgbouncer access from unix socket");
    }
    start_auth();
    return state == ClientState::Closing ? PacketAction::Closed : PacketAction::Skip;
}

void Client::log_login_attempt(bool mock) {
    // From here the prefix names the database and user, "(nodb)/<user>" for a mock login or
    // a database that does not exist (no pool will be picked), as PgBouncer's do.
    if (!admin && !find_database(db_name(), this))
        mock = true;
    login->named = mock ? ClientLogin::Named::User : ClientLogin::Named::Both;
    if (settings().log_connections) {  // before authentication, so failures have one too
        char tls[128];
        sb.tls_describe(tls, sizeof(tls));  // "no" or "TLSv1.3/..."
        slog_info(this, "login attempt: db=%s user=%s tls=%s replication=no", db_name().c_str(),
                  user_name().c_str(), tls);
    }
}

// PgBouncer's order of lines: what is refused before a credential is known (auth_type=any
// without a forced user, "no such user") comes before the login attempt; with auth_query the
// attempt is logged once the query has answered.
void Client::start_auth() {
    if (admin && user_name() == "pgbouncer" && peer_is_self) {
        log_login_attempt();
        static_cast<void>(finish_login());  // same-UID console user over the unix socket
        return;
    }
    if (settings().auth_type == AuthType::Any) {
        // The user name is ignored: every database must log in as its forced user.
        Database* d = admin ? nullptr : find_database(db_name(), this);
        if (d && d->entry.user.empty()) {
            slog_error(this, "auth_type=any requires forced user");
            fatal("08P01", "bouncer config error");
            return;
        }
        log_login_attempt();
        static_cast<void>(finish_login());
        return;
    }
    if (settings().auth_type == AuthType::Pam) {
        start_pam_auth();
        return;
    }
    login->cred = user;
    if (!login->cred) {
        if (start_auth_query())
            return;  // on_auth_query_reply() continues (client_auth.cpp)
        // Not known and no auth_query to ask: authentication goes on against a mock secret
        // so the client cannot tell, but the log says it (PgBouncer's line).
        slog_info(this, "no such user: %s", user_name().c_str());
    }
    log_login_attempt(!login->cred);
    continue_auth();
}

void Client::auth_failed(const char* msg) {
    fatal("08P01", "%s", msg);
}

bool Client::has_md5_secret() const noexcept {
    const User* cred = login->cred;
    return cred && cred->have_secret && is_md5_secret(cred->secret);
}

PacketAction Client::on_password(std::span<const uint8_t> body) {
    PacketReader r(body);
    switch (auth) {
    case AuthStep::WaitPassword: {
        std::string_view pw;
        if (!r.read_cstr(pw)) {
            fatal("08P01", "bad password packet");
            return PacketAction::Closed;
        }
        if (pw.empty()) {  // PostgreSQL's and PgBouncer's words
            auth_failed("empty password returned by client");
            return PacketAction::Closed;
        }
        if (login->auth_method == AuthMethod::Pam)
            return check_with_pam(pw);
        bool ok = false;
        const User* cred = login->cred;
        if (cred && cred->have_secret && !cred->secret.empty()) {  // empty: never matches
            if (login->auth_method == AuthMethod::Password)
                ok = password_matches(cred->secret, user_name(), pw);
            else
                ok = pw == pg_md5_response(cred->secret, user_name(), login->md5_salt);
        }
        if (!ok) {
            auth_failed("password authentication failed");
            return PacketAction::Closed;
        }
        return finish_login();
    }
    case AuthStep::SaslInitial: {
        std::string_view mech;
        int32_t len;
        if (!r.read_cstr(mech) || !r.read_i32(len) || len < 0 ||
            static_cast<size_t>(len) != r.remaining()) {
            fatal("08P01", "malformed SASL packet");
            return PacketAction::Closed;
        }
        if (mech != "SCRAM-SHA-256") {
            auth_failed("client selected an invalid SASL authentication mechanism");
            return PacketAction::Closed;
        }
        ScramSecret secret;
        bool mock = true;
        if (User* cred = login->cred; cred && cred->have_secret && !cred->secret.empty()) {
            if (is_scram_secret(cred->secret)) {
                mock = !parse_scram_secret(cred->secret, secret);
            } else if (!is_md5_secret(cred->secret)) {
                secret = scram_secret_for_plain(*cred, settings().scram_iterations);
                mock = false;
            }
        }
        if (mock)
            scram_state().init_mock(user_name());
        else
            scram_state().init(secret, false);
        std::span<const uint8_t> data = r.rest();
        std::string server_first;
        if (!scram_state().handle_client_first(
                std::string_view(reinterpret_cast<const char*>(data.data()), data.size()),
                server_first)) {
            if (const std::string& why = scram_state().failure(); !why.empty())
                slog_error(this, "%s", why.c_str());  // PgBouncer's line for the fault
            auth_failed("SASL authentication failed");
            return PacketAction::Closed;
        }
        if (has_md5_secret()) {
            // PgBouncer's line. It closes here; the exchange runs on to its certain failure
            // instead (as PostgreSQL does), so the protocol does not tell that the user exists.
            slog_error(this, "SCRAM authentication failed: user has MD5 secret");
        }
        write_auth(sb.out_for_append(), kAuthSaslContinue, as_bytes(server_first));
        auth = AuthStep::SaslContinue;
        if (!sb.flush_out())
            return PacketAction::Closed;
        return PacketAction::Skip;
    }
    case AuthStep::SaslContinue: {
        std::span<const uint8_t> data = r.rest();
        std::string server_final;
        ScramVerdict v = scram_state().handle_client_final(
            std::string_view(reinterpret_cast<const char*>(data.data()), data.size()),
            server_final);
        if (v != ScramVerdict::Ok) {
            // PgBouncer's ERROR lines before the close
            if (const std::string& why = scram_state().failure(); !why.empty())
                slog_error(this, "%s", why.c_str());
            else if (v == ScramVerdict::NonceMismatch)
                slog_error(this, "invalid SCRAM response (nonce does not match)");
            else if (v == ScramVerdict::WrongProof && !has_md5_secret())  // (said already)
                slog_error(this, "password authentication failed");
            auth_failed("SASL authentication failed");
            return PacketAction::Closed;
        }
        if (User* cred = login->cred; cred && is_scram_secret(cred->secret)) {
            cred->have_scram_keys = true;  // SCRAM pass-through for this user's servers
            cred->scram_client_key = scram_state().client_key();
            cred->scram_server_key = scram_state().secret().server_key;
        }
        write_auth(sb.out_for_append(), kAuthSaslFinal, as_bytes(server_final));
        return finish_login();
    }
    default:
        fatal("08P01", "unexpected password packet");
        return PacketAction::Closed;
    }
}

PacketAction Client::finish_login() {
    auth = AuthStep::Done;
    sb.set_hold_limit(settings().max_packet_size);  // authenticated: the login cap is lifted
    login->scram.reset();  // the exchange is over: its state (and secrets) go
    db = find_database(db_name(), this);
    if (admin) {
        if (!g_admin_hooks.check_access || !g_admin_hooks.check_access(*this)) {
            fatal("08P01", "not allowed");
            return PacketAction::Closed;
        }
        if (!user)
            user = get_user(user_name());
        pool = get_pool(db, user, user_name());
        db->client_count++;
        user->client_count++;
        register_cancel_key(*this);
        set_state(*this, ClientState::Active);
        g_admin_hooks.send_welcome(*this);
        if (state == ClientState::Closing)
            return PacketAction::Closed;
        login.reset();  // user and db hold the names now
        return PacketAction::Skip;
    }
    if (!db) {
        if (settings().log_connections)  // PgBouncer's line, authenticated but no pool
            slog_info(this, "login failed: db=%s user=%s", db_name().c_str(), user_name().c_str());
        fatal("08P01", "no such database: %s", db_name().c_str());
        return PacketAction::Closed;
    }
    if (db->disabled) {
        fatal("08P01", "database \"%s\" is disabled", db_name().c_str());
        return PacketAction::Closed;
    }
    if (rt().shutting_down) {
        fatal("08P01", "pooler is shutting down");
        return PacketAction::Closed;
    }
    if (!user)
        user = get_user(user_name());
    int max_db_clients = db->entry.max_db_client_connections >= 0
                             ? db->entry.max_db_client_connections
                             : settings().max_db_client_connections;
    if (max_db_clients > 0 && db->client_count >= max_db_clients) {
        fatal("08P01", "client connections exceeded (max_db_client_connections)");
        return PacketAction::Closed;
    }
    int max_user_clients = settings().max_user_client_connections;
    if (user->entry && user->entry->max_user_client_connections >= 0)
        max_user_clients = user->entry->max_user_client_connections;
    if (max_user_clients > 0 && user->client_count >= max_user_clients) {
        fatal("08P01", "client connections exceeded (max_user_client_connections)");
        return PacketAction::Closed;
    }
    pool = client_pool(db, *user);
    if (db->entry.user.empty())
        pool->auth_cred = login->cred != user ? login->cred : nullptr;  // auth_query's secret
    db->client_count++;
    user->client_count++;
    pool->client_login_count++;  // SHOW STATS total_client_login_count
    register_cancel_key(*this);
    // user and db hold the names now; an idle client keeps no login state (one with a NOTICE
    // for its welcome keeps it until send_welcome()).
    if (login->welcome_notice.empty())
        login.reset();
    if (pool->have_params) {
        set_state(*this, ClientState::Active);
        send_welcome();
    } else {
        if (pool_refuse_if_login_failing(*this))
            return PacketAction::Closed;
        wait_for_welcome = true;
        pool->welcome_pending = true;
        wait_start = mono_now();
        set_state(*this, ClientState::Waiting);
        pool_launch_if_needed(*pool);
    }
    return state == ClientState::Closing ? PacketAction::Closed : PacketAction::Skip;
}

void Client::send_welcome() {
    Pool& p = *pool;
    if (!p.have_welcome || !p.welcome_in.same(vars)) {
        // The client's own values win; the pool's fill the rest.
        VarValues v = vars.values();
        p.welcome_status.clear();
        for (const auto& [name, value] : p.params) {
            int vi = var_index(name);
            if (vi >= 0 && var_is_set(v[static_cast<size_t>(vi)]))
                write_parameter_status(p.welcome_status, name, v[static_cast<size_t>(vi)]);
            else
                write_parameter_status(p.welcome_status, name, value);
        }
        // Learn the values the client will see, so that replays compare correctly.
        for (const auto& [name, value] : p.params) {
            int vi = var_index(name);
            if (vi >= 0 && !var_is_set(v[static_cast<size_t>(vi)]))
                v[static_cast<size_t>(vi)] = value;
        }
        p.welcome_out.assign(v);
        p.welcome_in = vars;
        p.have_welcome = true;
    }
    vars = p.welcome_out;
    reset_vars = vars;
    std::string& out = sb.out_for_append();
    out.reserve(out.size() + p.welcome_status.size() + 64);  // one allocation for it all
    write_auth(out, kAuthOk);
    if (login) {  // where PostgreSQL sends it: before the ParameterStatus messages
        out += login->welcome_notice;
        login.reset();
    }
    out += p.welcome_status;
    write_backend_key(out, cancel_pid, cancel_key);
    if (!settings().login_notify_message.empty())
        write_notice(out, "00000", settings().login_notify_message);
    write_ready(out, 'I');
    wait_for_welcome = false;
    request_time = mono_now();
    if (state == ClientState::Waiting)
        set_state(*this, ClientState::Active);
    if (!sb.flush_out())
        return;
    sb.trim_output();  // the welcome's few hundred bytes are out: an idle client keeps none
    if (sb.paused())
        sb.resume();
}

void Client::on_server_assigned() {
    if (auth == AuthStep::AuthQuery) {
        send_auth_query();  // the socket stays paused until the answer is in
        return;
    }
    if (sb.paused())
        sb.resume();
}

PacketAction Client::on_admin_packet(const PacketHeader& hdr, std::span<const uint8_t> data) {
    switch (hdr.type) {
    case msg::kTerminate:
        close("client close request");  // what PgBouncer logs for a console Terminate too
        return PacketAction::Closed;
    case msg::kQuery: {
        if (data.size() < hdr.len)
            return PacketAction::Hold;
        std::span<const uint8_t> body = data.subspan(hdr.hdr_len);
        const void* nul = memchr(body.data(), 0, body.size());
        if (!nul) {
            fatal("08P01", "incomplete query");
            return PacketAction::Closed;
        }
        size_t n = static_cast<size_t>(static_cast<const uint8_t*>(nul) - body.data());
        g_admin_hooks.handle_query(
            *this, std::string_view(reinterpret_cast<const char*>(body.data()), n));
        return state == ClientState::Closing ? PacketAction::Closed : PacketAction::Skip;
    }
    default:
        g_admin_hooks.refuse_message(*this, hdr.type);
        return PacketAction::Closed;
    }
}

// The time of the first request after the server owed nothing, and of the first of a
// transaction.
inline void Client::note_request_start(Server& s) noexcept {
    if (!query_start)
        query_start = mono_now();
    if (s.tracker.empty()) {
        s.request_time = mono_now();
        // As PgBouncer: a transaction's time runs from its first query's start, queueing
        // for the server included.
        if (s.tracker.status() == 'I' && !xact_start)
            xact_start = query_start;
    }
}

inline bool Client::caching_statements() const noexcept {
    return settings().max_prepared_statements > 0 && pool->mode() != PoolMode::Session;
}

// What on_work_packet() does with these with a server linked and no COPY IN owed to end:
// the tracker entry, the counters, a Sync counted. A Query that may be DISCARD ALL while
// statements are cached (may_forget()) and named statements (the cache rewrites
// them) are not plain, nor is anything else (COPY, Terminate, FunctionCall).
bool Client::plain_request(uint8_t type, std::span<const uint8_t> msg, const Server& s) const {
    switch (type) {
    case msg::kQuery:
        return (ps.size() == 0 && s.ps.size() == 0) ||
               !may_forget(msg.subspan(kTypedHeaderLen));
    case msg::kParse:
    case msg::kBind:
    case msg::kDescribe:
    case msg::kClose: {
        if (!caching_statements())
            return true;
        bool named = false;
        return peek_statement_named(type, msg.subspan(kTypedHeaderLen), named) && !named &&
               !(type == msg::kParse && may_deallocate(msg.subspan(kTypedHeaderLen)));
    }
    case msg::kExecute:
    case msg::kSync:
    case msg::kFlush:
        return true;
    default:
        return false;
    }
}

uint32_t Client::take_plain_run(SBuf&, std::span<const uint8_t> data) {
    if (!server || admin || state == ClientState::Login || wait_for_welcome)
        return 0;
    Server& s = *server;
    if (s.tracker.client_in_copy())
        return 0;
    const uint32_t max_len = sb.max_packet();
    size_t off = 0;
    uint8_t t;
    uint32_t len;
    while (whole_message_at(data, off, max_len, t, len) &&
           plain_request(t, data.subspan(off, len), s)) {
        note_request_start(s);
        if (t == msg::kSync || t == msg::kQuery)
            ps.count_sync();
        s.tracker.on_plain_request(t);
        off += len;
    }
    pool->bytes_in += off;
    return static_cast<uint32_t>(off);
}

PacketAction Client::on_work_packet(const PacketHeader& hdr, std::span<const uint8_t> data) {
    uint8_t t = hdr.type;
    if (!frontend_type(t)) [[unlikely]] {
        // Never forwarded: the server would end its session over it.
        slog_error(this, "unknown pkt from client: %u/0x%x", t, t);
        fatal("08P01", "unknown pkt");
        return PacketAction::Closed;
    }
    if (admin)
        return on_admin_packet(hdr, data);
    if (!server) {
        switch (t) {
        case msg::kTerminate:
            close("client close request");
            return PacketAction::Closed;
        case msg::kCopyData:
        case msg::kCopyDone:
        case msg::kCopyFail:
        case msg::kFlush:
            // Late COPY messages after the server was released, or a lone Flush: nothing
            // to deliver them to, and nothing owes a reply.
            return PacketAction::Skip;
        case msg::kQuery:
            if (settings().disable_pqexec) {
                slog_error(this, "client used 'Q' packet type");
                fatal("08P01", "PQexec disallowed");
                return PacketAction::Closed;
            }
            break;
        default:
            break;
        }
        if (state == ClientState::Waiting)
            return PacketAction::Pause;
        if (pool->mode() != PoolMode::Session) {
            PacketAction a = answer_without_server(hdr, data);
            if (a != PacketAction::Forward)
                return a;
        }
        if (!query_start)
            query_start = mono_now();  // as PgBouncer, the queueing counts (SHOW CLIENTS wait)
        pool_request_server(*this);
        if (state == ClientState::Closing)
            return PacketAction::Closed;
        if (!server)
            return PacketAction::Pause;
    }
    if (t == msg::kTerminate) {
        close("client close request");
        return PacketAction::Closed;
    }
    Server& s = *server;
    if (t == msg::kQuery && ps.size() > 0 && caching_statements() && s.tracker.empty() &&
        s.tracker.status() != 'E') {
        // In a failed transaction the server's own 25P02 is the answer.
        PacketAction a = answer_deallocate(hdr, data, s.tracker.status());
        if (a != PacketAction::Forward)
            return a;
    }
    note_request_start(s);
    pool->bytes_in += hdr.len;
    if ((t == msg::kParse || t == msg::kBind || t == msg::kDescribe || t == msg::kClose) &&
        caching_statements())
        return on_ps_packet(hdr, data, s);
    if (t == msg::kSync || t == msg::kQuery)
        ps.count_sync();
    bool discard_sent = t == msg::kQuery && (ps.size() > 0 || s.ps.size() > 0) &&
                        forget_names_if_discard(hdr, data);
    bool owed_copy_end = s.tracker.client_in_copy();
    if (discard_sent)
        s.tracker.on_request(Expect{.type = msg::kQuery,
                                    .action = ReplyAction::Forward,
                                    .copy_term = false,
                                    .client_parse = true});  // marks "maps already cleared"
    else
        s.tracker.on_request(t);
    if (owed_copy_end)
        s.resync_if_due();  // the COPY had failed with Syncs inside its data (tracker.h)
    if (owed_copy_end && s.tracker.idle() && pool->mode() != PoolMode::Session && !s.pinned) {
        // The CopyDone/CopyFail of a COPY the server already failed: PostgreSQL would ignore
        // it, and nothing is owed any more, so the server can go back now.
        pool_release_server(s);
        return PacketAction::Skip;
    }
    return PacketAction::Forward;
}

}  // namespace sluice

namespace sluice {

// Statement cache (DESIGN.md section 5). Parse/Bind/Describe/Close arrive whole; named
// statements are rewritten to registry names, answered locally, or completed with an
// injected Parse. Unnamed statements and portals take the ordinary path.
// A client without a server (transaction/statement mode, no transaction open, nothing owed)
// gets some answers locally: a lone Sync (ReadyForQuery idle), the Parse of a statement some
// server already parsed successfully, and Close of a statement name. Blocking prepares
// (pgbench -M prepared, PQprepare) then do not need a server while others hold them all.
// Returns Forward when the message needs a server after all.
// A simple Query that is exactly DEALLOCATE ALL or DISCARD ALL drops the client's statement
// names now, so a Parse pipelined right after it may reuse them (the server's own set is
// cleared when the CommandComplete comes back).
bool Client::forget_names_if_discard(const PacketHeader& hdr, std::span<const uint8_t> data) {
    std::span<const uint8_t> text = data.subspan(hdr.hdr_len);
    std::string name;
    if (data.size() < hdr.len || !may_forget(text))
        return false;
    Forget f = read_forget(
        std::string_view(reinterpret_cast<const char*>(text.data()), text.size()), name);
    if (f != Forget::DiscardAll && f != Forget::DeallocateAll)
        return false;
    // Sure to fail (nothing before it can change the transaction's state): a plain Query. A
    // failed block refuses both statements, a transaction block DISCARD ALL.
    if (server && server->tracker.empty()) {
        auto st = static_cast<char>(server->tracker.status());
        if (st == 'E' || (st == 'T' && f == Forget::DiscardAll))
            return false;
    }
    // The server runs it before anything sent after it: Parses pipelined behind it must find
    // the names free and the server without copies. But it fails in a transaction block (and
    // in a failed one): the names come back then (ClientPs::forget_done), and each copy on
    // the server, there or not, is closed before it is prepared again.
    ps.forget_all();
    if (server)
        server->ps.mark_all_unknown();
    return true;
}

std::string Client::confirm_oldest_parse() {
    std::string name;
    if (ps.has_unconfirmed()) {
        auto& u = ps.unconfirmed();
        name = std::move(u.front().first);
        u.erase(u.begin());
    }
    if (waiting_confirm) {
        waiting_confirm = false;
        sb.resume();
    }
    return name;
}

PacketAction Client::answer_without_server(const PacketHeader& hdr,
                                           std::span<const uint8_t> data) {
    uint8_t t = hdr.type;
    if (t == msg::kSync && hdr.len == kTypedHeaderLen) {  // one with a body: the server's error
        write_ready(sb.out_for_append(), 'I');
        return sb.flush_out() ? PacketAction::Skip : PacketAction::Closed;
    }
    if (t == msg::kQuery && ps.size() > 0 && settings().max_prepared_statements > 0)
        return answer_deallocate(hdr, data, 'I');
    if ((t != msg::kParse && t != msg::kClose) || settings().max_prepared_statements <= 0)
        return PacketAction::Forward;
    bool named = false;
    std::span<const uint8_t> body = data.subspan(hdr.hdr_len);
    if (!peek_statement_named(t, body, named))  // whole and still too short: the server's
        return data.size() < hdr.len ? PacketAction::Hold : PacketAction::Forward;  // error
    if (!named)
        return PacketAction::Forward;
    if (data.size() < hdr.len)
        return PacketAction::Hold;
    if (t == msg::kParse) {
        ParseMsg pm;
        if (!parse_parse_msg(body, pm))
            return PacketAction::Forward;  // malformed: the server's error, as directly
        PsEntry* e = ps_find(pm.query, pm.params);
        if (!e || !e->verified || ps.find(pm.name))
            return PacketAction::Forward;
        ps.add(pm.name, e);
        pool->client_parse_count++;
        std::string& out = sb.out_for_append();
        PacketWriter w(out);
        w.begin(msg::kParseComplete);
        w.finish();
        return sb.flush_out() ? PacketAction::Skip : PacketAction::Closed;
    }
    PacketReader r(body);
    uint8_t what;
    std::string_view name;
    if (!r.read_u8(what) || !r.read_cstr(name))
        return PacketAction::Forward;  // malformed: the server's error, as directly
    ps.remove(name);
    std::string& out = sb.out_for_append();
    PacketWriter w(out);
    w.begin(msg::kCloseComplete);
    w.finish();
    return sb.flush_out() ? PacketAction::Skip : PacketAction::Closed;
}

// SQL `DEALLOCATE name` of one of the client's protocol-level statements (psycopg 3 sends it
// when its cache rotates). The server knows the statement by its sluice_<n> name, and others
// share it: the client's name goes as with a Close, and the answer (CommandComplete, then
// ReadyForQuery with `status`) comes from here. Only with nothing owed by a server, so that it
// comes in order; anything else, an unknown name included, goes to the server as sent.
PacketAction Client::answer_deallocate(const PacketHeader& hdr, std::span<const uint8_t> data,
                                       uint8_t status) {
    constexpr uint32_t kLongest = 256;  // DEALLOCATE PREPARE, a quoted 63-byte name, blanks
    if (hdr.len > kLongest || !may_forget(data.subspan(hdr.hdr_len)))
        return PacketAction::Forward;
    if (data.size() < hdr.len)
        return PacketAction::Hold;
    std::string name;
    if (read_forget(std::string_view(reinterpret_cast<const char*>(data.data()) + hdr.hdr_len,
                                     hdr.len - hdr.hdr_len),
                    name) != Forget::One ||
        !ps.find(name))
        return PacketAction::Forward;
    ps.remove(name);
    pool->bytes_in += hdr.len;
    std::string& out = sb.out_for_append();
    PacketWriter w(out);
    w.begin(msg::kCommandComplete);
    w.put_cstr("DEALLOCATE");
    w.finish();
    write_ready(out, static_cast<char>(status));
    return sb.flush_out() ? PacketAction::Skip : PacketAction::Closed;
}

// An unnamed Parse whose text may be DEALLOCATE of one of the client's names (`body`: what
// arrived of it).
bool Client::may_deallocate(std::span<const uint8_t> body) const noexcept {
    return ps.size() > 0 && !body.empty() && body[0] == 0 && may_forget(body.subspan(1));
}

// The same DEALLOCATE in an unnamed Parse (psycopg 3 sends its maintenance that way): the
// server runs `DEALLOCATE sluice_<n>` in its place, prepared first if this server lacks it,
// so that the client gets the server's own replies, in order and with its transaction's
// rules. The copy on this server is gone then, or still there if the batch fails: either
// way it is closed and prepared again at its next use. False: not such a Parse.
bool Client::parse_deallocate_of_name(std::span<const uint8_t> body, Server& s) {
    ParseMsg pm;
    std::string name;
    if (!parse_parse_msg(body, pm) || read_forget(pm.query, name) != Forget::One)
        return false;
    PsEntry* e = ps.find(name);
    // In a failed transaction block PostgreSQL refuses it (25P02): the client's text gets that
    // from the server as well, with nothing to undo. Sent where that state is not settled
    // yet, a refused one brings the name back (undo_dropped()).
    if (!e || (s.tracker.status() == 'E' && s.tracker.status_settled()))
        return false;
    if (!s.has_current(e))
        s.send_parse(e, ReplyAction::Skip, false);
    write_parse(s.sb.out_for_append(), "", "DEALLOCATE " + e->name, pm.params);
    s.tracker.on_request(Expect{.type = msg::kParse,
                                .action = ReplyAction::Forward,
                                .copy_term = false,
                                .client_close = true});
    s.ps.mark_unknown(e);
    ps.close_name(name);
    return true;
}

PacketAction Client::on_ps_packet(const PacketHeader& hdr, std::span<const uint8_t> data,
                                  Server& s) {
    uint8_t t = hdr.type;
    auto pass = [&]() {
        s.tracker.on_request(t);  // bytes_in was counted by on_work_packet()
        return PacketAction::Forward;
    };
    // Unnamed statements and portals pass unparsed, streamed as they arrive (the server judges
    // their format). Named ones are held whole (bounded by max_packet_size), as is a message
    // too short yet to tell.
    std::span<const uint8_t> body = data.subspan(hdr.hdr_len);
    if (bool named = false; peek_statement_named(t, body, named) && !named) {
        if (t != msg::kParse || !may_deallocate(body))
            return pass();
        if (data.size() < hdr.len)
            return PacketAction::Hold;
        return parse_deallocate_of_name(body, s) ? PacketAction::Skip : pass();
    }
    if (data.size() < hdr.len)
        return PacketAction::Hold;
    // Inside a failed transaction block PostgreSQL refuses a Parse with 25P02 unless its text
    // ends the transaction (ROLLBACK, COMMIT, ...): the cache must not answer it then.
    bool aborted = s.tracker.status() == 'E';
    // A name the client never prepared: the server's 26000 must carry the client's name,
    // even when it looks like one of ours.
    auto unknown_name = [&](std::string_view name) {
        if (!name.starts_with("sluice_"))
            return pass();
        std::string err;
        write_error(err, "ERROR", "26000",
                    "prepared statement \"" + std::string(name) + "\" does not exist");
        s.pending_errors.push_back(std::move(err));
        static const uint8_t no_params[6] = {0, 0, 0, 0, 0, 0};
        write_bind(s.sb.out_for_append(), "", "sluice_no_such_statement", no_params);
        s.tracker.on_request(Expect{.type = msg::kBind,
                                    .action = ReplyAction::ReplaceError,
                                    .copy_term = false});
        return PacketAction::Skip;
    };
    switch (t) {
    case msg::kParse: {
        ParseMsg pm;
        if (!parse_parse_msg(body, pm))
            return pass();  // malformed: the server rejects it (nothing is prepared)
        pool->client_parse_count++;
        if (ps.find(pm.name)) {
            // The name came from a Parse of an earlier batch that is still unanswered: if that
            // Parse fails the name is free again. Wait for its answer before deciding.
            for (const auto& [n, at_sync] : ps.unconfirmed()) {
                if (n == pm.name && at_sync < ps.syncs()) {
                    pool->client_parse_count--;  // counted again when the Parse is re-shown
                    waiting_confirm = true;
                    return PacketAction::Pause;
                }
            }
            // PostgreSQL's own answer (42P05), and the server must drop the rest of the batch
            // as it would have: make it fail and replace its error with the right one. In a
            // failed transaction block only a text that ends the transaction gets that far
            // (others get 25P02, which ReplaceError lets through): such a text gets a Bind of
            // a name that cannot exist, which fails in any state; any other the probe, which
            // fails with 25P02 exactly when PostgreSQL would.
            std::string err;
            write_error(err, "ERROR", "42P05",
                        "prepared statement \"" + std::string(pm.name) + "\" already exists");
            s.pending_errors.push_back(std::move(err));
            bool exits = is_transaction_exit(pm.query);
            if (exits) {
                static const uint8_t no_params[6] = {0, 0, 0, 0, 0, 0};
                write_bind(s.sb.out_for_append(), "", "sluice_no_such_statement", no_params);
            } else {
                write_state_probe(s.sb.out_for_append());
            }
            s.tracker.on_request(Expect{.type = exits ? msg::kBind : msg::kParse,
                                        .action = ReplyAction::ReplaceError,
                                        .copy_term = false});
            return PacketAction::Skip;
        }
        PsEntry* e = ps_intern(pm.query, pm.params);
        ps.add(pm.name, e);
        ps.unconfirmed().emplace_back(std::string(pm.name), ps.syncs());
        if (!s.ps.has(e)) {
            s.send_parse(e, ReplyAction::Forward, true);
        } else if (!s.tracker.status_settled()) {
            // Whether PostgreSQL accepts this Parse depends on the transaction's state when it
            // runs, which requests still owed may change: the server's copy is made anew and
            // the server answers in that state.
            if (s.has_current(e))
                s.drop_copy(e);
            s.send_parse(e, ReplyAction::Forward, true);
        } else if (aborted && !is_transaction_exit(pm.query)) {
            // PostgreSQL refuses it (25P02): the probe gets that error; the name is undone.
            write_state_probe(s.sb.out_for_append());
            s.tracker.on_request(Expect{.type = msg::kParse,
                                        .action = ReplyAction::Forward,
                                        .copy_term = false,
                                        .client_parse = true});
        } else if (s.has_current(e)) {
            s.pin_ps(e);
            s.tracker.on_request(Expect{.type = msg::kParse,
                                        .action = ReplyAction::Fake,
                                        .copy_term = false,
                                        .client_parse = true,
                                        .fake = msg::kParseComplete,
                                        .ps = e});
            s.emit_fakes();
        } else {
            s.send_parse(e, ReplyAction::Forward, true);
        }
        ps_unref(e);
        return PacketAction::Skip;
    }
    case msg::kBind: {
        BindMsg bm;
        if (!parse_bind_msg(body, bm))
            return pass();  // malformed: the server rejects it
        PsEntry* e = ps.find(bm.statement);
        if (!e)
            return unknown_name(bm.statement);  // the server's 26000 names the client's name
        uint16_t client_name = ps.found();
        if (!s.has_current(e))
            s.send_parse(e, ReplyAction::Skip, false);
        write_bind(s.sb.out_for_append(), bm.portal, e->name, bm.rest);
        s.pin_ps(e);  // its error may say the statement is stale (note_statement_error)
        s.tracker.on_request(Expect{.type = msg::kBind,
                                    .action = ReplyAction::Forward,
                                    .copy_term = false,
                                    .client_name = client_name,
                                    .ps = e});
        pool->bind_count++;
        return PacketAction::Skip;
    }
    case msg::kDescribe:
    case msg::kClose: {
        PacketReader r(body);
        uint8_t what;
        std::string_view name;
        if (!r.read_u8(what) || !r.read_cstr(name))
            return pass();  // malformed: the server rejects it
        // A named statement ('S'): portals and the unnamed statement passed above.
        if (t == msg::kClose) {
            // The client's name goes; the server keeps the statement for others. If the server
            // discards this Close (an earlier message of the batch failed) the name comes back.
            ps.close_name(name);
            s.tracker.on_request(Expect{.type = msg::kClose,
                                        .action = ReplyAction::Fake,
                                        .copy_term = false,
                                        .client_close = true,
                                        .fake = msg::kCloseComplete});
            s.emit_fakes();
            return PacketAction::Skip;
        }
        PsEntry* e = ps.find(name);
        if (!e)
            return unknown_name(name);
        uint16_t client_name = ps.found();
        if (!s.has_current(e))
            s.send_parse(e, ReplyAction::Skip, false);
        write_describe_or_close(s.sb.out_for_append(), msg::kDescribe, 'S', e->name);
        s.pin_ps(e);
        s.tracker.on_request(Expect{.type = msg::kDescribe,
                                    .action = ReplyAction::Forward,
                                    .copy_term = false,
                                    .client_name = client_name,
                                    .ps = e});
        return PacketAction::Skip;
    }
    default:
        return pass();
    }
}

}  // namespace sluice
