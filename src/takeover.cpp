// Online restart (-R), the new process's half (see sluice/takeover.h). The exchange with the
// old process is a short blocking conversation before the event loop runs: nothing is served
// until it ends, and every error ends this process (the old one resumes when its console
// session goes, as with PgBouncer).
#include "sluice/takeover.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>
#include <deque>
#include <fcntl.h>
#include <optional>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#include "sluice/pool/pool.h"
#include "sluice/proto/packet.h"
#include "sluice/ps_cache.h"
#include "sluice/util/hex.h"
#include "sluice/util/log.h"

namespace sluice {
namespace {

// One SHOW FDS row with the socket that came with it.
struct FdRow {
    int fd = -1;
    int old_fd = 0;
    std::string task;
    std::string user;
    std::string db;
    uint64_t cancel = 0;
    int link = 0;                        // the old fd of the linked peer; 0 = none
    std::optional<std::string> vars[4];  // client_encoding, std_strings, datestyle, timezone
    std::optional<std::string> password;
    std::optional<std::string> scram_client_key;
    std::optional<std::string> scram_server_key;
    std::optional<std::string> statements;  // the client's prepared statements (sluice)
    std::optional<std::string> input;       // a queued client's held request, hex (sluice)
    std::optional<std::string> pool_params;  // a server row's pool welcome (sluice)
};

// The tracked parameters the rows carry, in column order.
constexpr const char* kRowVars[4] = {"client_encoding", "standard_conforming_strings", "DateStyle",
                                     "TimeZone"};

// A socket received, and where in the byte stream it came: at the last byte of the recvmsg
// that brought it. The old process sends each row with its socket in one sendmsg, and
// Linux's recvmsg ends with the data that carried the sockets it returns, so that byte is
// inside the row the socket belongs to.
struct ReceivedFd {
    uint64_t at;
    int fd;
};

int g_sock = -1;
int g_port = 0;
std::vector<FdRow> g_rows;
std::vector<uint8_t> g_in;     // bytes received, not yet parsed
uint64_t g_in_at = 0;          // stream offset of g_in[0]
std::deque<ReceivedFd> g_fds;  // sockets received, not yet matched to their rows
int g_timeout_ms = 0;

// Waits for the old process's socket to be ready for `events`.
void wait_for(short events, const char* what) {
    pollfd p{g_sock, events, 0};
    int n;
    do {
        n = poll(&p, 1, g_timeout_ms);
    } while (n < 0 && errno == EINTR);
    if (n == 0)
        die("takeover: no answer from the old process within %d s (%s)", g_timeout_ms / 1000, what);
    if (n < 0)
        die("takeover: poll failed: %s", strerror(errno));
}

void send_all(const std::string& data, const char* what) {
    size_t off = 0;
    while (off < data.size()) {
        wait_for(POLLOUT, what);
        ssize_t n = send(g_sock, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            die("takeover: failed to send %s: %s", what, strerror(errno));
        off += static_cast<size_t>(n);
    }
}

// Reads what is there, keeping every socket that came with it. False at EOF.
bool receive(const char* what) {
    wait_for(POLLIN, what);
    uint8_t buf[16384];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 64)];
    iovec io{buf, sizeof(buf)};
    msghdr msg{};
    msg.msg_iov = &io;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n;
    do {
        n = recvmsg(g_sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && (errno == EINTR || errno == EAGAIN));
    if (n < 0)
        die("takeover: recvmsg failed: %s", strerror(errno));
    for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        uint64_t at = g_in_at + g_in.size() + static_cast<uint64_t>(n > 0 ? n - 1 : 0);
        for (size_t i = 0; i < count; ++i) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            g_fds.push_back({at, fd});
        }
    }
    if (msg.msg_flags & MSG_CTRUNC)
        die("takeover: file descriptors from the old process were lost (control data cut)");
    g_in.insert(g_in.end(), buf, buf + n);
    return n > 0;
}

