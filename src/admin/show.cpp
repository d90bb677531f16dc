// The console's SHOW commands: one result set each, columns named, ordered and typed as
// PgBouncer's (spec 1c), rows in PgBouncer's order (pools by database then user).
#include <fcntl.h>
#include <strings.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "sluice/net/dns.h"
#include "sluice/net/listener.h"
#include "sluice/net/sbuf.h"
#include "sluice/pool/control.h"
#include "sluice/takeover.h"
#include "sluice/util/hex.h"

#include "internal.h"

namespace sluice::admin {
namespace {

using C = Col;

// ---- SHOW CLIENTS / SERVERS / SOCKETS / ACTIVE_SOCKETS ----

constexpr ColDef kSocketCols[] = {
    {"type", C::Text},
    {"user", C::Text},
    {"database", C::Text},
    {"replication", C::Text},
    {"state", C::Text},
    {"addr", C::Text},
    {"port", C::Int4},
    {"local_addr", C::Text},
    {"local_port", C::Int4},
    {"connect_time", C::Text},
    {"request_time", C::Text},
    {"wait", C::Int4},
    {"wait_us", C::Int4},
    {"close_needed", C::Int4},
    {"ptr", C::Text},
    {"link", C::Text},
    {"remote_pid", C::Int4},
    {"tls", C::Text},
    {"application_name", C::Text},
    {"prepared_statements", C::Int4},
    {"id", C::Int8},
    // SHOW SOCKETS / ACTIVE_SOCKETS only
    {"recv_pos", C::Int4},
    {"pkt_pos", C::Int4},
    {"pkt_remain", C::Int4},
    {"send_pos", C::Int4},
    {"send_remain", C::Int4},
    {"pkt_avail", C::Int4},
    {"send_avail", C::Int4},
};
constexpr size_t kSocketStdCols = 21;

std::span<const ColDef> socket_cols(bool debug) {
    return std::span<const ColDef>(kSocketCols)
        .first(debug ? std::size(kSocketCols) : kSocketStdCols);
}

// One connection as SHOW CLIENTS/SERVERS/SOCKETS print it.
struct SocketRow {
    char type;
    std::string_view user;
    std::string_view database;
    const char* state;
    PeerAddr remote;
    int remote_port;
    PeerAddr local;
    int local_port;
    usec_t connect_time;
    usec_t request_time;
    usec_t wait;
    bool close_needed;
    const void* ptr;
    const void* link;
    int remote_pid;
    std::string_view application_name;
    size_t prepared;
    uint64_t id;
    const SBuf* sb;
};

std::string_view app_name(const VarCache& v) {
    int i = var_index("application_name");
    return i < 0 ? std::string_view{} : v.get(static_cast<size_t>(i));
}

std::string addr_text(const PeerAddr& a) {
    if (a.len == 0 && a.ss.ss_family == 0)
        return "";
    return a.is_unix() ? std::string("unix") : a.host();
}

std::string ptr_text(const void* p) {
    if (!p)
        return "";
    char buf[32];
    snprintf(buf, sizeof(buf), "%p", p);
    return buf;
}

SocketRow client_row(const Client& c, const char* state) {
    int listen_port = settings().listen_port;
    PeerAddr local = c.local_addr();
    return SocketRow{
        .type = 'C',
        .user = c.user_name().empty() ? std::string_view("(nouser)") : c.user_name(),
        .database = c.pool ? std::string_view(c.pool->db->name) : std::string_view("(nodb)"),
        .state = state,
        .remote = c.addr.to_peer(),
        .remote_port = c.addr.is_unix() ? listen_port : c.addr.port(),
        .local = local,
        .local_port = local.is_unix() ? listen_port : local.port(),
        .connect_time = c.connect_time,
        .request_time = c.request_time,
        .wait = c.query_start ? mono_now() - c.query_start : 0,
        .close_needed = false,
        .ptr = &c,
        .link = c.server,
        .remote_pid = c.addr.is_unix() ? c.peer_pid : 0,
        .application_name = app_name(c.vars),
        .prepared = c.ps.size(),
        .id = c.id,
        .sb = &c.sb,
    };
}

SocketRow server_row(const Server& s, const char* state) {
    int db_port = s.pool->db->entry.port;
    return SocketRow{
        .type = 'S',
        .user = s.pool->user->name,
        .database = s.pool->db->name,
        .state = state,
        .remote = s.addr,
        .remote_port = s.addr.is_unix() ? db_port : s.addr.port(),
        .local = s.local,
        .local_port = s.local.is_unix() ? db_port : s.local.port(),
        .connect_time = s.connect_time,
        .request_time = s.request_time,
        .wait = 0,
        .close_needed = s.close_needed,
        .ptr = &s,
        .link = s.client,
        .remote_pid = static_cast<int>(s.backend_pid),
        .application_name = app_name(s.vars),
        .prepared = s.ps.size(),
        .id = s.id,
        .sb = &s.sb,
    };
}

void write_socket(ResultWriter& w, const SocketRow& r, bool debug) {
    w.begin_row();
    w.text(std::string_view(&r.type, 1));
    w.text(r.user);
    w.text(r.database);
    w.text("none");
    // PgBouncer prints an active connection without a peer as "idle".
    w.text(!r.link && std::string_view(r.state) == "active" ? "idle" : r.state);
    w.text(addr_text(r.remote));
    w.integer(r.remote_port);
    w.text(addr_text(r.local));
    w.integer(r.local_port);
    w.text(format_time(r.connect_time));
    w.text(format_time(r.request_time));
    w.integer(r.wait / 1000000);
    w.integer(r.wait % 1000000);
    w.integer(r.close_needed ? 1 : 0);
    w.text(ptr_text(r.ptr));
    w.text(ptr_text(r.link));
    w.integer(r.remote_pid);
    char tls[128] = "";
    if (r.sb->is_tls())
        r.sb->tls_describe(tls, sizeof(tls));  // "TLSv1.3/cipher/...", as PgBouncer's column
    w.text(tls);
    w.text(r.application_name);
    w.integer(static_cast<int64_t>(r.prepared));
    w.unsigned_integer(r.id);
    if (debug) {
        // sluice's sbuf walks every received byte at once: nothing is "received but not
        // parsed", so pkt_pos = recv_pos and pkt_avail = 0.
        auto recv = static_cast<int64_t>(r.sb->recv_pos());
        auto pending = static_cast<int64_t>(r.sb->pending_bytes());
        w.integer(recv);
        w.integer(recv);
        w.integer(r.sb->packet_remaining());
        w.integer(recv - pending);
        w.integer(0);
        w.integer(0);
        w.integer(pending);
    }
    w.end_row();
}

bool has_buffered(const SBuf& sb) {
    return sb.pending_bytes() > 0 || sb.has_output() || sb.packet_remaining() > 0;
}

const char* server_state(const Server& s, bool sockets) {
    switch (s.state) {
    case ServerState::Active:
        return sockets ? "sv_active" : "active";
    case ServerState::Idle:
        return sockets ? "sv_idle" : "idle";
    case ServerState::Used:
        if (s.checking)
            return sockets ? "sv_tested" : "tested";
        if (s.waiting_cancel && !sockets)
            return "being_canceled";
        return sockets ? "sv_used" : "used";
    case ServerState::Login:
        return sockets ? "sv_login" : "new";
    case ServerState::Closing:
        break;
    }
    return "closing";
}

void show_clients(std::string& out) {
    ResultWriter w(out, socket_cols(false));
    std::vector<Pool*> pools;
    sorted_pools(pools);
    for (Pool* p : pools) {
        p->active.for_each([&](Client& c) { write_socket(w, client_row(c, "active"), false); });
        p->waiting.for_each([&](Client& c) { write_socket(w, client_row(c, "waiting"), false); });
    }
    write_complete(out, "SHOW");
}

void show_servers(std::string& out) {
    ResultWriter w(out, socket_cols(false));
    std::vector<Pool*> pools;
    sorted_pools(pools);
    auto row = [&](Server& s) { write_socket(w, server_row(s, server_state(s, false)), false); };
    for (Pool* p : pools) {
        p->active_servers.for_each(row);
        p->idle.for_each(row);
        p->used.for_each(row);
        p->login.for_each(row);
    }
    write_complete(out, "SHOW");
}

void show_sockets(std::string& out, bool only_active) {
    ResultWriter w(out, socket_cols(true));
    std::vector<Pool*> pools;
    sorted_pools(pools);
    auto client = [&](Client& c, const char* state) {
        if (!only_active || has_buffered(c.sb))
            write_socket(w, client_row(c, state), true);
    };
    auto server = [&](Server& s) {
        if (!only_active || has_buffered(s.sb))
            write_socket(w, server_row(s, server_state(s, true)), true);
    };
    for (Pool* p : pools) {
        p->active.for_each([&](Client& c) { client(c, "cl_active"); });
        p->waiting.for_each([&](Client& c) { client(c, "cl_waiting"); });
        p->active_servers.for_each(server);
        p->idle.for_each(server);
        p->used.for_each(server);
        p->login.for_each(server);
    }
    rt().login_clients.for_each([&](Client& c) { client(c, "cl_login"); });
    write_complete(out, "SHOW");
}

// ---- SHOW POOLS ----

void show_pools(std::string& out) {
    ResultWriter w(out, {
                            {"database", C::Text},
                            {"user", C::Text},
                            {"cl_active", C::Int4},
                            {"cl_waiting", C::Int4},
                            {"cl_active_cancel_req", C::Int4},
                            {"cl_waiting_cancel_req", C::Int4},
                            {"sv_active", C::Int4},
                            {"sv_active_cancel", C::Int4},
                            {"sv_being_canceled", C::Int4},
                            {"sv_idle", C::Int4},
                            {"sv_used", C::Int4},
                            {"sv_tested", C::Int4},
                            {"sv_login", C::Int4},
                            {"maxwait", C::Int4},
                            {"maxwait_us", C::Int4},
                            {"pool_mode", C::Text},
                            {"load_balance_hosts", C::Text},
                        });
    std::vector<Pool*> pools;
    sorted_pools(pools);
    usec_t now = mono_now();
    size_t i = 0;
    while (i < pools.size()) {
        Pool* p = pools[i];
        if (p->db->admin) {
            // PgBouncer has one console pool (user "pgbouncer"); sluice keys console pools by
            // login name, so they are summed into that one row.
            size_t active = 0;
            for (; i < pools.size() && pools[i]->db->admin; ++i)
                active += pools[i]->active.size();
            w.begin_row();
            w.text(p->db->name);
            w.text("pgbouncer");
            w.integer(static_cast<int64_t>(active));
            for (int k = 0; k < 12; ++k)
                w.integer(0);
            w.text("statement");
            w.null();
            w.end_row();
            continue;
        }
        ++i;
        int tested = 0;
        int being_canceled = 0;
        auto count = [&](Server& s) {
            if (s.checking)
                ++tested;
            else if (s.waiting_cancel)
                ++being_canceled;
        };
        p->used.for_each(count);  // checks and cancel waits are sub-states of Used
        // As PgBouncer: the first queued client's query_start, so 0 when it only waits for
        // the pool's first login (wait_for_welcome).
        Client* first = p->waiting.front();
        usec_t maxwait = first && first->query_start ? now - first->query_start : 0;
        const DatabaseEntry& e = p->db->entry;
        bool multi_host = e.host.find(',') != std::string::npos;
        w.begin_row();
        w.text(p->db->name);
        w.text(p->user->name);
        w.integer(static_cast<int64_t>(p->active.size()));
        w.integer(static_cast<int64_t>(p->waiting.size()));
        w.integer(0);
        w.integer(0);
        w.integer(static_cast<int64_t>(p->active_servers.size()));
        w.integer(0);
        w.integer(being_canceled);
        w.integer(static_cast<int64_t>(p->idle.size()));
        w.integer(static_cast<int64_t>(p->used.size()) - tested - being_canceled);
        w.integer(tested);
        w.integer(static_cast<int64_t>(p->login.size()));
        w.integer(maxwait / 1000000);
        w.integer(maxwait % 1000000);
        w.text(pool_mode_name(p->mode()));
        if (multi_host)
            w.text(e.load_balance_hosts.empty() ? "round-robin" : e.load_balance_hosts);
        else
            w.null();
        w.end_row();
    }
    write_complete(out, "SHOW");
}

// ---- SHOW STATS / STATS_TOTALS / STATS_AVERAGES / TOTALS ----

struct DbStats {
    const Database* db;
    PoolStats cur;
    PoolStats old;
};

void stats_by_database(std::vector<DbStats>& out) {
    std::vector<Pool*> pools;
    sorted_pools(pools);
    for (Pool* p : pools) {
        if (out.empty() || out.back().db != p->db)
            out.push_back(DbStats{p->db, {}, {}});
        out.back().cur += pool_stats_now(*p);
        out.back().old += p->stats_older;
    }
}

void put_stats(ResultWriter& w, const PoolStats& s, bool login) {
    w.unsigned_integer(s.server_assignment_count);
    w.unsigned_integer(s.xact_count);
    w.unsigned_integer(s.query_count);
    w.unsigned_integer(s.client_bytes);
    w.unsigned_integer(s.server_bytes);
    w.unsigned_integer(s.xact_time);
    w.unsigned_integer(s.query_time);
    w.unsigned_integer(s.wait_time);
    w.unsigned_integer(s.client_parse_count);
    w.unsigned_integer(s.server_parse_count);
    w.unsigned_integer(s.bind_count);
    if (login)
        w.unsigned_integer(s.client_login_count);
}

void show_stats(std::string& out) {
    ResultWriter w(out, {
                            {"database", C::Text},
                            {"total_server_assignment_count", C::Numeric},
                            {"total_xact_count", C::Numeric},
                            {"total_query_count", C::Numeric},
                            {"total_received", C::Numeric},
                            {"total_sent", C::Numeric},
                            {"total_xact_time", C::Numeric},
                            {"total_query_time", C::Numeric},
                            {"total_wait_time", C::Numeric},
                            {"total_client_parse_count", C::Numeric},
                            {"total_server_parse_count", C::Numeric},
                            {"total_bind_count", C::Numeric},
                            {"total_client_login_count", C::Numeric},
                            {"avg_server_assignment_count", C::Numeric},
                            {"avg_xact_count", C::Numeric},
                            {"avg_query_count", C::Numeric},
                            {"avg_recv", C::Numeric},
                            {"avg_sent", C::Numeric},
                            {"avg_xact_time", C::Numeric},
                            {"avg_query_time", C::Numeric},
                            {"avg_wait_time", C::Numeric},
                            {"avg_client_parse_count", C::Numeric},
                            {"avg_server_parse_count", C::Numeric},
                            {"avg_bind_count", C::Numeric},
                            {"avg_client_login_count", C::Numeric},
                        });
    std::vector<DbStats> dbs;
    stats_by_database(dbs);
    for (const DbStats& d : dbs) {
        w.begin_row();
        w.text(d.db->name);
        put_stats(w, d.cur, true);
        put_stats(w, stats_average(d.cur, d.old), true);
        w.end_row();
    }
    write_complete(out, "SHOW");
}

void show_stats_totals(std::string& out) {
    ResultWriter w(out, {
                            {"database", C::Text},
                            {"server_assignment_count", C::Numeric},
                            {"xact_count", C::Numeric},
                            {"query_count", C::Numeric},
                            {"bytes_received", C::Numeric},
                            {"bytes_sent", C::Numeric},
                            {"xact_time", C::Numeric},
                            {"query_time", C::Numeric},
                            {"wait_time", C::Numeric},
                            {"client_parse_count", C::Numeric},
                            {"server_parse_count", C::Numeric},
                            {"bind_count", C::Numeric},
                            {"client_login_count", C::Numeric},
                        });
    std::vector<DbStats> dbs;
    stats_by_database(dbs);
    for (const DbStats& d : dbs) {
        w.begin_row();
        w.text(d.db->name);
        put_stats(w, d.cur, true);
        w.end_row();
    }
    write_complete(out, "SHOW");
}

void show_stats_averages(std::string& out) {
    // The avg_ prefix on the last three columns is PgBouncer's own inconsistency.
    ResultWriter w(out, {
                            {"database", C::Text},
                            {"server_assignment_count", C::Numeric},
                            {"xact_count", C::Numeric},
                            {"query_count", C::Numeric},
                            {"bytes_received", C::Numeric},
                            {"bytes_sent", C::Numeric},
                            {"xact_time", C::Numeric},
                            {"query_time", C::Numeric},
                            {"wait_time", C::Numeric},
                            {"avg_client_parse_count", C::Numeric},
                            {"avg_server_parse_count", C::Numeric},
                            {"avg_bind_count", C::Numeric},
                        });
    std::vector<DbStats> dbs;
    stats_by_database(dbs);
    for (const DbStats& d : dbs) {
        w.begin_row();
        w.text(d.db->name);
        put_stats(w, stats_average(d.cur, d.old), false);
        w.end_row();
    }
    write_complete(out, "SHOW");
}

void show_totals(std::string& out) {
    ResultWriter w(out, {{"name", C::Text}, {"value", C::Numeric}});
    PoolStats cur;
    PoolStats old;
    for (auto& p : rt().pools) {
        cur += pool_stats_now(*p);
        old += p->stats_older;
    }
    PoolStats avg = stats_average(cur, old);
    static constexpr const char* kNames[] = {
        "server_assignment_count",
        "xact_count",
        "query_count",
        "client_bytes",
        "server_bytes",
        "xact_time",
        "query_time",
        "wait_time",
        "ps_client_parse_count",
        "ps_server_parse_count",
        "ps_bind_count",
        "client_login_count",
    };
    for (int pass = 0; pass < 2; ++pass) {
        const PoolStats& s = pass == 0 ? cur : avg;
        const uint64_t values[] = {
            s.server_assignment_count,
            s.xact_count,
            s.query_count,
            s.client_bytes,
            s.server_bytes,
            s.xact_time,
            s.query_time,
            s.wait_time,
            s.client_parse_count,
            s.server_parse_count,
            s.bind_count,
            s.client_login_count,
        };
        for (size_t i = 0; i < std::size(kNames); ++i) {
            w.begin_row();
            w.text(std::string(pass == 0 ? "total_" : "avg_") + kNames[i]);
            w.unsigned_integer(values[i]);
            w.end_row();
        }
    }
    write_complete(out, "SHOW");
}

// ---- SHOW DATABASES / USERS / PEERS / PEER_POOLS / LISTS / MEM / DNS_* / STATE ----

int effective(int own, int global) {
    return own > 0 ? own : global;
}

void show_databases(std::string& out) {
    ResultWriter w(out, {
                            {"name", C::Text},
                            {"host", C::Text},
                            {"port", C::Int4},
                            {"database", C::Text},
                            {"force_user", C::Text},
                            {"pool_size", C::Int4},
                            {"min_pool_size", C::Int4},
                            {"reserve_pool_size", C::Int4},
                            {"server_lifetime", C::Int4},
                            {"pool_mode", C::Text},
                            {"load_balance_hosts", C::Text},
                            {"max_connections", C::Int4},
                            {"current_connections", C::Int4},
                            {"max_client_connections", C::Int4},
                            {"current_client_connections", C::Int4},
                            {"paused", C::Int4},
                            {"disabled", C::Int4},
                        });
    const Settings& st = settings();
    std::vector<Database*> dbs;
    sorted_databases(dbs);
    for (Database* db : dbs) {
        if (db->idle())
            continue;  // PgBouncer lists its database_list only, not the idle auto-databases
        const DatabaseEntry& e = db->entry;
        w.begin_row();
        w.text(db->name);
        if (db->admin) {
            // The console's fake database, as PgBouncer's admin_setup() defines it.
            w.null();
            w.integer(st.listen_port);
            w.text("pgbouncer");
            w.text("pgbouncer");
            w.integer(2);
            w.integer(0);
            w.integer(0);
            w.integer(st.server_lifetime / 1000000);
            w.text("statement");
            w.null();
        } else {
            if (e.host.empty())
                w.null();
            else
                w.text(e.host);
            w.integer(e.port);
            w.text(db->target_dbname());
            if (e.user.empty())
                w.null();
            else
                w.text(e.user);
            w.integer(e.pool_size >= 0 ? e.pool_size : st.default_pool_size);
            w.integer(e.min_pool_size >= 0 ? e.min_pool_size : st.min_pool_size);
            w.integer(e.reserve_pool_size >= 0 ? e.reserve_pool_size : st.reserve_pool_size);
            w.integer(e.server_lifetime > 0 ? e.server_lifetime : st.server_lifetime / 1000000);
            w.text_or_null(e.pool_mode ? pool_mode_name(*e.pool_mode) : nullptr);
            if (e.host.find(',') != std::string::npos)
                w.text(e.load_balance_hosts.empty() ? "round-robin" : e.load_balance_hosts);
            else
                w.null();
        }
        w.integer(effective(e.max_db_connections, st.max_db_connections));
        w.integer(db->server_count);
        w.integer(effective(e.max_db_client_connections, st.max_db_client_connections));
        w.integer(db->client_count);
        w.integer(control_db_paused(*db) ? 1 : 0);
        w.integer(db->disabled ? 1 : 0);
        w.end_row();
    }
    write_complete(out, "SHOW");
}

void show_users(std::string& out) {
    ResultWriter w(out, {
                            {"name", C::Text},
                            {"pool_size", C::Text},
                            {"reserve_pool_size", C::Text},
                            {"pool_mode", C::Text},
                            {"max_user_connections", C::Int4},
                            {"current_connections", C::Int4},
                            {"max_user_client_connections", C::Int4},
                            {"current_client_connections", C::Int4},
                        });
    const Settings& st = settings();
    // PgBouncer always has the console's "pgbouncer" user: a row of defaults (nullptr here)
    // unless auth_file names it.
    std::vector<std::pair<std::string_view, const User*>> users;
    for (const auto& [name, u] : rt().users)
        users.emplace_back(name, u.get());
    if (rt().users.find("pgbouncer") == rt().users.end())
        users.emplace_back("pgbouncer", nullptr);
    std::sort(users.begin(), users.end());
    for (const auto& [name, u] : users) {
        const UserEntry* e = u ? u->entry : nullptr;
        char pool_size[16] = "";
        char reserve[16] = "";
        // "%9d" as PgBouncer writes these two text columns (padded to nine characters).
        if (e && e->pool_size >= 0)
            snprintf(pool_size, sizeof(pool_size), "%9d", e->pool_size);
        if (e && e->reserve_pool_size >= 0)
            snprintf(reserve, sizeof(reserve), "%9d", e->reserve_pool_size);
        w.begin_row();
        w.text(name);
        w.text(pool_size);
        w.text(reserve);
        w.text_or_null(e && e->pool_mode ? pool_mode_name(*e->pool_mode) : nullptr);
        w.integer(effective(e ? e->max_user_connections : -1, st.max_user_connections));
        w.integer(u ? u->server_count : 0);
        w.integer(
            effective(e ? e->max_user_client_connections : -1, st.max_user_client_connections));
        w.integer(u ? u->client_count : 0);
        w.end_row();
    }
    write_complete(out, "SHOW");
}

void show_peers(std::string& out) {
    ResultWriter w(
        out, {{"peer_id", C::Int4}, {"host", C::Text}, {"port", C::Int4}, {"pool_size", C::Int4}});
    std::vector<const PeerEntry*> peers;
    for (const PeerEntry& p : rt().cfg.peers)
        peers.push_back(&p);
    std::sort(peers.begin(), peers.end(),
              [](const PeerEntry* a, const PeerEntry* b) { return a->peer_id < b->peer_id; });
    for (const PeerEntry* p : peers) {
        w.begin_row();
        w.integer(p->peer_id);
        w.text(p->host);
        w.integer(p->port);
        w.integer(p->pool_size >= 0 ? p->pool_size : settings().default_pool_size);
        w.end_row();
    }
    write_complete(out, "SHOW");
}

void show_peer_pools(std::string& out) {
    // Cancel requests are forwarded without per-peer pools: the result set stays empty.
    ResultWriter w(out, {{"peer_id", C::Int4},
                         {"cl_active_cancel_req", C::Int4},
                         {"cl_waiting_cancel_req", C::Int4},
                         {"sv_active_cancel", C::Int4},
                         {"sv_login", C::Int4}});
    write_complete(out, "SHOW");
}

struct Counts {
    size_t databases = 0;
    size_t pools = 0;
    size_t clients = 0;
    size_t servers = 0;
};

Counts count_objects() {
    Counts n;
    std::vector<Database*> dbs;
    sorted_databases(dbs);
    n.databases = static_cast<size_t>(
        std::count_if(dbs.begin(), dbs.end(), [](const Database* db) { return !db->idle(); }));
    bool console_pool = false;
    for (auto& p : rt().pools) {
        if (p->db->admin) {
            console_pool = true;
        } else {
            ++n.pools;
        }
        n.clients += p->active.size() + p->waiting.size();
        n.servers += p->server_count();
    }
    if (console_pool)
        ++n.pools;
    n.clients += rt().login_clients.size();
    return n;
}

size_t user_count() {
    return rt().users.size() + (rt().users.count("pgbouncer") ? 0 : 1);
}

void show_lists(std::string& out) {
    ResultWriter w(out, {{"list", C::Text}, {"items", C::Int4}});
    Counts n = count_objects();
    auto row = [&](const char* name, size_t v) {
        w.begin_row();
        w.text(name);
        w.integer(static_cast<int64_t>(v));
        w.end_row();
    };
    row("databases", n.databases);
    row("users", user_count());
    row("peers", rt().cfg.peers.size());
    row("pools", n.pools);
    row("peer_pools", 0);
    row("free_clients", rt().free_clients.size());
    row("used_clients", n.clients);
    row("login_clients", rt().login_clients.size());
    row("free_servers", rt().free_servers.size());
    row("used_servers", n.servers);
    DnsCounts dns = dns_counts();
    row("dns_names", dns.names);
    row("dns_zones", 0);
    row("dns_queries", dns.queries);
    row("dns_pending", dns.pending);
    write_complete(out, "SHOW");
}

void show_mem(std::string& out) {
    ResultWriter w(out, {{"name", C::Text},
                         {"size", C::Int4},
                         {"used", C::Int4},
                         {"free", C::Int4},
                         {"memtotal", C::Int4}});
    Counts n = count_objects();
    // One row per object kind, as PgBouncer's slab caches; sluice frees closed objects at the
    // end of the loop turn, so nothing sits in a free list for long.
    auto row = [&](const char* name, size_t size, size_t used, size_t free) {
        w.begin_row();
        w.text(name);
        w.integer(static_cast<int64_t>(size));
        w.integer(static_cast<int64_t>(used));
        w.integer(static_cast<int64_t>(free));
        w.integer(static_cast<int64_t>(size * (used + free)));
        w.end_row();
    };
    row("user_cache", sizeof(User), rt().users.size(), 0);
    row("db_cache", sizeof(Database), rt().databases.size(), 0);
    row("pool_cache", sizeof(Pool), rt().pools.size(), 0);
    row("server_cache", sizeof(Server), n.servers, rt().free_servers.size());
    row("client_cache", sizeof(Client), n.clients, rt().free_clients.size());
    SBufMemory b = sbuf_memory();
    row("iobuf_cache", b.size, b.used, b.free);
    row("bulk_iobuf_cache", b.bulk_size, b.bulk_used, b.bulk_free);
    write_complete(out, "SHOW");
}

void show_dns_hosts(std::string& out) {
    ResultWriter w(out, {{"hostname", C::Text}, {"ttl", C::Int8}, {"addrs", C::Text}});
    for (const DnsHostInfo& h : dns_hosts()) {
        w.begin_row();
        w.text(h.host);
        w.integer(h.ttl);
        w.text(h.addrs);
        w.end_row();
    }
    write_complete(out, "SHOW");
}

void show_dns_zones(std::string& out) {
    ResultWriter w(out, {{"zonename", C::Text}, {"serial", C::Int8}, {"count", C::Int4}});
    write_complete(out, "SHOW");
}

void show_state(std::string& out) {
    ResultWriter w(out, {{"key", C::Text}, {"value", C::Text}});
    PauseMode m = pause_mode();
    auto row = [&](const char* key, bool yes) {
        w.begin_row();
        w.text(key);
        w.text(yes ? "yes" : "no");
        w.end_row();
    };
    row("active", m == PauseMode::None);
    row("paused", m == PauseMode::Pause);
    row("suspended", m == PauseMode::Suspend);
    write_complete(out, "SHOW");
}

void show_config(std::string& out) {
    ResultWriter w(
        out, {{"key", C::Text}, {"value", C::Text}, {"default", C::Text}, {"changeable", C::Text}});
    for (const SettingInfo& info : settings_table()) {
        std::string v = setting_value_text(settings(), info);
        w.begin_row();
        w.text(info.name);
        if (info.null_default && info.type == SettingType::Str && v.empty())
            w.null();
        else
            w.text(v);
        if (info.null_default)
            w.null();
        else
            w.text(info.default_text);
        w.text(info.reloadable ? "yes" : "no");
        w.end_row();
    }
    write_complete(out, "SHOW");
}

void show_version(std::string& out) {
    ResultWriter w(out, {{"version", C::Text}});
    w.begin_row();
    w.text(std::string("sluice ") + SLUICE_VERSION + " (PgBouncer 1.26.1 compatible)");
    w.end_row();
    write_complete(out, "SHOW");
}

void show_help(std::string& out) {
    static constexpr std::string_view kUsage = "\n"
                                               "\tSHOW HELP|CONFIG|DATABASES"
                                               "|POOLS|CLIENTS|SERVERS|USERS|VERSION\n"
                                               "\tSHOW PEERS|PEER_POOLS\n"
                                               "\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n"
                                               "\tSHOW DNS_HOSTS|DNS_ZONES\n"
                                               "\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n"
                                               "\tSET key = arg\n"
                                               "\tRELOAD\n"
                                               "\tPAUSE [<db>]\n"
                                               "\tRESUME [<db>]\n"
                                               "\tDISABLE <db>\n"
                                               "\tENABLE <db>\n"
                                               "\tRECONNECT [<db>]\n"
                                               "\tKILL [<db>]\n"
                                               "\tKILL_CLIENT <client_id>\n"
                                               "\tSUSPEND\n"
                                               "\tSHUTDOWN\n"
                                               "\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n"
                                               "\tWAIT_CLOSE [<db>]";
    write_notice(out, "00000", "Console usage", kUsage);
    write_complete(out, "SHOW");
}

// ---- SHOW FDS ----
//
// Also the old process's half of an online restart (-R): when the session is our own OS user
// logged in as "pgbouncer" over the unix socket (what a new sluice or PgBouncer started with
// -R opens), each row goes out with its socket attached (SCM_RIGHTS), and the new process
// carries on with them. TLS connections are never listed (their session keys cannot move).

std::string_view var_or_empty(const VarCache& v, std::string_view name) {
    int i = var_index(name);
    return i < 0 ? std::string_view{} : v.get(static_cast<size_t>(i));
}

// The rows written so far, each with its socket: [begin, end) of the reply.
struct FdRow {
    size_t begin;
    size_t end;
    int fd;
};

struct FdRowData {
    int fd;
    const char* task;
    std::string_view user;
    std::string_view db;
    const PeerAddr& addr;
    int port;
    uint64_t cancel;
    int link;
    const VarCache& vars;
    const User* cred;    // auth_query credentials (its secret goes in "password"), or nullptr
    const User* keys;    // a user whose SCRAM keys servers log in with, or nullptr
    bool extra_columns;  // the takeover's own columns:
    const std::string* statements;  // prepared statements ("" or nullptr: NULL)
    const std::string* input;       // a queued client's held request, in hex (likewise)
    const std::string* pool_params;  // a server's pool's welcome parameters (likewise)
};

void put_hex(ResultWriter& w, const ScramKey& k) {
    std::string t = "\\x";  // bytea's text form
    append_hex(t, k.data(), k.size());
    w.text(t);
}

void fd_row(ResultWriter& w, std::string& out, std::vector<FdRow>& rows, const FdRowData& d) {
    size_t begin = out.size();
    w.begin_row();
    w.integer(d.fd);
    w.text(d.task);
    w.text(d.user);
    w.text(d.db);
    w.text(addr_text(d.addr));
    w.integer(d.port);
    w.unsigned_integer(d.cancel);
    w.integer(d.link);
    for (std::string_view name :
         {"client_encoding", "standard_conforming_strings", "DateStyle", "TimeZone"}) {
        std::string_view v = var_or_empty(d.vars, name);
        if (v.empty())
            w.null();
        else
            w.text(v);
    }
    if (d.cred && d.cred->have_secret)
        w.text(d.cred->secret);
    else
        w.null();
    if (d.keys && d.keys->have_scram_keys) {
        put_hex(w, d.keys->scram_client_key);
        put_hex(w, d.keys->scram_server_key);
    } else {
        w.null();
        w.null();
    }
    if (d.extra_columns) {
        for (const std::string* v : {d.statements, d.input, d.pool_params}) {
            if (v && !v->empty())
                w.text(*v);
            else
                w.null();
        }
    }
    w.end_row();
    rows.push_back({begin, out.size(), d.fd});
}

// Sends the rows of `out` with their sockets attached, on the console socket (blocking for
// the while: a partial control message cannot be retried). What follows the last row stays
// in `out` for the usual reply path. False: the session broke (logged).
bool send_with_fds(Client& c, std::string& out, const std::vector<FdRow>& rows) {
    int sock = c.sb.fd();
    int flags = fcntl(sock, F_GETFL);
    if (flags < 0 || fcntl(sock, F_SETFL, flags & ~O_NONBLOCK) < 0) {
        log_error("send_one_fd: cannot make the socket blocking: %s", strerror(errno));
        return false;
    }
    bool ok = c.sb.flush_now();  // batched bytes too: the rows must follow them
    auto send_piece = [&](size_t begin, size_t end, int fd) {
        iovec io{out.data() + begin, end - begin};
        msghdr msg{};
        msg.msg_iov = &io;
        msg.msg_iovlen = 1;
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
        if (fd >= 0) {
            msg.msg_control = control;
            msg.msg_controllen = sizeof(control);
            cmsghdr* cm = CMSG_FIRSTHDR(&msg);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cm), &fd, sizeof(int));
        }
        ssize_t n;
        do {
            n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            log_error("send_one_fd: sendmsg error: %s", strerror(errno));  // PgBouncer's words
            return false;
        }
        if (static_cast<size_t>(n) != io.iov_len) {
            log_error("send_one_fd: partial sendmsg");
            return false;
        }
        return true;
    };
    size_t done = 0;
    for (const FdRow& r : rows) {
        if (!ok)
            break;
        if (r.begin > done)
            ok = send_piece(done, r.begin, -1);  // the RowDescription
        ok = ok && send_piece(r.begin, r.end, r.fd);
        done = r.end;
    }
    out.erase(0, done);
    if (fcntl(sock, F_SETFL, flags) < 0)
        ok = false;
    return ok;
}

