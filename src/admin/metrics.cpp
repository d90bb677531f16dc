// OpenMetrics endpoint: libevent's evhttp on metrics_listen_addr:metrics_listen_port, one
// GET /metrics handler that renders pool gauges, per-database counters and histograms.
#include "sluice/admin/metrics.h"

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <vector>

#include <event2/buffer.h>
#include <event2/http.h>

#include "sluice/pool/control.h"

#include "internal.h"

namespace sluice {
namespace {

evhttp* g_http = nullptr;

// Per-database sums of its pools (the console excluded). Kept between scrapes so that the
// vectors keep their capacity: a scrape allocates only its response body.
struct DbAgg {
    const Database* db;
    PoolStats stats;
    LatencyHistogram xact;
    LatencyHistogram query;
    LatencyHistogram wait;
};
std::vector<Pool*> g_pools;
std::vector<DbAgg> g_dbs;
std::vector<Database*> g_all_dbs;
std::string g_body;

[[gnu::format(printf, 2, 3)]] void put(std::string& out, const char* fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0)
        out.append(buf, std::min(static_cast<size_t>(n), sizeof(buf) - 1));
}

// A label value with OpenMetrics escapes (\\, \", \n).
void put_escaped(std::string& out, std::string_view v) {
    for (char ch : v) {
        if (ch == '\\')
            out += "\\\\";
        else if (ch == '"')
            out += "\\\"";
        else if (ch == '\n')
            out += "\\n";
        else
            out.push_back(ch);
    }
}

void family(std::string& out, const char* name, const char* type, const char* unit,
            const char* help) {
    put(out, "# TYPE %s %s\n", name, type);
    if (unit)
        put(out, "# UNIT %s %s\n", name, unit);
    put(out, "# HELP %s %s\n", name, help);
}

// name{database="..."[,user="..."][,extra]}
void sample_start(std::string& out, const char* name, const char* suffix, const Database* db,
                  const User* user) {
    out += name;
    out += suffix;
    out += "{database=\"";
    put_escaped(out, db->name);
    out += '"';
    if (user) {
        out += ",user=\"";
        put_escaped(out, user->name);
        out += '"';
    }
}

void put_seconds(std::string& out, uint64_t us) {
    put(out, "%" PRIu64 ".%06" PRIu64, us / 1000000, us % 1000000);
}

void pool_gauges(std::string& out) {
    family(out, "sluice_pool_client_connections", "gauge", nullptr,
           "Client connections of a pool by state (SHOW POOLS cl_active, cl_waiting).");
    for (Pool* p : g_pools) {
        const std::pair<const char*, size_t> states[] = {{"active", p->active.size()},
                                                         {"waiting", p->waiting.size()}};
        for (const auto& [state, n] : states) {
            sample_start(out, "sluice_pool_client_connections", "", p->db, p->user);
            put(out, ",state=\"%s\"} %zu\n", state, n);
        }
    }
    family(out, "sluice_pool_server_connections", "gauge", nullptr,
           "Server connections of a pool by state (SHOW POOLS sv_active, sv_idle, sv_used, "
           "sv_login).");
    for (Pool* p : g_pools) {
        const std::pair<const char*, size_t> states[] = {{"active", p->active_servers.size()},
                                                         {"idle", p->idle.size()},
                                                         {"used", p->used.size()},
                                                         {"login", p->login.size()}};
        for (const auto& [state, n] : states) {
            sample_start(out, "sluice_pool_server_connections", "", p->db, p->user);
            put(out, ",state=\"%s\"} %zu\n", state, n);
        }
    }
    family(out, "sluice_pool_max_wait_seconds", "gauge", "seconds",
           "How long the oldest queued client of a pool has waited (SHOW POOLS maxwait).");
    usec_t now = mono_now();
    for (Pool* p : g_pools) {
        Client* first = p->waiting.front();
        usec_t wait = first && first->query_start ? now - first->query_start : 0;
        sample_start(out, "sluice_pool_max_wait_seconds", "", p->db, p->user);
        out += "} ";
        put_seconds(out, static_cast<uint64_t>(wait > 0 ? wait : 0));
        out += '\n';
    }
    family(out, "sluice_pool_size", "gauge", nullptr,
           "Configured server connections per pool (pool_size).");
    for (Pool* p : g_pools) {
        sample_start(out, "sluice_pool_size", "", p->db, p->user);
        put(out, "} %d\n", p->pool_size());
    }
}

struct CounterDef {
    const char* name;  // family name (samples add _total)
    const char* unit;
    const char* help;
    uint64_t PoolStats::*field;
    bool usec;  // stored in µs, exported in seconds
};

constexpr CounterDef kCounters[] = {
    {"sluice_server_assignments", nullptr, "Times a server was assigned to a client.",
     &PoolStats::server_assignment_count, false},
    {"sluice_transactions", nullptr, "Transactions pooled (SHOW STATS total_xact_count).",
     &PoolStats::xact_count, false},
    {"sluice_queries", nullptr, "Queries pooled (SHOW STATS total_query_count).",
     &PoolStats::query_count, false},
    {"sluice_received_bytes", "bytes", "Bytes received from clients (total_received).",
     &PoolStats::client_bytes, false},
    {"sluice_sent_bytes", "bytes", "Bytes received from servers and sent on (total_sent).",
     &PoolStats::server_bytes, false},
    {"sluice_transaction_time_seconds", "seconds", "Time spent in transactions (total_xact_time).",
     &PoolStats::xact_time, true},
    {"sluice_query_time_seconds", "seconds", "Time spent in queries (total_query_time).",
     &PoolStats::query_time, true},
    {"sluice_wait_time_seconds", "seconds",
     "Time clients spent waiting for a server (total_wait_time).", &PoolStats::wait_time, true},
    {"sluice_client_parses", nullptr, "Parse messages from clients (prepared statements).",
     &PoolStats::client_parse_count, false},
    {"sluice_server_parses", nullptr, "Parse messages sent to servers (prepared statements).",
     &PoolStats::server_parse_count, false},
    {"sluice_binds", nullptr, "Bind messages of prepared statements.", &PoolStats::bind_count,
     false},
    {"sluice_client_logins", nullptr, "Client logins completed.", &PoolStats::client_login_count,
     false},
};

void database_counters(std::string& out) {
    for (const CounterDef& d : kCounters) {
        family(out, d.name, "counter", d.unit, d.help);
        for (const DbAgg& a : g_dbs) {
            sample_start(out, d.name, "_total", a.db, nullptr);
            out += "} ";
            if (d.usec)
                put_seconds(out, a.stats.*d.field);
            else
                put(out, "%" PRIu64, a.stats.*d.field);
            out += '\n';
        }
    }
}

void database_gauges(std::string& out) {
    admin::sorted_databases(g_all_dbs);
    struct GaugeDef {
        const char* name;
        const char* help;
        int (*value)(const Database&);
    };
    static constexpr GaugeDef kGauges[] = {
        {"sluice_database_server_connections", "Server connections of a database.",
         [](const Database& db) { return db.server_count; }},
        {"sluice_database_client_connections", "Client connections of a database.",
         [](const Database& db) { return db.client_count; }},
        {"sluice_database_paused", "1 while the database is paused (PAUSE db, KILL db).",
         [](const Database& db) { return control_db_paused(db) ? 1 : 0; }},
        {"sluice_database_disabled", "1 while new logins are rejected (DISABLE db).",
         [](const Database& db) { return db.disabled ? 1 : 0; }},
    };
    for (const GaugeDef& g : kGauges) {
        family(out, g.name, "gauge", nullptr, g.help);
        for (const Database* db : g_all_dbs) {
            if (db->admin)
                continue;
            sample_start(out, g.name, "", db, nullptr);
            put(out, "} %d\n", g.value(*db));
        }
    }
}

void bound_text(char* buf, size_t size, usec_t us) {
    // Seconds with as many decimals as the bound needs, at least one ("1.0", "0.00025").
    snprintf(buf, size, "%" PRId64 ".%06" PRId64, us / 1000000, us % 1000000);
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == '0' && buf[n - 2] != '.')
        buf[--n] = '\0';
}