// The next whole message from the old process, and the sockets that came with it.
uint8_t next_message(std::vector<uint8_t>& body, std::vector<int>& fds, const char* what) {
    for (;;) {
        if (g_in.size() >= 5) {
            uint32_t len = read_be32(g_in.data() + 1);
            if (len < 4 || len > (64u << 20))
                die("takeover: bad message from the old process (%s)", what);
            if (g_in.size() >= 1 + size_t{len}) {
                uint8_t type = g_in[0];
                body.assign(g_in.begin() + 5, g_in.begin() + 1 + len);
                g_in.erase(g_in.begin(), g_in.begin() + 1 + len);
                g_in_at += 1 + size_t{len};
                fds.clear();
                for (; !g_fds.empty() && g_fds.front().at < g_in_at; g_fds.pop_front())
                    fds.push_back(g_fds.front().fd);
                return type;
            }
        }
        if (!receive(what))
            die("takeover: unexpected EOF from the old process (%s)", what);
    }
}

[[noreturn]] void old_process_error(std::span<const uint8_t> body) {
    ErrorFields f;
    std::string m = parse_error_fields(body, f)
                        ? std::string(f.severity) + ": " + std::string(f.message)
                        : std::string("(unreadable error)");
    log_error("old bouncer sent: %s", m.c_str());  // PgBouncer's words, both lines
    die("something failed");
}

std::optional<std::string> column(PacketReader& r) {
    int32_t len;
    if (!r.read_i32(len))
        die("takeover: bad SHOW FDS row");
    if (len < 0)
        return std::nullopt;
    std::span<const uint8_t> v;
    if (!r.read_bytes(static_cast<size_t>(len), v))
        die("takeover: bad SHOW FDS row");
    return std::string(reinterpret_cast<const char*>(v.data()), v.size());
}

long long number(const std::optional<std::string>& v) {
    return v ? atoll(v->c_str()) : 0;
}

PeerAddr peer_of(int fd, bool local) {
    PeerAddr a;
    a.len = sizeof(a.ss);
    int rc = local ? getsockname(fd, reinterpret_cast<sockaddr*>(&a.ss), &a.len)
                   : getpeername(fd, reinterpret_cast<sockaddr*>(&a.ss), &a.len);
    if (rc != 0)
        a = PeerAddr{};
    return a;
}

// SHOW FDS columns by name (PgBouncer releases differ: 1.21 put intervalstyle before
// timezone), from the RowDescription.
enum Column : uint8_t {
    kFd,
    kTask,
    kUser,
    kDatabase,
    kCancel,
    kLink,
    kClientEncoding,
    kStdStrings,
    kDateStyle,
    kTimeZone,
    kPassword,
    kScramClientKey,
    kScramServerKey,
    kPreparedStatements,  // sluice's own
    kPendingInput,        // sluice's own
    kPoolParameters,      // sluice's own
    kColumnCount
};
constexpr const char* kColumnNames[kColumnCount] = {"fd",
                                                    "task",
                                                    "user",
                                                    "database",
                                                    "cancel",
                                                    "link",
                                                    "client_encoding",
                                                    "std_strings",
                                                    "datestyle",
                                                    "timezone",
                                                    "password",
                                                    "scram_client_key",
                                                    "scram_server_key",
                                                    "prepared_statements",
                                                    "pending_input",
                                                    "pool_parameters"};
int g_column_at[kColumnCount];  // index in the row, -1 = absent

void parse_row_description(std::span<const uint8_t> body) {
    std::fill(std::begin(g_column_at), std::end(g_column_at), -1);
    PacketReader r(body);
    uint16_t n;
    if (!r.read_u16(n))
        die("takeover: bad SHOW FDS row description");
    for (int i = 0; i < n; ++i) {
        std::string_view name;
        std::span<const uint8_t> rest;
        if (!r.read_cstr(name) || !r.read_bytes(18, rest))
            die("takeover: bad SHOW FDS row description");
        for (int k = 0; k < kColumnCount; ++k)
            if (name == kColumnNames[k])
                g_column_at[k] = i;
    }
    if (g_column_at[kFd] < 0 || g_column_at[kTask] < 0)
        die("takeover: SHOW FDS without fd and task columns");
}