void show_fds(Client& console, std::string& out) {
    bool handing_over = takeover_session(console);
    // PgBouncer's columns; to a takeover three more, sluice's own, which PgBouncer's reader
    // ignores and a new sluice uses: the client's prepared statements (statement cache), the
    // request a queued client holds, and a server's pool's welcome parameters.
    static constexpr ColDef kCols[] = {
        {"fd", C::Int4},
        {"task", C::Text},
        {"user", C::Text},
        {"database", C::Text},
        {"addr", C::Text},
        {"port", C::Int4},
        {"cancel", C::Int8},
        {"link", C::Int4},
        {"client_encoding", C::Text},
        {"std_strings", C::Text},
        {"datestyle", C::Text},
        {"timezone", C::Text},
        {"password", C::Text},
        {"scram_client_key", C::Bytea},
        {"scram_server_key", C::Bytea},
        {"prepared_statements", C::Text},
        {"pending_input", C::Text},
        {"pool_parameters", C::Text},
    };
    std::span<const ColDef> cols(kCols, std::size(kCols) - (handing_over ? 0 : 3));
    ResultWriter w(out, cols);
    std::vector<FdRow> rows;
    size_t kept = 0;  // connections a takeover leaves behind
    // Bytes this turn batched for the sockets reach them before the sockets are judged and
    // handed over (what a socket could not take stays in its out_: it does not move).
    SBuf::send_batch();
    // As PgBouncer: a connection using TLS, or linked to one that does, is not listed.
    auto tls = [](const SBuf& sb, const SBuf* peer) {
        return sb.is_tls() || (peer && peer->is_tls());
    };
    // A queued client moves with the request it holds (up to a limit): the new process
    // reads those bytes first.
    constexpr size_t kMaxHeldInput = 1 << 20;
    auto queued_moves = [](const Client& c) {
        return c.state == ClientState::Waiting && !c.wait_for_welcome && c.auth == AuthStep::Done &&
               !c.server && c.sb.pending_bytes() == 0 && c.sb.packet_remaining() == 0 &&
               !c.sb.has_output() && c.sb.unparsed().size() <= kMaxHeldInput;
    };
    auto client_moves = [&](const Client& c) {
        const Server* s = c.server;
        if (queued_moves(c))
            return true;
        return c.state == ClientState::Active && c.sb.at_rest() && (!s || s->quiet());
    };
    auto client = [&](Client& c) {
        if (tls(c.sb, c.server ? &c.server->sb : nullptr))
            return;
        if (handing_over && !client_moves(c)) {
            ++kept;
            return;
        }
        SocketRow r = client_row(c, "");
        const User* cred = c.pool ? c.pool->auth_cred : nullptr;
        std::string statements, input;
        if (handing_over) {
            statements = ps_export(c.ps);
            std::span<const uint8_t> held = c.sb.unparsed();
            append_hex(input, held.data(), held.size());
        }
        fd_row(w, out, rows,
               {c.sb.fd(), "client", r.user, r.database, r.remote, r.remote_port,
                (uint64_t{c.cancel_pid} << 32) | c.cancel_key, c.server ? c.server->sb.fd() : 0,
                c.vars, cred, c.pool ? c.pool->user : nullptr, handing_over, &statements, &input,
                nullptr});
    };
    auto server = [&](Server& s) {
        if (tls(s.sb, s.client ? &s.client->sb : nullptr))
            return;
        if (handing_over && (s.client ? !client_moves(*s.client)
                                      : s.state != ServerState::Idle || !s.sb.at_rest())) {
            ++kept;
            return;
        }
        SocketRow r = server_row(s, "");
        std::string params = handing_over ? pool_params_export(*s.pool) : std::string();
        fd_row(w, out, rows,
               {s.sb.fd(), "server", r.user, r.database, s.addr, r.remote_port,
                (uint64_t{s.backend_pid} << 32) | s.backend_key, s.client ? s.client->sb.fd() : 0,
                s.vars, s.pool->auth_cred, s.pool->user, handing_over, nullptr, nullptr, &params});
    };
    for (const ListenerInfo& l : listeners_info()) {
        size_t begin = out.size();
        w.begin_row();
        w.integer(l.fd);
        w.text("pooler");
        w.null();
        w.null();
        w.text(l.is_unix ? std::string_view("unix") : std::string_view(l.addr));
        w.integer(l.port);
        w.unsigned_integer(0);
        w.integer(0);
        for (size_t i = 8; i < cols.size(); ++i)
            w.null();
        w.end_row();
        rows.push_back({begin, out.size(), l.fd});
    }
    rt().login_clients.for_each(client);
    std::vector<Pool*> pools;
    sorted_pools(pools);
    for (Pool* p : pools) {
        if (p->db->admin)
            continue;
        p->active.for_each(client);
        p->waiting.for_each(client);
        p->active_servers.for_each(server);
        p->idle.for_each(server);
        p->used.for_each(server);
        p->login.for_each(server);
    }
    write_complete(out, "SHOW");
    if (!handing_over)
        return;
    log_info("SHOW FDS: handing %zu sockets to a new process; %zu connections stay here (logging "
             "in, resetting, in the middle of a message or of a request sluice made) and close "
             "with this process",
             rows.size(), kept);
    if (!send_with_fds(console, out, rows)) {
        console.close("SHOW FDS could not be sent");
        return;
    }
    // Clients the new process does not get and that have nothing half sent (still logging
    // in, or waiting for their pool's first server) hear why they go, instead of an EOF.
    std::vector<Client*> told;
    auto not_moving = [&](Client& c) {
        bool logging_in = c.state == ClientState::Login || c.wait_for_welcome ||
                          c.auth == AuthStep::AuthQuery;
        if (!c.admin && logging_in && !c.sb.has_output())
            told.push_back(&c);
    };
    rt().login_clients.for_each(not_moving);
    for (Pool* p : pools)
        if (!p->db->admin)
            p->waiting.for_each(not_moving);
    for (Client* c : told)
        c->fatal("08P01", "pooler is shutting down");  // PgBouncer's words for new logins then
}

