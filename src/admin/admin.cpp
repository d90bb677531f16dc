// Admin console: access control, welcome, PgBouncer's command grammar, the process commands
// (PAUSE, RESUME, KILL, SET, RELOAD, SHUTDOWN ...) and the timer that answers waiting ones.
#include "sluice/admin/admin.h"

#include <charconv>
#include <cstdarg>
#include <cstdio>
#include <vector>

#include <event2/event.h>

#include "sluice/net/loop.h"
#include "sluice/pool/control.h"
#include "sluice/util/quoted.h"
#include "sluice/util/systemd.h"

#include "internal.h"

namespace sluice {
namespace admin {
namespace {
const Client* g_current = nullptr;  // the session whose query is being handled
}  // namespace

// ---- result sets and replies ----

ResultWriter::ResultWriter(std::string& out, std::span<const ColDef> cols)
    : out_(out), ncols_(cols.size()) {
    PacketWriter w(out_);
    w.begin(msg::kRowDescription);
    w.put_u16(static_cast<uint16_t>(cols.size()));
    for (const ColDef& col : cols) {
        w.put_cstr(col.name);
        w.put_u32(0);  // table OID
        w.put_u16(0);  // column number
        w.put_u32(static_cast<uint32_t>(col.type));
        int16_t size = -1;
        if (col.type == Col::Int4)
            size = 4;
        else if (col.type == Col::Int8)
            size = 8;
        w.put_u16(static_cast<uint16_t>(size));
        w.put_i32(-1);  // type modifier
        w.put_u16(0);   // text format
    }
    w.finish();
}

void ResultWriter::begin_row() {
    row_start_ = out_.size();
    fields_ = 0;
    PacketWriter w(out_);
    w.begin(msg::kDataRow);
    w.put_u16(static_cast<uint16_t>(ncols_));
}

void ResultWriter::text(std::string_view v) {
    PacketWriter w(out_);
    w.put_u32(static_cast<uint32_t>(v.size()));
    w.put_bytes(v);
    ++fields_;
}

void ResultWriter::text_or_null(const char* v) {
    if (v)
        text(v);
    else
        null();
}

void ResultWriter::null() {
    PacketWriter w(out_);
    w.put_i32(-1);
    ++fields_;
}

void ResultWriter::integer(int64_t v) {
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(v));
    text(std::string_view(buf, static_cast<size_t>(n)));
}

void ResultWriter::unsigned_integer(uint64_t v) {
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%llu", static_cast<unsigned long long>(v));
    text(std::string_view(buf, static_cast<size_t>(n)));
}

void ResultWriter::end_row() {
    SLUICE_ASSERT(fields_ == ncols_);
    // Patch the DataRow length (begin_row() wrote a placeholder after the type byte).
    auto len = static_cast<uint32_t>(out_.size() - row_start_ - 1);
    for (int i = 0; i < 4; ++i)
        out_[row_start_ + 1 + static_cast<size_t>(i)] =
            static_cast<char>((len >> (24 - 8 * i)) & 0xff);
}

void write_admin_error(std::string& out, const char* sqlstate, const char* fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_error("%s", msg);
    if (g_current && settings().log_pooler_errors)
        slog_warning(g_current, "pooler error: %s", msg);
    write_error(out, "ERROR", sqlstate, msg);
}

void write_complete(std::string& out, std::string_view tag) {
    PacketWriter w(out);
    w.begin(msg::kCommandComplete);
    w.put_cstr(tag);
    w.finish();
}

namespace {

AdminProcess g_proc;

// ---- the grammar: PgBouncer's three regexes (src/admin.c), by hand ----
//   WORD [WORD] [;]                  (WORD = [0-9a-z_]+ or "quoted" with "" for ")
//   SET WORD (=|TO) WORD [;]
//   SET WORD (=|TO) 'string' [;]     ('' for ')

struct Command {
    bool is_set = false;
    std::string cmd;  // or the SET key
    std::string arg;  // or the SET value
};

enum class ParseResult : uint8_t {
    Ok,
    Syntax,   // "invalid command '...', use SHOW HELP;"
    TooLong,  // "bad arguments" (PgBouncer's fixed buffers: cmd 16, arg/key 64, value 256)
};

class Lexer {
public:
    explicit Lexer(std::string_view s) : s_(s) {}