// A row comes with exactly one socket: one too many could pass for the next row's.
void parse_row(std::span<const uint8_t> body, const std::vector<int>& fds) {
    if (fds.empty())
        die("takeover: got row without fd info");  // PgBouncer's words
    if (fds.size() > 1)
        die("takeover: got row with %zu file descriptors", fds.size());
    FdRow row;
    row.fd = fds[0];
    PacketReader r(body);
    uint16_t ncols;
    if (!r.read_u16(ncols))
        die("takeover: bad SHOW FDS row");
    std::vector<std::optional<std::string>> cols(ncols);
    for (auto& c : cols)
        c = column(r);
    auto take = [&](Column k) -> std::optional<std::string> {
        int at = g_column_at[k];
        if (at < 0 || at >= ncols)
            return std::nullopt;
        return std::move(cols[static_cast<size_t>(at)]);
    };
    std::optional<std::string> task = take(kTask);
    if (!task)
        die("takeover: incomplete data from old process");
    row.task = std::move(*task);
    row.old_fd = static_cast<int>(number(take(kFd)));
    row.user = take(kUser).value_or("");
    row.db = take(kDatabase).value_or("");
    row.cancel = strtoull(take(kCancel).value_or("0").c_str(), nullptr, 10);
    row.link = static_cast<int>(number(take(kLink)));
    for (size_t i = 0; i < 4; ++i)
        row.vars[i] = take(static_cast<Column>(kClientEncoding + i));
    row.password = take(kPassword);
    row.scram_client_key = take(kScramClientKey);
    row.scram_server_key = take(kScramServerKey);
    row.statements = take(kPreparedStatements);
    row.input = take(kPendingInput);
    row.pool_params = take(kPoolParameters);
    if (row.task == "pooler") {  // PgBouncer's line, as the row comes in
        PeerAddr a = peer_of(row.fd, true);
        std::string where = a.is_unix() ? "unix:" + std::to_string(g_port) : a.host_port();
        log_info("got pooler socket: %s", where.c_str());
    }
    g_rows.push_back(std::move(row));
}

// Runs one console command; the rows of a result are collected. Returns the command tag.
std::string command(const char* sql) {
    std::string q;
    write_query(q, sql);
    send_all(q, sql);
    std::string tag;
    std::vector<uint8_t> body;
    std::vector<int> fds;
    for (;;) {
        uint8_t t = next_message(body, fds, sql);
        if (t != msg::kDataRow && !fds.empty())
            die("takeover: %zu file descriptors came without a row", fds.size());
        switch (t) {
        case msg::kRowDescription:
            parse_row_description(body);
            break;
        case msg::kDataRow:
            parse_row(body, fds);
            break;
        case msg::kCommandComplete:
            tag.assign(reinterpret_cast<const char*>(body.data()),
                       strnlen(reinterpret_cast<const char*>(body.data()), body.size()));
            break;
        case msg::kReadyForQuery:
            return tag;
        case msg::kErrorResponse:
            old_process_error(body);
        default:  // notices, parameter changes
            break;
        }
    }
}

// A SCRAM key as SHOW FDS prints it ("\x" and 64 hex digits).
bool parse_key(const std::optional<std::string>& text, ScramKey& out) {
    if (!text || text->size() != 2 + 2 * out.size() || text->compare(0, 2, "\\x") != 0)
        return false;
    for (size_t i = 0; i < out.size(); ++i) {
        unsigned v;
        if (sscanf(text->c_str() + 2 + 2 * i, "%2x", &v) != 1)
            return false;
        out[i] = static_cast<uint8_t>(v);
    }
    return true;
}

// What the row says about credentials: an auth_query user's secret (the pool's servers log
// in with it) and SCRAM keys recovered from a client's proof.
void apply_credentials(const FdRow& row, Pool& p) {
    User& u = *p.user;
    ScramKey ck, sk;
    if (!u.have_scram_keys && parse_key(row.scram_client_key, ck) &&
        parse_key(row.scram_server_key, sk)) {
        u.scram_client_key = ck;
        u.scram_server_key = sk;
        u.have_scram_keys = true;
    }
    if (!row.password || row.password->empty() || !p.db->entry.user.empty() ||
        (u.have_secret && find_user(u.name) == &u))
        return;
    User& slot = user_in(p.db->auth_query_users, u.name);
    slot.secret = *row.password;
    slot.have_secret = true;
    p.auth_cred = &slot;
}