struct HistDef {
    const char* name;
    const char* help;
    LatencyHistogram DbAgg::*field;
};

constexpr HistDef kHistograms[] = {
    {"sluice_transaction_duration_seconds", "Duration of pooled transactions.", &DbAgg::xact},
    {"sluice_query_duration_seconds", "Duration of pooled queries.", &DbAgg::query},
    {"sluice_wait_duration_seconds", "Time a client waited for a server before it got one.",
     &DbAgg::wait},
};

void database_histograms(std::string& out) {
    for (const HistDef& d : kHistograms) {
        family(out, d.name, "histogram", "seconds", d.help);
        for (const DbAgg& a : g_dbs) {
            const LatencyHistogram& h = a.*d.field;
            uint64_t cumulative = 0;
            for (size_t i = 0; i < h.counts.size(); ++i) {
                cumulative += h.counts[i];
                char le[32] = "+Inf";
                if (i < kLatencyBoundsUs.size())
                    bound_text(le, sizeof(le), kLatencyBoundsUs[i]);
                sample_start(out, d.name, "_bucket", a.db, nullptr);
                put(out, ",le=\"%s\"} %" PRIu64 "\n", le, cumulative);
            }
            sample_start(out, d.name, "_count", a.db, nullptr);
            put(out, "} %" PRIu64 "\n", cumulative);
            sample_start(out, d.name, "_sum", a.db, nullptr);
            out += "} ";
            put_seconds(out, h.sum_us);
            out += '\n';
        }
    }
}