    bool ws() {  // WS0; true if it consumed anything
        size_t start = i_;
        while (i_ < s_.size() &&
               (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
            ++i_;
        return i_ > start;
    }
    // WORD: raw matched length in `raw`, unquoted text in `out`.
    bool word(std::string& out, size_t& raw) {
        size_t start = i_;
        out.clear();
        if (i_ < s_.size() && s_[i_] == '"') {
            if (!read_quoted(s_, i_, out))
                return fail(start);
        } else {
            while (i_ < s_.size() && word_char(s_[i_]))
                out.push_back(s_[i_++]);
            if (out.empty())
                return false;
        }
        raw = i_ - start;
        return true;
    }
    // STRING: '...' with '' for '.
    bool string(std::string& out, size_t& raw) {
        size_t start = i_;
        out.clear();
        if (i_ >= s_.size() || s_[i_] != '\'')
            return false;
        if (!read_quoted(s_, i_, out, '\''))
            return fail(start);
        raw = i_ - start;
        return true;
    }
    bool keyword(std::string_view kw) {
        if (s_.size() - i_ < kw.size() || !iequals(s_.substr(i_, kw.size()), kw))
            return false;
        i_ += kw.size();
        return true;
    }
    // [;] WS0 end
    bool end() {
        ws();
        if (i_ < s_.size() && s_[i_] == ';') {
            ++i_;
            ws();
        }
        return i_ == s_.size();
    }
    size_t pos() const { return i_; }
    void reset(size_t p) { i_ = p; }

private:
    static bool word_char(char ch) {
        return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
               ch == '_';
    }
    bool fail(size_t start) {
        i_ = start;
        return false;
    }

    std::string_view s_;
    size_t i_ = 0;
};

ParseResult parse_set(std::string_view q, Command& out) {
    Lexer lx(q);
    lx.ws();
    if (!lx.keyword("set") || !lx.ws())
        return ParseResult::Syntax;
    size_t raw_key = 0;
    size_t raw_val = 0;
    if (!lx.word(out.cmd, raw_key))
        return ParseResult::Syntax;
    lx.ws();
    if (!lx.keyword("=") && !lx.keyword("to"))
        return ParseResult::Syntax;
    lx.ws();
    size_t at = lx.pos();
    bool ok = lx.string(out.arg, raw_val) && lx.end();
    if (!ok) {
        lx.reset(at);
        ok = lx.word(out.arg, raw_val) && lx.end();
    }
    if (!ok)
        return ParseResult::Syntax;
    if (raw_key >= 64 || out.cmd.empty() || raw_val >= 256)
        return ParseResult::TooLong;
    out.is_set = true;
    return ParseResult::Ok;
}

ParseResult parse_command(std::string_view q, Command& out) {
    Lexer lx(q);
    lx.ws();
    size_t raw_cmd = 0;
    size_t raw_arg = 0;
    if (lx.word(out.cmd, raw_cmd)) {
        size_t after_cmd = lx.pos();
        if (lx.ws() && lx.word(out.arg, raw_arg) && lx.end()) {
            if (raw_cmd >= 16 || raw_arg >= 64)
                return ParseResult::TooLong;
            return ParseResult::Ok;
        }
        lx.reset(after_cmd);
        out.arg.clear();
        if (lx.end())
            return raw_cmd >= 16 ? ParseResult::TooLong : ParseResult::Ok;
    }
    return parse_set(q, out);
}

// ---- commands waiting for the pools (answered by the timer) ----

enum class WaitKind : uint8_t {
    None,
    NoReply,  // SHUTDOWN: the connection stays open until the process exits
    Pause,
    Suspend,
    WaitClose,
};

struct Waiter {
    Client* client;
    uint64_t id;  // guards against a freed client whose address was reused
    WaitKind kind;
    const Database* db;  // nullptr = every database
};

std::vector<Waiter> g_waiters;
event* g_timer = nullptr;

bool waiter_done(const Waiter& w) {
    switch (w.kind) {
    case WaitKind::Pause:
        if (w.db ? !w.db->paused : pause_mode() != PauseMode::Pause)
            return true;  // RESUME came first: nothing left to wait for
        return control_busy_servers(w.db) == 0;
    case WaitKind::Suspend:
        return pause_mode() != PauseMode::Suspend || control_suspend_done();
    case WaitKind::WaitClose:
        return control_close_needed_servers(w.db) == 0;
    case WaitKind::None:
    case WaitKind::NoReply:
        break;
    }
    return true;
}

const char* waiter_tag(WaitKind k) {
    switch (k) {
    case WaitKind::Pause:
        return "PAUSE";
    case WaitKind::Suspend:
        return "SUSPEND";
    case WaitKind::WaitClose:
        return "WAIT_CLOSE";
    case WaitKind::None:
    case WaitKind::NoReply:
        break;
    }
    return "";
}

bool console_client_alive(const Client* target, uint64_t id) {
    bool found = false;
    for (auto& p : rt().pools) {
        if (!p->db->admin)
            continue;
        p->active.for_each([&](Client& c) {
            if (&c == target && c.id == id)
                found = true;
        });
    }
    return found;
}

void check_waiters() {
    for (size_t i = 0; i < g_waiters.size();) {
        Waiter w = g_waiters[i];
        if (!console_client_alive(w.client, w.id)) {
            g_waiters.erase(g_waiters.begin() + static_cast<std::ptrdiff_t>(i));
            continue;
        }
        if (!waiter_done(w)) {
            ++i;
            continue;
        }
        g_waiters.erase(g_waiters.begin() + static_cast<std::ptrdiff_t>(i));
        Client& c = *w.client;
        std::string& out = c.sb.out_for_append();
        write_complete(out, waiter_tag(w.kind));
        write_ready(out, 'I');
        if (c.sb.flush_out())
            c.sb.resume();  // the next console query may be processed now
    }
}

void on_timer(evutil_socket_t, short, void*) noexcept {
    time_update();
    control_tick();
    check_waiters();
    admin_tick_update();
}

// What the tick is for: a command waiting for its answer, or a pause (global, SUSPEND, or of
// a database) that control_tick() keeps applying.
bool tick_needed() noexcept {
    return !g_waiters.empty() || pause_mode() != PauseMode::None ||
           control_paused_db_count() > 0;
}

// ---- the commands ----

struct Outcome {
    WaitKind wait = WaitKind::None;
    const Database* db = nullptr;
};

// A configured (or already created) database, never created here (RESUME, ENABLE). An idle
// auto-database found is in use again, as with find_database().
Database* lookup_database(const std::string& name) {
    auto it = rt().databases.find(name);
    if (it == rt().databases.end() || it->second->dirty)
        return nullptr;
    it->second->put_in_use();
    return it->second.get();
}

void for_each_database(void (*fn)(Database&)) {
    std::vector<Database*> dbs;
    sorted_databases(dbs);
    for (Database* db : dbs)
        if (!db->admin)
            fn(*db);
}

// Process commands and SHOW FDS are for admin_users (and the unix-socket "pgbouncer").
bool require_admin(const Client& c, std::string& out) {
    if (c.admin_full)
        return true;
    write_admin_error(out, "08P01", "admin access needed");
    return false;
}

void syntax_error(std::string& out, std::string_view query) {
    std::string q(query);
    write_admin_error(out, "08P01", "invalid command '%s', use SHOW HELP;", q.c_str());
}

Outcome cmd_pause(Client& c, const std::string& arg, std::string& out) {
    if (!require_admin(c, out))
        return {};
    if (pause_mode() != PauseMode::None) {
        write_admin_error(out, "08P01", "already suspended/paused");
        return {};
    }
    if (arg.empty()) {
        log_info("PAUSE command issued");
        control_pause_all();
        return {WaitKind::Pause, nullptr};
    }
    log_info("PAUSE '%s' command issued", arg.c_str());
    Database* db = find_or_register_database(arg, c);
    if (!db) {
        write_admin_error(out, "08P01", "no such database: %s", arg.c_str());
        return {};
    }
    if (db->admin) {
        write_admin_error(out, "08P01", "cannot pause admin db: %s", arg.c_str());
        return {};
    }
    control_pause_db(*db);
    return {WaitKind::Pause, db};
}

Outcome cmd_resume(Client& c, const std::string& arg, std::string& out) {
    if (!require_admin(c, out))
        return {};
    if (arg.empty()) {
        log_info("RESUME command issued");
        if (rt().shutting_down) {
            write_admin_error(out, "08P01", "pooler is shutting down");
            return {};
        }
        if (!control_resume_all()) {
            write_admin_error(out, "08P01", "pooler is not paused/suspended");
            return {};
        }
    } else {
        log_info("RESUME '%s' command issued", arg.c_str());
        Database* db = lookup_database(arg);
        if (!db) {
            write_admin_error(out, "08P01", "no such database: %s", arg.c_str());
            return {};
        }
        if (!control_resume_db(*db)) {
            write_admin_error(out, "08P01", "database %s is not paused", arg.c_str());
            return {};
        }
    }
    write_complete(out, "RESUME");
    return {};
}

Outcome cmd_suspend(Client& c, const std::string& arg, std::string& out, std::string_view query) {
    if (!arg.empty()) {
        syntax_error(out, query);
        return {};
    }
    if (!require_admin(c, out))
        return {};
    if (pause_mode() != PauseMode::None) {
        write_admin_error(out, "08P01", "already suspended/paused");
        return {};
    }
    if (control_paused_db_count() > 0) {
        write_admin_error(out, "08P01", "cannot suspend with paused databases");
        return {};
    }
    log_info("SUSPEND command issued");
    control_suspend(takeover_carries_queue(c));
    return {WaitKind::Suspend, nullptr};
}

Outcome cmd_kill(Client& c, const std::string& arg, std::string& out) {
    if (!require_admin(c, out))
        return {};
    if (pause_mode() != PauseMode::None) {
        write_admin_error(out, "08P01", "already suspended/paused");
        return {};
    }
    if (arg.empty()) {
        log_info("KILL command issued");
        for_each_database(control_kill_db);
    } else {
        log_info("KILL '%s' command issued", arg.c_str());
        Database* db = find_or_register_database(arg, c);
        if (!db) {
            write_admin_error(out, "08P01", "no such database: %s", arg.c_str());
            return {};
        }
        if (db->admin) {
            write_admin_error(out, "08P01", "cannot kill admin db: %s", arg.c_str());
            return {};
        }
        control_kill_db(*db);
    }
    write_complete(out, "KILL");
    return {};
}

Outcome cmd_kill_client(Client& c, const std::string& arg, std::string& out) {
    if (!require_admin(c, out))
        return {};
    uint64_t id = 0;
    auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), id);
    if (arg.empty() || ec != std::errc() || end != arg.data() + arg.size()) {
        write_admin_error(out, "08P01", "invalid client pointer supplied");
        return {};
    }
    if (!control_kill_client(id)) {
        write_admin_error(out, "08P01", "client not found");
        return {};
    }
    write_complete(out, "KILL_CLIENT");
    return {};
}

Outcome cmd_reconnect(Client& c, const std::string& arg, std::string& out) {
    if (!require_admin(c, out))
        return {};
    if (arg.empty()) {
        log_info("RECONNECT command issued");
        for_each_database(control_reconnect_db);
    } else {
        log_info("RECONNECT '%s' command issued", arg.c_str());
        Database* db = find_or_register_database(arg, c);
        if (!db) {
            write_admin_error(out, "08P01", "no such database: %s", arg.c_str());
            return {};
        }
        if (db->admin) {
            write_admin_error(out, "08P01", "cannot reconnect admin db: %s", arg.c_str());
            return {};
        }
        control_reconnect_db(*db);
    }
    write_complete(out, "RECONNECT");
    return {};
}

Outcome cmd_disable_enable(Client& c, const std::string& arg, std::string& out, bool disable) {
    if (!require_admin(c, out))
        return {};
    if (arg.empty()) {
        write_admin_error(out, "08P01", "a database is required");
        return {};
    }
    const char* verb = disable ? "DISABLE" : "ENABLE";
    log_info("%s '%s' command issued", verb, arg.c_str());
    Database* db = disable ? find_or_register_database(arg, c) : lookup_database(arg);
    if (!db) {
        write_admin_error(out, "08P01", "no such database: %s", arg.c_str());
        return {};
    }
    if (db->admin) {
        write_admin_error(out, "08P01", "cannot %s admin db: %s", disable ? "disable" : "enable",
                          arg.c_str());
        return {};
    }
    db->disabled = disable;
    write_complete(out, verb);
    return {};
}

Outcome cmd_wait_close(Client& c, const std::string& arg, std::string& out) {
    if (!require_admin(c, out))
        return {};
    if (arg.empty()) {
        log_info("WAIT_CLOSE command issued");
        return {WaitKind::WaitClose, nullptr};
    }
    log_info("WAIT_CLOSE '%s' command issued", arg.c_str());
    Database* db = find_or_register_database(arg, c);
    if (!db) {
        write_admin_error(out, "08P01", "no such database: %s", arg.c_str());
        return {};
    }
    if (db->admin) {
        write_admin_error(out, "08P01", "cannot wait in admin db: %s", arg.c_str());
        return {};
    }
    return {WaitKind::WaitClose, db};
}

Outcome cmd_reload(Client& c, const std::string& arg, std::string& out, std::string_view query) {
    if (!arg.empty()) {
        syntax_error(out, query);
        return {};
    }
    if (!require_admin(c, out))
        return {};
    log_info("RELOAD command issued");
    ReloadResult r = g_proc.reload ? g_proc.reload() : ReloadResult::Ok;
    if (r == ReloadResult::Failed)
        log_error("RELOAD Failed, see logs for more details");  // PgBouncer's line, its casing
    if (r != ReloadResult::Ok) {
        write_admin_error(out, "F0000", "RELOAD failed, see logs for additional details");
        return {};
    }
    write_complete(out, "RELOAD");
    return {};
}

Outcome cmd_shutdown(Client& c, const std::string& arg, std::string& out, std::string_view query) {
    enum {
        Immediate,
        WaitServers,
        WaitClients
    } mode = Immediate;
    if (iequals(arg, "wait_for_clients")) {
        mode = WaitClients;
    } else if (iequals(arg, "wait_for_servers")) {
        mode = WaitServers;
    } else if (!arg.empty()) {
        syntax_error(out, query);
        return {};
    }
    if (!require_admin(c, out))
        return {};
    if (mode == Immediate) {
        log_info("SHUTDOWN command issued");
        sd_notify_state("STOPPING=1");
        loop_stop();
        return {WaitKind::NoReply, nullptr};
    }
    if (mode == WaitServers)
        log_info("SHUTDOWN WAIT_FOR_SERVERS command issued");
    else
        log_info("SHUTDOWN WAIT_FOR_CLIENTS command issued");
    if (g_proc.shutdown)
        g_proc.shutdown(mode == WaitClients);
    write_complete(out, "SHUTDOWN");
    return {};
}

Outcome cmd_set(Client& c, const std::string& key, const std::string& value, std::string& out) {
    if (is_fake_param(key)) {
        write_notice(out, "00000", "SET ignored");
        write_complete(out, "SET");
        return {};
    }
    if (!require_admin(c, out))
        return {};
    const SettingInfo* info = find_setting(key);
    std::string err;
    if (!info) {
        log_error("unknown parameter: pgbouncer/%s", key.c_str());  // PgBouncer's words
    } else if (!info->reloadable) {
        // PgBouncer answers as if it worked and changes nothing (scripts written for it
        // expect the tag); the NOTICE and the log line say that nothing changed.
        log_warning("SET %s ignored: it takes effect only at a restart", info->name);
        write_notice(out, "00000",
                     std::string(info->name) + " can only be changed by a restart; SET ignored");
        write_complete(out, "SET " + key + "=" + value);
        return {};
    } else if (!apply_setting(rt().cfg.settings, key, value, err)) {
        log_error("invalid value for parameter %s: %s", info->name, err.c_str());
    } else {
        if (g_proc.settings_changed)
            g_proc.settings_changed();
        write_complete(out, "SET " + key + "=" + value);
        return {};
    }
    write_admin_error(out, "08P01", "SET failed");
    return {};
}

Outcome dispatch(Client& c, const Command& cmd, std::string& out, std::string_view query) {
    if (cmd.is_set)
        return cmd_set(c, cmd.cmd, cmd.arg, out);
    const std::string& w = cmd.cmd;
    const std::string& arg = cmd.arg;
    if (iequals(w, "show") || iequals(w, "select")) {
        if (!run_show(c, arg, out))
            syntax_error(out, query);
        return {};
    }
    if (iequals(w, "pause"))
        return cmd_pause(c, arg, out);
    if (iequals(w, "resume"))
        return cmd_resume(c, arg, out);
    if (iequals(w, "suspend"))
        return cmd_suspend(c, arg, out, query);
    if (iequals(w, "kill"))
        return cmd_kill(c, arg, out);
    if (iequals(w, "kill_client"))
        return cmd_kill_client(c, arg, out);
    if (iequals(w, "reconnect"))
        return cmd_reconnect(c, arg, out);
    if (iequals(w, "disable"))
        return cmd_disable_enable(c, arg, out, true);
    if (iequals(w, "enable"))
        return cmd_disable_enable(c, arg, out, false);
    if (iequals(w, "wait_close"))
        return cmd_wait_close(c, arg, out);
    if (iequals(w, "reload"))
        return cmd_reload(c, arg, out, query);
    if (iequals(w, "shutdown"))
        return cmd_shutdown(c, arg, out, query);
    syntax_error(out, query);
    return {};
}

// ---- hooks called by the client layer ----

bool in_list(const std::string& list, const std::string& name) {
    for (const std::string& x : split_list(list))
        if (x == name)
            return true;
    return false;
}

bool check_access(Client& c) {
    if (c.user_name() == "pgbouncer" && c.peer_is_self) {
        c.admin_full = true;  // (logged at its login attempt: "pgbouncer access from unix socket")
        return true;
    }
    if (in_list(settings().admin_users, c.user_name())) {
        c.admin_full = true;
        return true;
    }
    if (in_list(settings().stats_users, c.user_name())) {
        c.admin_full = false;
        return true;
    }
    // As PgBouncer: with auth_type=any every user may read the console.
    return settings().auth_type == AuthType::Any;
}

void send_welcome(Client& c) {
    std::string& out = c.sb.out_for_append();
    write_auth(out, kAuthOk);
    write_parameter_status(out, "server_version", "1.26.1/bouncer");
    write_parameter_status(out, "client_encoding", "UTF8");
    write_parameter_status(out, "server_encoding", "UTF8");
    write_parameter_status(out, "DateStyle", "ISO");
    write_parameter_status(out, "TimeZone", "GMT");
    write_parameter_status(out, "standard_conforming_strings", "on");
    write_parameter_status(out, "is_superuser", "on");
    write_backend_key(out, c.cancel_pid, c.cancel_key);
    write_ready(out, 'I');
    static_cast<void>(c.sb.flush_out());
}

void handle_query(Client& c, std::string_view sql) {
    std::string query(sql);
    log_debug("got admin query: %s", query.c_str());
    c.request_time = mono_now();
    // PgBouncer counts a console session's first query only, as a query and a transaction of
    // the "pgbouncer" database: its query_start/xact_start are set then and, with no server
    // to answer ReadyForQuery, never cleared. Every release does so.
    if (c.pool && c.xact_start == 0) {
        c.pool->query_count++;
        c.pool->xact_count++;
        c.xact_start = c.request_time;
        c.query_start = c.request_time;  // SHOW CLIENTS wait: time since the first query
    }
    std::string reply;
    Command cmd;
    Outcome o;
    g_current = &c;
    switch (parse_command(sql, cmd)) {
    case ParseResult::Ok:
        o = dispatch(c, cmd, reply, sql);
        break;
    case ParseResult::TooLong:
        write_admin_error(reply, "08P01", "bad arguments");
        break;
    case ParseResult::Syntax:
        syntax_error(reply, sql);
        break;
    }
    g_current = nullptr;
    admin_tick_update();  // a PAUSE, SUSPEND or KILL has just begun (or RESUME ended one)
    if (c.state == ClientState::Closing)
        return;  // KILL_CLIENT of this very session
    if (o.wait == WaitKind::NoReply)
        return;
    if (o.wait != WaitKind::None) {
        Waiter w{&c, c.id, o.wait, o.db};
        if (!waiter_done(w)) {
            // Answered by the timer; queries pipelined behind this one wait their turn.
            g_waiters.push_back(w);
            admin_tick_update();
            c.sb.pause();
            return;
        }
        write_complete(reply, waiter_tag(o.wait));
    }
    std::string& out = c.sb.out_for_append();
    out += reply;
    write_ready(out, 'I');
    static_cast<void>(c.sb.flush_out());
}

void refuse_message(Client& c, uint8_t type) {
    std::string reply;
    g_current = &c;
    if (type == msg::kParse || type == msg::kBind || type == msg::kExecute)
        write_admin_error(reply, "08P01", "extended query protocol not supported by admin console");
    else
        write_admin_error(reply, "08P01", "unsupported packet type for admin console: %d", type);
    g_current = nullptr;
    write_ready(reply, 'I');
    c.sb.queue(reply);
    c.fatal("08P01", "bad packet");
}

}  // namespace
}  // namespace admin

void admin_init(const AdminProcess& proc) {
    admin::g_proc = proc;
    g_admin_hooks.check_access = admin::check_access;
    g_admin_hooks.send_welcome = admin::send_welcome;
    g_admin_hooks.handle_query = admin::handle_query;
    g_admin_hooks.refuse_message = admin::refuse_message;
    admin::g_timer = event_new(rt().base, -1, EV_PERSIST, admin::on_timer, nullptr);
    if (!admin::g_timer)
        die("cannot create the admin console timer");
}

void admin_tick_update() {
    if (!admin::g_timer)
        return;
    bool armed = event_pending(admin::g_timer, EV_TIMEOUT, nullptr) != 0;
    if (admin::tick_needed()) {
        if (!armed && loop_timer_add(admin::g_timer, timeval{0, 100000}) != 0)
            log_error("cannot start the admin console timer");
    } else if (armed) {
        event_del(admin::g_timer);
        loop_timer_forget(admin::g_timer);
    }
}

void admin_stop() {
    admin::g_waiters.clear();
    if (admin::g_timer) {
        loop_timer_forget(admin::g_timer);
        event_free(admin::g_timer);
    }
    admin::g_timer = nullptr;
}

}  // namespace sluice