// The pool of a row, or nullptr (logged; the socket is closed) when this configuration has
// no such database.
Pool* row_pool(const FdRow& row) {
    Database* db = row.db.empty() ? nullptr : find_database(row.db);
    if (!db || db->admin || row.user.empty()) {
        log_warning("takeover: %s connection of user \"%s\" to database \"%s\" dropped: no such "
                    "database in this configuration",
                    row.task.c_str(), row.user.c_str(), row.db.c_str());
        close(row.fd);
        return nullptr;
    }
    Pool* p = client_pool(db, *get_user(row.user));
    apply_credentials(row, *p);
    return p;
}

void set_vars(VarCache& vars, const FdRow& row) {
    for (size_t i = 0; i < 4; ++i) {
        int vi = var_index(kRowVars[i]);
        if (vi >= 0 && row.vars[i])
            vars.set(static_cast<size_t>(vi), *row.vars[i]);
    }
}

Client* adopt_client(const FdRow& row) {
    // PgBouncer lists clients that are still logging in too (a password not yet checked),
    // with no way to tell them apart but this: a client that got its welcome has the
    // server's parameters. One without is closed, never let in unauthenticated.
    auto unset = [](const std::optional<std::string>& v) { return !v || v->empty(); };
    if (unset(row.vars[0]) && unset(row.vars[2]) && unset(row.vars[3])) {
        log_warning("takeover: a client of user \"%s\" to database \"%s\" was still logging "
                    "in: closed",
                    row.user.c_str(), row.db.c_str());
        close(row.fd);
        return nullptr;
    }
    Pool* p = row_pool(row);
    if (!p)
        return nullptr;
    auto* c = new Client();
    c->id = rt().next_id++;
    c->addr = ClientAddr::from(peer_of(row.fd, false));
    if (c->addr.family == 0)
        c->addr.family = AF_UNIX;  // a unix socket peer has no name
    if (c->addr.is_unix()) {
        ucred cred{};
        socklen_t len = sizeof(cred);
        if (getsockopt(row.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
            c->peer_is_self = cred.uid == geteuid();
            c->peer_pid = cred.pid;
            c->have_peer_uid = true;
            c->peer_uid = cred.uid;
        }
    }
    c->connect_time = c->request_time = mono_now();
    c->login.reset();  // logged in long ago
    c->auth = AuthStep::Done;
    c->db = p->db;
    c->user = get_user(row.user);
    c->pool = p;
    set_vars(c->vars, row);
    if (row.statements && !ps_import(*row.statements, c->ps))
        slog_warning(c, "takeover: its prepared statements could not be read");
    rt().client_count++;
    c->counted = true;
    c->db->client_count++;
    c->user->client_count++;
    if (!register_cancel_key_as(*c, static_cast<uint32_t>(row.cancel >> 32),
                                static_cast<uint32_t>(row.cancel)))
        register_cancel_key(*c);  // (not expected: the old process kept them unique)
    set_state(*c, ClientState::Active);
    if (!c->sb.attach(row.fd, c, false)) {
        c->close("takeover: cannot watch the socket");
        return nullptr;
    }
    c->sb.set_startup(false);
    c->sb.set_max_packet(settings().max_packet_size);
    c->sb.set_hold_limit(settings().max_packet_size);
    c->sb.set_loop_count(settings().sbuf_loopcnt);
    c->sb.set_trim_output(true);
    std::string held;
    if (row.input && !row.input->empty()) {
        if (decode_hex(*row.input, held))  // its request comes first, then the socket's
            c->sb.preload_input({reinterpret_cast<const uint8_t*>(held.data()), held.size()});
        else
            slog_warning(c, "takeover: its pending request could not be read");
    }
    if (settings().log_connections)  // as PgBouncer, which logs one for each client it takes
        slog_info(c, "login attempt: db=%s user=%s tls=no replication=no", c->db->name.c_str(),
                  c->user->name.c_str());
    return c;
}

Server* adopt_server(const FdRow& row) {
    Pool* p = row_pool(row);
    if (!p)
        return nullptr;
    auto* s = new Server();
    s->pool = p;
    s->id = rt().next_id++;
    s->addr = peer_of(row.fd, false);
    s->local = peer_of(row.fd, true);
    s->backend_pid = static_cast<uint32_t>(row.cancel >> 32);
    s->backend_key = static_cast<uint32_t>(row.cancel);
    set_vars(s->vars, row);
    s->connect_time = s->request_time = s->idle_since = mono_now();
    set_state(*s, ServerState::Idle);
    p->db->server_count++;
    p->user->server_count++;
    if (!s->sb.attach(row.fd, s, false)) {
        s->close("takeover: cannot watch the socket");
        return nullptr;
    }
    s->configure_sbuf();
    if (row.pool_params && !p->have_params && !pool_params_import(*row.pool_params, *p))
        slog_warning(s, "takeover: its pool's parameters could not be read");
    return s;
}

// The S- prefix PgBouncer's log lines give the console connection to the old process.
std::string console_prefix() {
    char buf[96];
    snprintf(buf, sizeof(buf), "S-%p: pgbouncer/pgbouncer@unix:%d", static_cast<void*>(&g_sock),
             g_port);
    return buf;
}

}  // namespace