// Parameters some drivers SHOW on connect; the console answers with fixed values.
struct FakeParam {
    const char* name;
    const char* value;
};
constexpr FakeParam kFakeParams[] = {
    {"client_encoding", "UTF-8"},
    {"default_transaction_isolation", "read committed"},
    {"standard_conforming_strings", "on"},
    {"datestyle", "ISO"},
    {"timezone", "GMT"},
    {"extra_float_digits", "2"},
};

}  // namespace

bool is_fake_param(std::string_view name) noexcept {
    for (const FakeParam& p : kFakeParams)
        if (iequals(name, p.name))
            return true;
    return false;
}

bool run_show(Client& c, std::string_view what, std::string& out) {
    for (const FakeParam& p : kFakeParams) {
        if (iequals(what, p.name)) {
            ResultWriter w(out, {{p.name, C::Text}});
            w.begin_row();
            w.text(p.value);
            w.end_row();
            write_complete(out, "SHOW");
            return true;
        }
    }
    struct Entry {
        const char* name;
        void (*fn)(std::string&);
    };
    static constexpr Entry kShows[] = {
        {"clients", show_clients},
        {"config", show_config},
        {"databases", show_databases},
        {"help", show_help},
        {"lists", show_lists},
        {"peers", show_peers},
        {"peer_pools", show_peer_pools},
        {"pools", show_pools},
        {"servers", show_servers},
        {"sockets", [](std::string& o) { show_sockets(o, false); }},
        {"active_sockets", [](std::string& o) { show_sockets(o, true); }},
        {"stats", show_stats},
        {"stats_totals", show_stats_totals},
        {"stats_averages", show_stats_averages},
        {"users", show_users},
        {"version", show_version},
        {"totals", show_totals},
        {"mem", show_mem},
        {"dns_hosts", show_dns_hosts},
        {"dns_zones", show_dns_zones},
        {"state", show_state},
    };
    if (iequals(what, "fds")) {
        // Cancel keys of every connection: not for stats_users.
        if (!c.admin_full)
            write_admin_error(out, "08P01", "admin access needed");
        else
            show_fds(c, out);
        return true;
    }
    for (const Entry& e : kShows) {
        if (iequals(what, e.name)) {
            e.fn(out);
            return true;
        }
    }
    return false;
}