void collect() {
    admin::sorted_pools(g_pools);
    size_t keep = 0;
    for (Pool* p : g_pools)
        if (!p->db->admin)
            g_pools[keep++] = p;
    g_pools.resize(keep);
    g_dbs.clear();
    for (Pool* p : g_pools) {
        if (g_dbs.empty() || g_dbs.back().db != p->db)
            g_dbs.push_back(DbAgg{p->db, {}, {}, {}, {}});
        DbAgg& a = g_dbs.back();
        a.stats += pool_stats_now(*p);
        a.xact += p->xact_hist;
        a.query += p->query_hist;
        a.wait += p->wait_hist;
    }
}

void on_request(evhttp_request* req, void*) noexcept {
    time_update();
    const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
    const char* path = uri ? evhttp_uri_get_path(uri) : nullptr;
    if (!path || strcmp(path, "/metrics") != 0) {
        evhttp_send_error(req, HTTP_NOTFOUND, nullptr);
        return;
    }
    g_body.clear();
    metrics_write(g_body);
    evbuffer* body = evbuffer_new();
    if (!body) {
        evhttp_send_error(req, HTTP_INTERNAL, nullptr);
        return;
    }
    evbuffer_add(body, g_body.data(), g_body.size());
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/openmetrics-text; version=1.0.0; charset=utf-8");
    evhttp_send_reply(req, HTTP_OK, "OK", body);
    evbuffer_free(body);
}

}  // namespace

void metrics_write(std::string& out) {
    collect();
    family(out, "sluice_build", "info", nullptr, "sluice version.");
    put(out, "sluice_build_info{version=\"%s\",pgbouncer_compatible=\"1.26.1\"} 1\n",
        SLUICE_VERSION);
    family(out, "sluice_client_connections", "gauge", nullptr,
           "Client connections counted against max_client_conn.");
    put(out, "sluice_client_connections %d\n", rt().client_count);
    family(out, "sluice_max_client_connections", "gauge", nullptr, "max_client_conn.");
    put(out, "sluice_max_client_connections %d\n", settings().max_client_conn);
    family(out, "sluice_paused", "gauge", nullptr,
           "1 while the whole pooler is paused (PAUSE, SIGUSR1) or suspended.");
    put(out, "sluice_paused %d\n", pause_mode() != PauseMode::None ? 1 : 0);
    pool_gauges(out);
    database_gauges(out);
    database_counters(out);
    database_histograms(out);
    out += "# EOF\n";
}

bool metrics_start(std::string& err) {
    const Settings& st = settings();
    std::vector<std::string> addrs = split_list(st.metrics_listen_addr);
    if (addrs.empty())
        return true;
    g_http = evhttp_new(rt().base);
    if (!g_http) {
        err = "metrics: cannot create the HTTP server";
        return false;
    }
    evhttp_set_allowed_methods(g_http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_timeout(g_http, 10);
    evhttp_set_gencb(g_http, on_request, nullptr);
    for (const std::string& a : addrs) {
        const char* host = a == "*" ? "0.0.0.0" : a.c_str();
        if (!evhttp_bind_socket_with_handle(g_http, host,
                                            static_cast<uint16_t>(st.metrics_listen_port))) {
            err = "metrics: cannot listen on " + a + ":" + std::to_string(st.metrics_listen_port);
            return false;
        }
        log_info("metrics: listening on %s:%d", host, st.metrics_listen_port);
    }
    return true;
}

void metrics_stop() {
    if (g_http)
        evhttp_free(g_http);
    g_http = nullptr;
}

}  // namespace sluice