std::string pool_params_export(const Pool& p) {
    std::string raw;
    if (!p.have_params)
        return raw;
    for (const auto& [name, value] : p.params) {
        raw.append(name).push_back('\0');
        raw.append(value).push_back('\0');
    }
    std::string text;
    append_hex(text, raw);
    return text;
}

bool pool_params_import(std::string_view text, Pool& p) {
    std::string raw;
    if (!decode_hex(text, raw) || raw.empty() || raw.back() != '\0')
        return false;
    std::vector<std::pair<std::string, std::string>> params;
    std::string_view rest = raw;
    while (!rest.empty()) {
        size_t name_end = rest.find('\0');
        size_t value_end = rest.find('\0', name_end + 1);
        if (name_end == 0 || value_end == std::string_view::npos)
            return false;
        params.emplace_back(rest.substr(0, name_end),
                            rest.substr(name_end + 1, value_end - name_end - 1));
        rest.remove_prefix(value_end + 1);
    }
    p.params = std::move(params);
    p.have_params = true;
    return true;
}

bool takeover_connect(const Settings& st) {
    g_sock = connect_unix_socket(st.unix_socket_dir, st.listen_port);
    if (g_sock < 0) {
        log_info("old process not found, try to continue normally");  // PgBouncer's words
        return false;
    }
    g_port = st.listen_port;
    // SUSPEND waits for buffers to drain, up to suspend_timeout in the old process.
    g_timeout_ms =
        static_cast<int>(std::max<usec_t>(30 * 1000000LL, 3 * st.suspend_timeout) / 1000);
    return true;
}

void takeover_fetch() {
    log_info("takeover_init: launching connection");
    log_info("%s new connection to server", console_prefix().c_str());
    std::string startup;
    PacketWriter w(startup);
    w.begin_untyped();
    w.put_u32(kProtocol30);
    w.put_cstr("user");
    w.put_cstr("pgbouncer");
    w.put_cstr("database");
    w.put_cstr("pgbouncer");
    w.put_cstr("application_name");
    w.put_cstr(kTakeoverAppName);
    w.put_u8(0);
    w.finish();
    send_all(startup, "the startup packet");
    std::vector<uint8_t> body;
    std::vector<int> fds;
    for (bool ready = false; !ready;) {
        uint8_t t = next_message(body, fds, "login");
        if (!fds.empty())
            die("takeover: %zu file descriptors came without a row", fds.size());
        switch (t) {
        case msg::kAuth: {
            uint32_t code = body.size() >= 4 ? read_be32(body.data()) : 1;
            if (code != 0)
                die("takeover: the old process asks for a password: -R logs in as user "
                    "\"pgbouncer\" over the unix socket, which needs the same OS user");
            break;
        }
        case msg::kErrorResponse:
            old_process_error(body);
        case msg::kReadyForQuery:
            ready = true;
            break;
        default:  // ParameterStatus, BackendKeyData, notices
            break;
        }
    }
    log_info("%s login OK, sending SUSPEND", console_prefix().c_str());
    std::string tag = command("SUSPEND;");
    if (tag != "SUSPEND")
        die("got bad CMD from old bouncer: %s", tag.c_str());
    log_info("SUSPEND finished, sending SHOW FDS");
    tag = command("SHOW FDS;");
    if (tag.compare(0, 4, "SHOW") != 0)
        die("got bad CMD from old bouncer: %s", tag.c_str());
    if (!g_fds.empty())
        die("takeover: %zu file descriptors came without a row", g_fds.size());
    log_info("SHOW FDS finished");
    log_info("disko over, going background");  // PgBouncer's words
}

