// Server side: connect, log in to PostgreSQL, then relay replies to the linked client while
// the tracker accounts for them; reset and release per pool mode.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "sluice/auth/md5.h"
#include "sluice/auth/scram.h"
#include "sluice/net/loop.h"
#include "sluice/net/sockets.h"
#include "sluice/pool/pool.h"

namespace sluice {
namespace {

// A string literal that reads as `v` whatever the server's standard_conforming_strings is
// (a client may have turned it off): with a backslash in `v`, an escape string E'...'.
std::string quote_literal(std::string_view v) {
    bool escape = v.find('\\') != std::string_view::npos;
    std::string out = escape ? "E'" : "'";
    for (char ch : v) {
        if (ch == '\'' || (escape && ch == '\\'))
            out.push_back(ch);
        out.push_back(ch);
    }
    out.push_back('\'');
    return out;
}

// A one-shot connection that delivers a CancelRequest and goes away. While it is in flight
// its target server is kept out of the idle list (SHOW SERVERS: being_canceled), so a late
// cancel can never hit the next client's query.
class CancelConn final : public SBufOwner {
public:
    ListNode node;
    SBuf sb;
    Server* target = nullptr;
    event* timer = nullptr;
    PacketAction on_packet(SBuf&, const PacketHeader&, std::span<const uint8_t>) override {
        return PacketAction::Skip;
    }
    void on_sbuf_event(SBuf&, SBufEvent ev) override {
        if (ev == SBufEvent::Connected)
            return;
        finish();
    }
    void on_sbuf_drained(SBuf&) override {}
    void finish();
    static void on_timeout(evutil_socket_t, short, void* arg) noexcept {
        time_update();
        log_warning("cancel request: no answer within cancel_wait_timeout, dropping it");
        static_cast<CancelConn*>(arg)->finish();
    }
};

List<CancelConn, &CancelConn::node> g_cancel_active;
List<CancelConn, &CancelConn::node> g_cancel_free;
void cancel_free() {
    while (CancelConn* c = g_cancel_free.pop_front())
        delete c;
}

void CancelConn::finish() {
    if (!node.linked() || sb.closed())
        return;
    sb.close();
    if (timer) {
        loop_timer_forget(timer);
        event_free(timer);
        timer = nullptr;
    }
    g_cancel_active.remove(*this);
    g_cancel_free.push_back(*this);
    loop_defer(cancel_free);
    if (Server* s = target) {
        target = nullptr;
        if (--s->cancels_in_flight == 0 && s->state == ServerState::Used && s->waiting_cancel) {
            s->waiting_cancel = false;
            pool_release_server(*s);  // continue the release the cancel held up
        }
    }
}

}  // namespace

size_t Server::log_prefix(char* buf, size_t size) const noexcept {
    // Before its address is known (a host name being resolved, or not resolved) a server is
    // "(bad-af):0", PgBouncer's words for an address it does not have yet.
    bool unresolved = addr.ss.ss_family == AF_UNSPEC;
    bool v6 = addr.ss.ss_family == AF_INET6;  // "[::1]:5432", as PgBouncer writes it
    int n = snprintf(buf, size, "S-%p: %s/%s@%s%s%s:%d", static_cast<const void*>(this),
                     pool->db->name.c_str(), pool->user->name.c_str(), v6 ? "[" : "",
                     unresolved       ? "(bad-af)"
                     : addr.is_unix() ? "unix"
                                      : addr.host().c_str(),
                     v6 ? "]" : "",
                     unresolved       ? 0
                     : addr.is_unix() ? pool->db->entry.port
                                      : addr.port());
    if (n < 0)
        return 0;
    return static_cast<size_t>(n) < size ? static_cast<size_t>(n) : size - 1;
}

void Server::configure_sbuf() {
    sb.set_startup(false);
    sb.set_loop_count(settings().sbuf_loopcnt);
    sb.set_max_packet(settings().max_packet_size);  // a result row is one message
    sb.set_keep_buffer(true);  // few and busy: no buffer round trip per reply
}

bool Server::connect() {
    const DatabaseEntry& e = pool->db->entry;
    connect_time = mono_now();
    std::string err;
    Database& db = *pool->db;
    std::string host = host_at(e.host, db.next_host);
    if (e.load_balance_hosts != "disable")
        ++db.next_host;
    dns_wait.addr_count = 1;
    if (is_unix_target(host)) {
        if (!unix_target(host, e.port, settings().unix_socket_dir, addr, err)) {
            slog_warning(this, "%s", err.c_str());
            login_failed(err, {});
            return false;
        }
        return start_connect();
    }
    dns_wait.fn = on_resolved;
    dns_wait.arg = this;
    DnsTtl ttl{settings().dns_max_ttl, settings().dns_nxdomain_ttl};
    switch (dns_resolve(host, e.port, ttl, addr, err, &dns_wait)) {
    case DnsStatus::Ready:
        break;
    case DnsStatus::Failed:
        dns_failed(err);
        return false;
    case DnsStatus::Pending:
        return true;  // on_resolved() goes on; server_connect_timeout covers the wait
    }
    return start_connect();
}

void Server::on_resolved(DnsWaiter* w, const PeerAddr* a, const std::string& err) {
    auto* s = static_cast<Server*>(w->arg);
    if (!a) {
        s->dns_failed(err);
        return;
    }
    s->addr = *a;
    s->start_connect();
}

bool Server::start_connect() {
    std::string err;
    bool in_progress = false;
    int fd = connect_nonblocking(addr, in_progress, err);
    if (fd < 0) {
        log_warning("sbuf_connect failed: %s", err.c_str());  // PgBouncer's line, no prefix
        connect_failed("connect failed");
        return false;
    }
    tune_socket(fd, !addr.is_unix(), tcp_options_from(settings()));
    if (!sb.attach(fd, this, in_progress)) {
        login_failed("cannot register socket event", {});
        return false;
    }
    configure_sbuf();
    if (!in_progress) {
        // A unix socket connects at once. What the handler queues goes out now: no write
        // report is due (the sbuf flushes after the event only for a connect that completes
        // later).
        on_sbuf_event(sb, SBufEvent::Connected);
        if (!sb.closed())
            static_cast<void>(sb.flush_out());
    }
    return true;
}

void Server::send_startup() {
    const DatabaseEntry& e = pool->db->entry;
    std::string& out = sb.out_for_append();
    PacketWriter w(out);
    w.begin_untyped();
    w.put_u32(kProtocol30);
    w.put_cstr("user");
    w.put_cstr(pool->user->name);
    w.put_cstr("database");
    w.put_cstr(pool->db->target_dbname());
    if (!e.client_encoding.empty()) {
        w.put_cstr("client_encoding");
        w.put_cstr(e.client_encoding);
    }
    if (!e.datestyle.empty()) {
        w.put_cstr("datestyle");
        w.put_cstr(e.datestyle);
    }
    if (!e.timezone.empty()) {
        w.put_cstr("timezone");
        w.put_cstr(e.timezone);
    }
    if (!e.application_name.empty()) {
        w.put_cstr("application_name");
        w.put_cstr(e.application_name);
    }
    w.put_u8(0);
    w.finish();
}

void Server::on_sbuf_event(SBuf&, SBufEvent ev) {
    switch (ev) {
    case SBufEvent::Connected: {
        pool->connect_failures = 0;
        PeerAddr l;
        l.len = sizeof(l.ss);
        if (getsockname(sb.fd(), reinterpret_cast<sockaddr*>(&l.ss), &l.len) == 0)
            local = l;
        if (settings().log_connections) {
            if (local.is_unix())
                slog_info(this, "new connection to server");
            else
                slog_info(this, "new connection to server (from %s)", local.host_port().c_str());
        }
        if (!send_ssl_request())  // TLS (tls_login.cpp): SSLRequest first, startup later
            send_startup();
        return;  // the sbuf flushes out_ after this event
    }
    case SBufEvent::ConnectFailed: {
        // PgBouncer keeps the reason of a connect that fails later to its debug output; it
        // is worth more than that (refused, unreachable, timed out), so it is a LOG line.
        std::string msg = strerror(errno);
        slog_info(this, "connect failed: %s", msg.c_str());
        connect_failed("connect failed");
        return;
    }
    case SBufEvent::Eof:
    case SBufEvent::SocketError:
        if (state == ServerState::Login) {
            login_failed("server conn crashed?", {});  // PgBouncer's one reason for both
            return;
        }
        close_and_fail_client("server conn crashed?");
        return;
    case SBufEvent::BadPacket:  // an impossible length, or above max_packet_size
    case SBufEvent::TooLong:
        if (state == ServerState::Login) {
            login_failed("bad pkt header", {});
            return;
        }
        close_and_fail_client("bad pkt header");  // PgBouncer's words, for both
        return;
    case SBufEvent::TlsReady:  // TLS (tls_login.cpp)
    case SBufEvent::TlsFailed:
    case SBufEvent::TlsHello:
        on_tls_event(ev);
        return;
    }
}

void Server::connect_failed(const char* why) {
    // A name with several addresses (localhost: 127.0.0.1 and ::1) may have one the server
    // does not listen on. As libpq does, the next address is tried at once: this connection
    // goes, and the pool opens the next one on the name's next address. Only when every
    // address has failed in a row is it a login failure (server_login_retry).
    Pool& p = *pool;
    if (++p.connect_failures < dns_wait.addr_count) {
        close(why);
        return;
    }
    p.connect_failures = 0;
    login_failed(why, {});
}

void Server::dns_failed(const std::string& err) {
    // PgBouncer's words in the log: the resolver wrote "DNS lookup failed: <name>: result=<n>"
    // when the lookup failed (not again for a remembered failure), each server says "closing
    // because: server DNS lookup failed". Clients told later get the resolver's answer.
    login_failed(err, {}, "server DNS lookup failed");
}

namespace {
// A logged-in server the pool goes on using (serving, idle, or being reset or checked).
bool has_usable_server(Pool& p) {
    bool found = false;
    auto look = [&found](Server& s) { found = found || !s.close_needed; };
    p.idle.for_each(look);
    p.active_servers.for_each(look);
    p.used.for_each(look);
    return found;
}
}  // namespace

void Server::login_failed(std::string_view message, std::span<const uint8_t> error_packet,
                          const char* close_reason) {
    Pool& p = *pool;
    p.last_login_failure = mono_now();
    if (p.db->entry.load_balance_hosts == "disable")
        ++p.db->next_host;  // the next attempt tries the next host of the list
    if (!error_packet.empty()) {
        p.last_login_error.assign(reinterpret_cast<const char*>(error_packet.data()),
                                  error_packet.size());
    } else {
        p.last_login_error.clear();
        write_error(p.last_login_error, "FATAL", "08P01", message);
    }
    std::string m(message);
    // Clients waiting on this pool learn why when PostgreSQL said it (an ErrorResponse other
    // than 57P03 "starting up"); connect failures are only remembered, as PgBouncer does.
    // Not while the pool has logged-in servers it keeps using: the refusal may be about this
    // one connection (PostgreSQL's max_connections reached), and those servers will serve
    // the queue as their clients release them. (Servers a RELOAD or RECONNECT retired do not
    // count: they close when released.)
    ErrorFields f;
    bool parsed = error_packet.size() > 5 && parse_error_fields(error_packet.subspan(5), f);
    bool starting = parsed && f.sqlstate == "57P03";
    if (!starting && !error_packet.empty() && !has_usable_server(p)) {
        // The server's own ErrorResponse (its SQLSTATE kept); logged with its message as the
        // reason, as PgBouncer does.
        std::string packet = p.last_login_error;
        std::string reason = parsed ? std::string(f.message) : std::string("server login failed");
        p.waiting.for_each([&](Client& c) { c.fail_with(packet, reason.c_str()); });
    }
    close(close_reason ? close_reason : error_packet.empty() ? m.c_str() : "login failed");
}

void Server::close_and_fail_client(const char* reason, const char* client_msg) {
    Client* c = client;
    close(reason);  // PgBouncer's order: the server's line, then the client's
    if (c)
        c->fatal("08P01", "%s", client_msg ? client_msg : reason);
}

void Server::close(const char* reason) {
    if (state == ServerState::Closing)
        return;
    if (settings().log_disconnections)  // as PgBouncer: servers' closes too
        slog_info(this, "closing because: %s (age=%llds)", reason,
                  static_cast<long long>((mono_now() - connect_time) / 1000000));
    if (client) {
        // Part of one of our messages went to the client: its stream can only end now (no
        // FATAL after it: Client::close_logged()).
        if (sb.ends_inside_message())
            client->sb.mark_cut();
        unlink(*client, *this);
    }
    if (cancels_in_flight)
        forget_cancels_for(*this);
    dns_cancel(&dns_wait);
    pool->db->server_count--;
    pool->user->server_count--;
    sb.close();
    set_state(*this, ServerState::Closing);
    pool_server_gone(*pool);
}

PacketAction Server::on_packet(SBuf&, const PacketHeader& hdr, std::span<const uint8_t> data) {
    if (state == ServerState::Login)
        return on_login_packet(hdr, data);
    return on_work_packet(hdr, data);
}

PacketAction Server::on_login_packet(const PacketHeader& hdr, std::span<const uint8_t> data) {
    if (hdr.hdr_len == 0)  // sb.expect_byte(): the answer to our SSLRequest (tls_login.cpp)
        return on_ssl_answer(hdr.type);
    if (data.size() < hdr.len)
        return PacketAction::Hold;
    std::span<const uint8_t> body = data.subspan(hdr.hdr_len);
    PacketReader r(body);
    switch (hdr.type) {
    case msg::kAuth: {
        uint32_t code;
        if (!r.read_u32(code))
            break;
        // auth_query users log in with the secret the query returned (client_auth.cpp).
        const User& u = pool->auth_cred ? *pool->auth_cred : *pool->user;
        const DatabaseEntry& e = pool->db->entry;
        std::string secret = !e.user.empty() && !e.password.empty() ? e.password : u.secret;
        std::string& out = sb.out_for_append();
        PacketWriter w(out);
        switch (code) {
        case kAuthOk:
            return PacketAction::Skip;
        case kAuthCleartext:
            if (is_md5_secret(secret) || is_scram_secret(secret)) {
                login_failed("cannot do cleartext auth with a hashed password", {});
                return PacketAction::Closed;
            }
            w.begin(msg::kPassword);
            w.put_cstr(secret);
            w.finish();
            break;
        case kAuthMd5: {
            std::span<const uint8_t> salt;
            if (!r.read_bytes(4, salt))
                break;
            if (is_scram_secret(secret)) {
                login_failed("cannot do md5 auth with a SCRAM secret", {});
                return PacketAction::Closed;
            }
            std::array<uint8_t, 4> s4{salt[0], salt[1], salt[2], salt[3]};
            w.begin(msg::kPassword);
            w.put_cstr(pg_md5_response(secret, u.name, s4));
            w.finish();
            break;
        }
        case kAuthSasl: {
            bool have = false;
            std::string_view mech;
            while (r.read_cstr(mech) && !mech.empty())
                if (mech == "SCRAM-SHA-256")
                    have = true;
            if (!have) {
                login_failed("server does not offer SCRAM-SHA-256", {});
                return PacketAction::Closed;
            }
            if (is_scram_secret(secret)) {
                if (!u.have_scram_keys) {
                    login_failed("password is SCRAM secret but client authentication did not "
                                 "provide SCRAM keys",
                                 {});
                    return PacketAction::Closed;
                }
                scram.init_keys(u.scram_client_key, u.scram_server_key);
            } else if (is_md5_secret(secret)) {
                login_failed("cannot do SCRAM auth with an md5 secret", {});
                return PacketAction::Closed;
            } else {
                scram.init_password(secret);
            }
            std::string first = scram.client_first();
            w.begin(msg::kPassword);
            w.put_cstr("SCRAM-SHA-256");
            w.put_u32(static_cast<uint32_t>(first.size()));
            w.put_bytes(first);
            w.finish();
            break;
        }
        case kAuthSaslContinue: {
            std::span<const uint8_t> rest = r.rest();
            std::string final_msg;
            if (!scram.handle_server_first(
                    std::string_view(reinterpret_cast<const char*>(rest.data()), rest.size()),
                    final_msg)) {
                login_failed("SCRAM exchange with the server failed", {});
                return PacketAction::Closed;
            }
            w.begin(msg::kPassword);
            w.put_bytes(final_msg);
            w.finish();
            break;
        }
        case kAuthSaslFinal: {
            std::span<const uint8_t> rest = r.rest();
            if (!scram.verify_server_final(
                    std::string_view(reinterpret_cast<const char*>(rest.data()), rest.size()))) {
                login_failed("server SCRAM signature is invalid", {});
                return PacketAction::Closed;
            }
            return PacketAction::Skip;
        }
        default:
            login_failed("unsupported authentication method requested by server", {});
            return PacketAction::Closed;
        }
        if (!sb.flush_out())
            return PacketAction::Closed;
        return PacketAction::Skip;
    }
    case msg::kParameterStatus: {
        std::string_view name, value;
        if (!r.read_cstr(name) || !r.read_cstr(value))
            break;
        if (int vi = var_index(name); vi >= 0)
            vars.set(static_cast<size_t>(vi), value);
        // connect_query's SETs report again what the login reported: the later value stands.
        auto same_name = [name](const auto& kv) { return kv.first == name; };
        if (auto it = std::find_if(login_params.begin(), login_params.end(), same_name);
            it != login_params.end())
            it->second.assign(value);
        else
            login_params.emplace_back(name, value);
        return PacketAction::Skip;
    }
    case msg::kBackendKeyData:
        if (!r.read_u32(backend_pid) || !r.read_u32(backend_key))
            break;
        return PacketAction::Skip;
    case msg::kReadyForQuery: {
        Pool& p = *pool;
        if (!connect_query_sent) {
            reset_vars = vars;  // what a RESET gives on this server: its login's values
            // The database's connect_query runs before anything else, still in the login:
            // its rows and tags are dropped, an error is logged and ignored, the values it
            // SETs are the server's (and the pool's welcome) as if the login had them.
            if (const std::string& q = p.db->entry.connect_query; !q.empty()) {
                connect_query_sent = true;
                write_query(sb.out_for_append(), q);
                return sb.flush_out() ? PacketAction::Skip : PacketAction::Closed;
            }
        }
        // The newest login's values welcome new clients: an ALTER ROLE / DATABASE ... SET
        // since the pool's first login shows in them, as it does on a direct connection.
        if (!p.have_params || p.params != login_params) {
            p.params = std::move(login_params);
            p.have_params = true;
            p.have_welcome = false;
        }
        login_params.clear();
        p.last_login_failure = 0;
        tracker.reset();
        slog_debug(this, "login complete");
        pool_server_ready(*this);
        return state == ServerState::Closing ? PacketAction::Closed : PacketAction::Skip;
    }
    case msg::kErrorResponse: {
        ErrorFields f;
        if (connect_query_sent) {  // PgBouncer's words, then the server's
            if (parse_error_fields(body, f))
                log_error("S: error while executing exec_on_query: %.*s: %.*s",
                          static_cast<int>(f.severity.size()), f.severity.data(),
                          static_cast<int>(f.message.size()), f.message.data());
            return PacketAction::Skip;
        }
        std::string m = "server login failed";
        if (parse_error_fields(body, f)) {
            m.assign(f.severity);
            m += " ";
            m.append(f.message);
        }
        log_warning("server login failed: %s", m.c_str());  // PgBouncer's line: no prefix
        login_failed(m, data);
        return PacketAction::Closed;
    }
    case msg::kNoticeResponse:
    case msg::kNegotiateProtocol:
        return PacketAction::Skip;
    case msg::kCopyInResponse:
    case msg::kCopyBothResponse:
        if (connect_query_sent) {  // nobody would ever send the data it waits for
            log_error("S: connect_query must not start COPY FROM STDIN");
            login_failed("connect_query started COPY", {});
            return PacketAction::Closed;
        }
        break;
    default:
        if (connect_query_sent)  // its rows, tags and COPY OUT data
            return PacketAction::Skip;
        break;
    }
    login_failed("bad packet from server during login", {});
    return PacketAction::Closed;
}

// The bulk of the replies (rows, descriptions, tags, Parse/BindComplete of the client's own
// unnamed statements) need nothing beyond the tracker's pop when they answer a client's own
// request and no synthesized reply waits (the tracker's take_passthrough_reply() says which).
// Everything else takes the full path of on_work_packet().
inline bool Server::plain_replies_possible() const noexcept {
    return client && tracker.fakes() == 0 && client->auth != AuthStep::AuthQuery;
}

inline bool Server::statements_cached() const noexcept {
    return ps.size() != 0 || client->ps.size() != 0;
}

// The plain replies of on_work_packet() in one walk (the rest go through on_packet()).
uint32_t Server::take_plain_run(SBuf&, std::span<const uint8_t> data) {
    if (state == ServerState::Login || !plain_replies_possible())
        return 0;
    size_t n = tracker.take_passthrough_run(data, sb.max_packet(), statements_cached());
    pool->bytes_out += n;
    return static_cast<uint32_t>(n);
}

PacketAction Server::on_work_packet(const PacketHeader& hdr, std::span<const uint8_t> data) {
    uint8_t t = hdr.type;
    if (plain_replies_possible() && tracker.take_passthrough_reply(t, data, statements_cached())) {
        pool->bytes_out += hdr.len;
        return PacketAction::Forward;
    }
    bool whole = data.size() == hdr.len;
    // A client in login waits for its auth_query on this server (client_auth.cpp). Nothing
    // reaches its socket: the replies to the query (tracked Forward) go to its login code,
    // those of the SETs sent at assignment are dropped like any injected request's.
    if (client && client->auth == AuthStep::AuthQuery) {
        if (!whole)
            return PacketAction::Hold;
        uint8_t st = t == msg::kReadyForQuery ? data[hdr.hdr_len] : 0;
        ReplyAction act = tracker.on_reply(t, st);
        if (!tracker.dropped().empty())
            undo_dropped();
        if (act != ReplyAction::Forward)
            return PacketAction::Skip;
        return client->on_auth_query_reply(*this, t, data.subspan(hdr.hdr_len));
    }
    if ((t == msg::kReadyForQuery || t == msg::kParameterStatus) && !whole)
        return PacketAction::Hold;
    // Replies that may make a Fake reply due are needed whole (they are small), and so is a
    // CommandComplete while statements are cached (DISCARD ALL / DEALLOCATE ALL) or when it
    // may be RESET or DISCARD ALL (the client's parameters, restore_client_defaults()).
    if (!whole && ((tracker.fakes() > 0 && t != msg::kDataRow && t != msg::kCopyData) ||
                   (t == msg::kCommandComplete &&
                    (ps.size() > 0 || RequestTracker::may_reset_tag(hdr.len)))))
        return PacketAction::Hold;
    if (t == msg::kErrorResponse && !whole && !tracker.empty() &&
        tracker.head()->action == ReplyAction::ReplaceError)
        return PacketAction::Hold;  // its SQLSTATE decides
    uint8_t head_type = tracker.empty() ? 0 : tracker.head()->type;
    bool skip_mode = !tracker.empty() && tracker.head()->action == ReplyAction::Skip;
    if (t == msg::kErrorResponse && (skip_mode || !client) && !orphaned) {
        if (data.size() < hdr.len)
            return PacketAction::Hold;
        ErrorFields f;
        if (parse_error_fields(data.subspan(hdr.hdr_len), f)) {
            std::string m(f.message);
            if (state == ServerState::Idle)  // PgBouncer's words, then the server's
                slog_warning(this, "got packet 'E' from server when not linked: %s", m.c_str());
            else
                slog_warning(this, "server error on pooler query: %s", m.c_str());
        }
        if (checking)
            close_needed = true;  // a failed health check retires the connection
        if (client && head_type == msg::kQuery && !checking && !resetting &&
            !tracker.resyncing())  // (the resync marker's replies before it are the client's)
            return refuse_client_value(f);
    }
    if (t == msg::kErrorResponse && state == ServerState::Idle) {
        // Mostly a backend terminated while idle (FATAL 57P01 before its EOF).
        close("server conn crashed?");
        return PacketAction::Closed;
    }
    // A Bind or Describe of a client's statement failed: the error may name the statement.
    PsEntry* failed_statement = nullptr;
    uint16_t failed_name = 0;
    if (t == msg::kErrorResponse && (head_type == msg::kBind || head_type == msg::kDescribe) &&
        tracker.head()->ps) {
        if (!whole)
            return PacketAction::Hold;
        failed_statement = static_cast<PsEntry*>(tracker.head()->ps);
        failed_name = tracker.head()->client_name;
        note_statement_error(*failed_statement, data.subspan(hdr.hdr_len));
    }
    uint8_t status = t == msg::kReadyForQuery ? data[hdr.hdr_len] : 0;
    if (t == msg::kParseComplete && head_type == msg::kParse) {
        if (const Expect* h = tracker.head()) {
            if (h->ps)
                static_cast<PsEntry*>(h->ps)->verified = true;
            if (h->client_parse && client)
                client->confirm_oldest_parse();
            if (h->client_close && client)
                client->ps.pop_closed();  // DEALLOCATE name: the name is gone for good
        }
    }
    ReplyAction act = tracker.on_reply(t, status);
    if (!tracker.dropped().empty())
        undo_dropped();
    if (t == msg::kErrorResponse) {
        if (act == ReplyAction::ReplaceError && client && !pending_errors.empty()) {
            ErrorFields f;
            bool failed_block = parse_error_fields(data.subspan(hdr.hdr_len), f) &&
                                f.sqlstate == "25P02";
            if (!failed_block)
                client->sb.queue(pending_errors.front());
            pending_errors.erase(pending_errors.begin());
            replaced_error_in_batch = true;
            if (!failed_block)
                return PacketAction::Skip;
            act = ReplyAction::Forward;
        }
        if (act == ReplyAction::Skip && head_type == msg::kParse && client)
            act = ReplyAction::Forward;  // an injected Parse failed: the client must know
        if (failed_statement && act == ReplyAction::Forward && client) {
            // PostgreSQL names the client's statement; the server knows it as sluice_<n>.
            std::string renamed;
            std::string_view name = client->ps.name_of(failed_statement, failed_name);
            if (!name.empty() && rename_in_error(t, data.subspan(hdr.hdr_len),
                                                 failed_statement->name, name, renamed)) {
                pool->bytes_out += hdr.len;
                client->sb.queue(renamed);
                return PacketAction::Skip;
            }
        }
    }
    // A client's DISCARD ALL / DEALLOCATE ALL Query, its names set aside at send
    // (Client::forget_names_if_discard): it ran, or it failed and they come back.
    bool cleared_at_send = (t == msg::kCommandComplete || t == msg::kErrorResponse) &&
                           head_type == msg::kQuery && tracker.head() &&
                           tracker.head()->client_parse;
    if (cleared_at_send && client)
        client->ps.forget_done(t == msg::kCommandComplete);
    if (t == msg::kCommandComplete && whole && client && act == ReplyAction::Forward &&
        RequestTracker::may_reset_tag(hdr.len) && resets_parameters(data.subspan(hdr.hdr_len)))
        reset_in_cycle = true;
    if (t == msg::kCommandComplete && whole && ps.size() + (client ? client->ps.size() : 0) > 0) {
        std::string_view tag(reinterpret_cast<const char*>(data.data()) + hdr.hdr_len,
                             hdr.len - hdr.hdr_len);
        if (!cleared_at_send &&
            (tag.starts_with("DISCARD ALL") || tag.starts_with("DEALLOCATE ALL"))) {
            ps.clear();
            if (client && act == ReplyAction::Forward)
                client->ps.clear();
        }
    }
    switch (t) {
    case msg::kParameterStatus: {
        PacketReader r(data.subspan(hdr.hdr_len));
        std::string_view name, value;
        if (r.read_cstr(name) && r.read_cstr(value)) {
            if (int vi = var_index(name); vi >= 0) {
                vars.set(static_cast<size_t>(vi), value);
                if (client && act == ReplyAction::Forward) {
                    if (reset_in_cycle)
                        return PacketAction::Skip;  // the client is told at the ReadyForQuery
                    client->vars.set(static_cast<size_t>(vi), value);
                }
            }
        }
        break;
    }
    case msg::kCopyInResponse:
    case msg::kCopyBothResponse:
        if (orphaned) {  // run_orphaned(): nobody will send the data it waits for
            close("client disconnect while server was not ready");
            return PacketAction::Closed;
        }
        pinned = pinned || t == msg::kCopyBothResponse;
        break;
    case msg::kReadyForQuery:
        // (A client that leaves mid-cycle closes this server or leaves it orphaned, which
        // clears the flag: it never outlives the client.)
        if (reset_in_cycle && client && act == ReplyAction::Forward) {
            restore_client_defaults(
                std::string_view(reinterpret_cast<const char*>(data.data()), hdr.len));
            pool->bytes_out += hdr.len;
            act = ReplyAction::Skip;  // queued behind the parameters
            // A synthesized reply due right after it (the Close of a cached statement,
            // pipelined behind the RESET)
            if (tracker.fakes() > 0 && !tracker.failed() && tracker.head() &&
                tracker.head()->action == ReplyAction::Fake)
                emit_fakes();
        }
        after_reply();
        if (state == ServerState::Closing)
            return PacketAction::Closed;
        // A swallowed ReadyForQuery that ends the client's turn (the resync marker's) carries
        // nothing to the client, so no drained send will release the server: with nothing
        // else on its way to the client, release it now. (Bytes still on their way end in a
        // send, and its drained callback releases it.)
        if (act == ReplyAction::Skip && ready_to_release && !sb.mid_forward() && client &&
            !client->sb.has_output()) {
            on_sbuf_drained(sb);
            return PacketAction::Skip;
        }
        break;
    default:
        break;
    }
    if (act == ReplyAction::Skip || !client) {
        if (orphaned)
            orphan_heard = mono_now();  // (the janitor's kOrphanQuiet)
        return PacketAction::Skip;
    }
    pool->bytes_out += hdr.len;
    if (tracker.fakes() > 0 && whole && !tracker.failed() && tracker.head() &&
        tracker.head()->action == ReplyAction::Fake) {
        // A synthesized reply is due right after this one: queue both, in order.
        client->sb.queue(std::string_view(reinterpret_cast<const char*>(data.data()), hdr.len));
        emit_fakes();
        return PacketAction::Skip;
    }
    return PacketAction::Forward;
}

// A Bind or Describe of cached statement e failed. 0A000 raised by RevalidateCachedQuery is
// PostgreSQL's "cached plan must not change result type" (in any language; a server that
// sends no routine is taken at its SQLSTATE): the statement's result type changed since this
// server prepared it (ALTER TABLE ... TYPE, a view replaced). PostgreSQL refuses such a
// statement for good; but here it is shared, and clients that prepare the text now must get
// the new plan. Every server's copy from before is closed and prepared anew at its next use.
void Server::note_statement_error(PsEntry& e, std::span<const uint8_t> body) {
    ErrorFields f;
    if (!parse_error_fields(body, f) || f.sqlstate != "0A000" ||
        (!f.routine.empty() && f.routine != "RevalidateCachedQuery"))
        return;
    if (ps.copy(&e) == ServerPs::Copy::Stale)
        return;  // raised since this copy was made: it is prepared anew at its next use
    ++e.generation;
    slog_info(this, "prepared statement %s: %.*s; every server prepares it anew", e.name.c_str(),
              static_cast<int>(f.message.size()), f.message.data());
}

// Called at each ReadyForQuery: decide whether the server can go back to the pool.
void Server::after_reply() {
    Pool& p = *pool;
    resync_if_due();
    if (!client) {
        if (orphaned) {  // run_orphaned()
            if (!tracker.empty())
                return;
            orphaned = false;
            if (tracker.idle())
                pool_release_server(*this);
            else
                close("client disconnect while server was not ready");
            return;
        }
        if (tracker.idle())
            pool_server_ready(*this);  // reset finished
        return;
    }
    PoolMode mode = p.mode();
    if (mode == PoolMode::Statement && tracker.empty() && tracker.status() != 'I') {
        Client* c = client;
        c->fatal("08P01", "transaction blocks not allowed in statement pooling mode");
        if (state != ServerState::Closing)
            close("transaction blocks not allowed in statement pooling mode");
        return;
    }
    if (tracker.empty()) {
        // One request/response cycle ended (PgBouncer's "query"). Its time runs from the
        // client's first message, queueing for a server included, as PgBouncer counts it.
        usec_t began = client->query_start ? client->query_start : request_time;
        client->query_start = 0;
        p.query_count++;
        p.query_time += static_cast<uint64_t>(mono_now() - began);
        stats_observe_query(p, mono_now() - began);
    }
    if (tracker.idle()) {
        p.xact_count++;
        if (client->xact_start) {
            p.xact_time += static_cast<uint64_t>(mono_now() - client->xact_start);
            stats_observe_xact(p, mono_now() - client->xact_start);
            client->xact_start = 0;
        }
        if (mode != PoolMode::Session && !pinned)
            ready_to_release = true;
        else if (mode == PoolMode::Session && fast_close_due())
            ready_to_release = true;  // fast close once this reply reached the client
    }
}

void Server::on_sbuf_drained(SBuf&) {
    if (!ready_to_release || !client)
        return;
    if (!tracker.idle() || client->sb.mid_forward()) {
        ready_to_release = false;
        return;
    }
    if (pool->mode() == PoolMode::Session) {
        // The transaction ended on a server due for fast close (after_reply): here it does not
        // depend on a janitor tick landing between two queries.
        fast_close();
        return;
    }
    pool_release_server(*this);
}

// Directly, PostgreSQL runs what a client sent before its Terminate or the end of its stream:
// a COMMIT sent along with Terminate commits, a fire-and-forget INSERT lands. So here: when
// every request of the leaving client is whole and the server answers them without anything
// more from it, the bytes walked and not sent yet go out, the replies are dropped, and the
// last ReadyForQuery decides (after_reply()): idle, the server goes back to the pool; still
// in a transaction, it closes, which rolls that back as the backend would on its own.
bool Server::run_orphaned() {
    Client& c = *client;
    if (c.sb.mid_message() || pinned || !tracker.ends_alone() || tracker.empty())
        return false;
    static_cast<void>(sb.out_for_append());  // the client's walked bytes move to our output
    unlink(c, *this);
    // Its replies go to nobody, the last ReadyForQuery's too, though after_reply() hands the
    // server to the next client before that reply is done with.
    tracker.skip_all();
    pending_errors.clear();  // the errors its skipped requests would have been given
    replaced_error_in_batch = false;
    orphaned = true;
    orphan_heard = mono_now();
    ready_to_release = false;
    reset_in_cycle = false;  // its parameters are nobody's now
    set_state(*this, ServerState::Used);
    static_cast<void>(sb.flush_out());  // a failure closes us (on_sbuf_event)
    return true;
}

bool Server::fast_close_due() const noexcept {
    return settings().server_fast_close && (close_needed || pool->db->dirty);
}

void Server::fast_close() {
    client->fatal("08P01", "database configuration changed");
    if (state != ServerState::Closing)
        close("database configuration changed");
}

// One of the SETs that give this server its client's values failed (send_sets_for(): the one
// skipped Query a linked client's cycle can have): a value PostgreSQL refuses, such as a
// TimeZone or client_encoding from the startup packet that it does not know. Directly, that
// login would have failed with this very error; the client gets it now, as FATAL, and the
// server goes (what it has of the values is unknown; PgBouncer's close reason).
PacketAction Server::refuse_client_value(const ErrorFields& f) {
    std::string packet;
    std::string m = f.message.empty() ? std::string("invalid server parameter")
                                      : std::string(f.message);
    std::string code = f.sqlstate.size() == 5 ? std::string(f.sqlstate) : std::string("08P01");
    write_error(packet, "FATAL", code.c_str(), m, f.detail, f.hint);
    Client* c = client;
    close("invalid server parameter");  // unlinks the client
    c->fail_with(packet, m.c_str());
    return PacketAction::Closed;
}

void Server::send_sets_for(const Client& c) {
    VarValues have = vars.values();
    VarValues want = c.vars.values();
    std::string sql;
    for (size_t i = 0; i < var_count(); ++i) {
        if (same_value(want[i], have[i]))
            continue;
        if (!var_is_set(want[i])) {
            // The client has no value of its own: one PostgreSQL does not report
            // (track_extra_parameters = search_path) that the client did not send. Its value
            // is the server's default, which RESET gives back (a server's startup packet sets
            // none of these), rather than what the previous client left.
            sql += "RESET ";
            sql += var_name(i);
            sql += ";";
            have[i] = kVarUnset;
            continue;
        }
        if (i < kBuiltinVars) {  // PgBouncer's statement for its five
            sql += "SET ";
            sql += var_name(i);
            sql += " = ";
            sql += quote_literal(want[i]);
            sql += ";";
        } else {
            // track_extra_parameters: set_config() takes the value as the startup packet
            // does; SET would make a quoted list one element (search_path = 'a, b' is the
            // single schema "a, b").
            sql += "SELECT set_config(";
            sql += quote_literal(var_name(i));
            sql += ", ";
            sql += quote_literal(want[i]);
            sql += ", false);";
        }
        have[i] = want[i];
    }
    if (sql.empty())
        return;
    vars.assign(have);
    tracker.on_request(msg::kQuery, ReplyAction::Skip);
    write_query(sb.out_for_append(), sql);
}

// A CommandComplete tag (`body`, NUL-terminated) after which PostgreSQL has put parameters back
// to their reset values: RESET (one, or ALL) and DISCARD ALL.
bool Server::resets_parameters(std::span<const uint8_t> body) noexcept {
    std::string_view tag(reinterpret_cast<const char*>(body.data()), body.size());
    return tag == std::string_view("RESET", 6) || tag == std::string_view("DISCARD ALL", 12);
}

// The cycle that ends at ReadyForQuery `z` ran a RESET or DISCARD ALL of the client's. On
// this server that put parameters back to the values of the server's own login, where
// PostgreSQL gives a client those of its startup packet (else the database's and role's
// defaults, which the server's login had too). So where the server now has its login value
// and the client's own default differs, the client's value is its default; everywhere else
// it is the server's. The client is told what changed for it (the server's ParameterStatus
// were held back since the tag), then gets `z`; the server is given the client's values
// unless its transaction failed (its ROLLBACK undoes the reset and reports what comes back).
//
// Without the statement's text a RESET of one parameter cannot be told from RESET ALL: a
// parameter the client had SET to exactly the server's login value goes back to the client's
// default too. SET ... TO DEFAULT (tag SET) is not seen at all (doc/pooling.md).
void Server::restore_client_defaults(std::string_view z) {
    reset_in_cycle = false;
    VarValues told = client->vars.values();
    VarValues now = vars.values();
    VarValues own = client->reset_vars.values();
    VarValues login = reset_vars.values();
    std::string out;
    bool unreported = false;
    bool logged_in_here = !reset_vars.same(VarCache());  // not taken over (online restart)
    for (size_t i = 0; i < var_count(); ++i) {
        if (logged_in_here && !var_is_set(login[i])) {
            // A parameter PostgreSQL does not report (track_extra_parameters = search_path):
            // the reset may have changed it unseen. The server's value is unknown now, so
            // the SET below (and every later assignment) gives it the client's again.
            unreported = unreported || var_is_set(now[i]);
            now[i] = kVarUnset;
            continue;
        }
        std::string_view want = now[i];
        if (var_is_set(own[i]) && var_is_set(login[i]) && same_value(now[i], login[i]))
            want = own[i];
        if (!var_is_set(want) || same_value(want, told[i]))
            continue;
        write_parameter_status(out, reported_name(i), want);
        told[i] = want;
    }
    client->vars.assign(told);
    if (unreported)
        vars.assign(now);
    out.append(z);
    client->sb.queue(out);
    if (tracker.empty() && tracker.status() != 'E' && !client->sb.mid_forward()) {
        sync_vars_from(*client);
        static_cast<void>(sb.flush_out());
    }
}

// A tracked parameter's name as the server spells it (track_extra_parameters may differ in
// case: the client must get PostgreSQL's own).
std::string_view Server::reported_name(size_t idx) const noexcept {
    for (const auto& [name, value] : pool->params)
        if (var_index(name) == static_cast<int>(idx))
            return name;
    return var_name(idx);
}

void Server::close_statement(PsEntry* e) {
    // Pinned with the set's reference until the Close is answered (or discarded: then
    // undo_dropped() puts it back).
    pin_ps(e, true);
    write_describe_or_close(sb.out_for_append(), msg::kClose, 'S', e->name);
    tracker.on_request(Expect{.type = msg::kClose, .action = ReplyAction::Skip,
                              .copy_term = false, .ps = e});
}

bool Server::has_current(PsEntry* e) {
    switch (ps.touch(e)) {
    case ServerPs::Copy::Current:
        return true;
    case ServerPs::Copy::None:
        return false;
    case ServerPs::Copy::Stale:
        break;
    }
    drop_copy(e);
    return false;
}

void Server::drop_copy(PsEntry* e) {
    ps_ref(e);  // the set's reference, passed to the Close
    ps.remove(e);
    close_statement(e);
}

void Server::send_parse(PsEntry* e, ReplyAction action, bool client_parse) {
    if (PsEntry* victim = ps.add(e, static_cast<size_t>(settings().max_prepared_statements)))
        close_statement(victim);
    pin_ps(e);
    write_parse(sb.out_for_append(), e->name, e->query, e->params);
    tracker.on_request(Expect{.type = msg::kParse,
                              .action = action,
                              .copy_term = false,
                              .client_parse = client_parse,
                              .ps = e});
    pool->server_parse_count++;
}

void Server::emit_fakes() {
    Expect e{};
    bool any = false;
    while (tracker.take_fake(e)) {
        if (!client)
            continue;
        if (e.client_close)
            client->ps.pop_closed();
        if (e.client_parse)
            client->confirm_oldest_parse();
        std::string& out = client->sb.out_for_append();
        PacketWriter w(out);
        w.begin(e.fake);
        w.finish();
        any = true;
    }
    // Nothing else owed by the server means no reply of its will carry these out: send now.
    if (any && client && tracker.empty())
        static_cast<void>(client->sb.flush_out());
}

// Undoes the statement-cache effects of requests the server discarded after an error, newest
// first: a Parse and a Close of one name in the same discarded run then leave the client's
// name as it was before both. The discarded client Parses and Closes are the oldest entries
// of the client's unconfirmed and closed lists (later batches queue behind them).
void Server::undo_dropped() {
    auto& dropped = tracker.dropped();
    size_t parses = 0;
    size_t closes = 0;
    if (client) {
        for (const Expect& e : dropped) {
            parses += e.type == msg::kParse && e.client_parse;
            closes += e.client_close;
        }
        parses = std::min(parses, client->ps.has_unconfirmed() ? client->ps.unconfirmed().size()
                                                               : size_t{0});
        closes = std::min(closes, client->ps.has_closed() ? client->ps.closed().size() : size_t{0});
    }
    size_t pi = parses;
    size_t ci = closes;
    for (auto it = dropped.rbegin(); it != dropped.rend(); ++it) {
        const Expect& e = *it;
        auto* ps_entry = static_cast<PsEntry*>(e.ps);
        if (e.type == msg::kParse && (ps_entry || e.client_parse)) {
            if (ps_entry && e.action != ReplyAction::Fake)
                ps.remove_current(ps_entry);
            if (e.client_parse && pi > 0)
                client->ps.remove(client->ps.unconfirmed()[--pi].first);
        } else if (e.action == ReplyAction::ReplaceError) {
            // The failing request itself already used its error; discarded ones did not.
            if (replaced_error_in_batch)
                replaced_error_in_batch = false;
            else if (!pending_errors.empty())
                pending_errors.erase(pending_errors.begin());
        } else if (e.type == msg::kQuery && e.client_parse && client) {
            // A DISCARD ALL / DEALLOCATE ALL Query skipped after an extended-protocol error:
            // the names it set aside at send come back (forget_names_if_discard).
            client->ps.forget_done(false);
        } else if (e.type == msg::kClose && e.action == ReplyAction::Skip && ps_entry) {
            ps.mark_unknown(ps_entry);  // a Close of ours never ran: the server still has it
        } else if (e.client_close && ci > 0) {
            // A client Close the server would have discarded: the name comes back.
            const ClientPs::Closed& c = client->ps.closed()[--ci];
            if (c.e && !client->ps.find(c.name))
                client->ps.add(c.name, c.e);
        }
    }
    for (size_t i = 0; i < parses; ++i)
        static_cast<void>(client->confirm_oldest_parse());
    for (size_t i = 0; i < closes; ++i)
        client->ps.pop_closed();
    dropped.clear();
    replaced_error_in_batch = false;
}

void Server::start_check() {
    set_state(*this, ServerState::Used);
    checking = true;
    const std::string& q = settings().server_check_query;
    tracker.on_request(msg::kQuery, ReplyAction::Skip);
    write_query(sb.out_for_append(), q == "<empty>" ? std::string_view() : std::string_view(q));
    static_cast<void>(sb.flush_out());
}

void Server::send_resync_marker() {
    // The marker must follow everything the client sent: with bytes of its still on their
    // way here (walked, not sent yet, or a message half passed on), it waits for them. The
    // janitor tries again (a check at every drained send would cost every transaction).
    if (client && client->sb.mid_forward())
        return;
    // An empty Query: PostgreSQL answers it (EmptyQueryResponse) in any transaction state,
    // a failed one included.
    write_query(sb.out_for_append(), std::string_view());
    tracker.start_resync();
    static_cast<void>(sb.flush_out());
}

void Server::start_reset(const std::string& query) {
    set_state(*this, ServerState::Used);
    resetting = true;
    tracker.on_request(msg::kQuery, ReplyAction::Skip);
    write_query(sb.out_for_append(), query);
    static_cast<void>(sb.flush_out());
}

void send_cancel_request(Server& s) {
    std::string err;
    bool in_progress = false;
    int fd = connect_nonblocking(s.addr, in_progress, err);
    if (fd < 0) {
        log_warning("cancel request: connect failed: %s", err.c_str());
        return;
    }
    auto* cc = new CancelConn();
    if (!cc->sb.attach(fd, cc, in_progress)) {
        delete cc;
        return;
    }
    g_cancel_active.push_back(*cc);
    cc->target = &s;
    s.cancels_in_flight++;
    if (settings().cancel_wait_timeout > 0) {
        cc->timer = evtimer_new(rt().base, &CancelConn::on_timeout, cc);
        timeval tv{static_cast<time_t>(settings().cancel_wait_timeout / 1000000),
                   static_cast<suseconds_t>(settings().cancel_wait_timeout % 1000000)};
        if (cc->timer)
            loop_timer_add(cc->timer, tv);
    }
    std::string& out = cc->sb.out_for_append();
    PacketWriter w(out);
    w.begin_untyped();
    w.put_u32(kCancelRequestCode);
    w.put_u32(s.backend_pid);
    w.put_u32(s.backend_key);
    w.finish();
    if (!in_progress)
        static_cast<void>(cc->sb.flush_out());
}

void forget_cancels_for(Server& s) {
    g_cancel_active.for_each([&](CancelConn& c) {
        if (c.target == &s)
            c.target = nullptr;
    });
    s.cancels_in_flight = 0;
}

void cancel_free_all() {
    g_cancel_active.for_each([](CancelConn& c) {
        c.target = nullptr;
        c.finish();
    });
    cancel_free();
}

}  // namespace sluice