// ---- helpers shared with admin.cpp and metrics.cpp ----

void sorted_pools(std::vector<Pool*>& out) {
    out.clear();
    for (auto& p : rt().pools)
        out.push_back(p.get());
    std::sort(out.begin(), out.end(), [](const Pool* a, const Pool* b) {
        int d = a->db->name.compare(b->db->name);
        if (d != 0)
            return d < 0;
        return a->user->name < b->user->name;
    });
}

void sorted_databases(std::vector<Database*>& out) {
    out.clear();
    for (auto& [name, db] : rt().databases)
        if (!db->dirty)
            out.push_back(db.get());
    std::sort(out.begin(), out.end(),
              [](const Database* a, const Database* b) { return a->name < b->name; });
}

std::string format_time(usec_t mono) {
    if (mono == 0)
        return "";
    usec_t wall = wall_now() - (mono_now() - mono);
    time_t secs = static_cast<time_t>(wall / 1000000);
    tm t{};
    localtime_r(&secs, &t);
    char buf[64];
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S %Z", &t);
    return std::string(buf, n);
}

bool iequals(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

bool takeover_session(const Client& c) {
    return c.addr.is_unix() && c.peer_is_self && c.user_name() == "pgbouncer";
}

bool takeover_carries_queue(const Client& c) {
    // application_name_add_host may have appended " - <address>"
    auto app = static_cast<size_t>(var_index("application_name"));
    return takeover_session(c) && c.vars.get(app).starts_with(kTakeoverAppName);
}

}  // namespace sluice::admin