void takeover_adopt(const ListenConfig& lc, AcceptFn accept) {
    // The old process's statements on the servers are unknown here (they are prepared
    // again when used); names counted from the clock cannot be among them: the old process
    // would have had to make more than one per microsecond since it started.
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    ps_names_start_at(static_cast<uint64_t>(now.tv_sec) * 1000000 +
                      static_cast<uint64_t>(now.tv_nsec / 1000));
    std::vector<int> listeners;
    std::unordered_map<int, std::pair<Server*, int>> servers;  // by old fd: server, its link
    std::vector<std::pair<Client*, int>> linked;
    size_t clients = 0;
    for (const FdRow& row : g_rows) {
        if (row.task == "pooler") {
            listeners.push_back(row.fd);
        } else if (row.task == "client") {
            Client* c = adopt_client(row);
            if (c)
                ++clients;
            if (c && row.link != 0)
                linked.emplace_back(c, row.link);
        } else if (row.task == "server") {
            if (Server* s = adopt_server(row))
                servers[row.old_fd] = {s, row.link};
        } else {
            die("unknown task: %s", row.task.c_str());  // PgBouncer's words
        }
    }
    std::string err;
    if (listeners.empty())
        die("takeover: the old process handed over no listening socket");
    if (!listeners_take_over(listeners, lc, accept, err))
        die("%s", err.c_str());
    for (auto [c, old_fd] : linked) {
        auto it = servers.find(old_fd);
        if (it == servers.end() || it->second.first->client) {
            c->fatal("08P01", "server conn crashed?");  // its session did not come along
            continue;
        }
        Server& s = *it->second.first;
        set_state(s, ServerState::Active);
        link(*c, s);
    }
    // A server whose client did not come along is in the middle of that client's session.
    size_t server_count = 0;
    for (auto& [fd, entry] : servers) {
        auto [s, link_fd] = entry;
        if (link_fd != 0 && !s->client)
            s->close("client disconnect while server was not ready");
        else
            ++server_count;
    }
    log_info("takeover: %zu listening sockets, %zu clients, %zu servers", listeners.size(), clients,
             server_count);
    g_rows.clear();
}

void takeover_finish(const std::string& pidfile) {
    log_info("sending SHUTDOWN;");
    std::string q;
    write_query(q, "SHUTDOWN;");
    send_all(q, "SHUTDOWN;");
    while (receive("SHUTDOWN;"))
        g_in.clear();  // nothing is expected before EOF
    close(g_sock);
    g_sock = -1;
    log_info("%s closing because: disko over (age=0s)", console_prefix().c_str());
    for (const ReceivedFd& r : g_fds)
        close(r.fd);
    g_fds.clear();
    if (!pidfile.empty()) {
        log_info("waiting for old pidfile to go away");
        // The old process removes it before its sockets close, so this is normally at once;
        // a pidfile left by a process that died meanwhile does not hold the restart up.
        for (int i = 0;; ++i) {
            struct stat st;
            if (stat(pidfile.c_str(), &st) != 0 && errno == ENOENT)
                break;
            if (i >= 50) {
                log_warning("old pidfile '%s' still there; removing it", pidfile.c_str());
                ::unlink(pidfile.c_str());
                break;
            }
            usleep(100000);
        }
    }
    log_info("old process killed, resuming work");
}

}  // namespace sluice
