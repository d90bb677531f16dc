// The [pgbouncer] settings table: one row per key (type, SHOW CONFIG default, reload rule, the
// Settings member it fills, accepted range). apply_setting() and setting_value_text() work
// off this table for the file loader, admin SET and SHOW CONFIG alike.
#include <array>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include "sluice/config/config.h"

#include "values.h"

namespace sluice {

namespace {

template <typename E> struct EnumName {
    const char* name;
    E value;
};

constexpr EnumName<PoolMode> kPoolModes[] = {
    {"session", PoolMode::Session},
    {"transaction", PoolMode::Transaction},
    {"statement", PoolMode::Statement},
};

constexpr EnumName<AuthType> kAuthTypes[] = {
    {"cert", AuthType::Cert},
    {"md5", AuthType::Md5},
    {"scram-sha-256", AuthType::ScramSha256},
    {"plain", AuthType::Plain},
    {"trust", AuthType::Trust},
    {"any", AuthType::Any},
    {"hba", AuthType::Hba},
    {"ldap", AuthType::Ldap},
    {"pam", AuthType::Pam},
};

constexpr EnumName<SslMode> kSslModes[] = {
    {"disable", SslMode::Disable},    {"allow", SslMode::Allow},
    {"prefer", SslMode::Prefer},      {"require", SslMode::Require},
    {"verify-ca", SslMode::VerifyCa}, {"verify-full", SslMode::VerifyFull},
};

template <typename E, size_t N> const char* enum_name(const EnumName<E> (&names)[N], E v) noexcept {
    for (const auto& n : names) {
        if (n.value == v)
            return n.name;
    }
    return "INVALID";  // what PgBouncer's cf_get_lookup prints for an unmapped value
}

template <typename E, size_t N>
bool enum_parse(const EnumName<E> (&names)[N], std::string_view text, E& out) noexcept {
    for (const auto& n : names) {
        if (cfgval::iequals(text, n.name)) {
            out = n.value;
            return true;
        }
    }
    return false;
}

template <typename E, size_t N>
std::string enum_error(const EnumName<E> (&names)[N], std::string_view text) {
    std::string err = "invalid value \"" + std::string(text) + "\": expected one of ";
    for (size_t i = 0; i < N; i++) {
        if (i > 0)
            err += ", ";
        err += names[i].name;
    }
    return err;
}

using Member = std::variant<std::string Settings::*, bool Settings::*, int Settings::*,
                            usec_t Settings::*, uint32_t Settings::*, PoolMode Settings::*,
                            AuthType Settings::*, SslMode Settings::*>;

struct Row {
    SettingInfo info;
    Member member;
    int64_t lo;  // accepted range for Int / Octal rows
    int64_t hi;
};

constexpr unsigned kNoReload = 1;
constexpr unsigned kNullDefault = 2;
constexpr int64_t kIntMax = INT32_MAX;

constexpr Row row(const char* name, SettingType type, Member member, const char* def,
                  unsigned flags = 0, int64_t lo = 0, int64_t hi = 0) {
    return Row{
        .info = {name, type, def, (flags & kNoReload) == 0, (flags & kNullDefault) != 0},
        .member = member,
        .lo = lo,
        .hi = hi,
    };
}

using T = SettingType;
using S = Settings;

// Alphabetical, as PgBouncer's bouncer_params[] (this order is SHOW CONFIG's).
// Defaults are PgBouncer's default strings; "" with kNullDefault where PgBouncer has NULL.
constexpr Row kRows[] = {
    row("admin_users", T::List, &S::admin_users, ""),
    row("application_name_add_host", T::Bool, &S::application_name_add_host, "0"),
    row("auth_dbname", T::Str, &S::auth_dbname, "", kNullDefault),
    row("auth_file", T::Str, &S::auth_file, "", kNullDefault),
    row("auth_hba_file", T::Str, &S::auth_hba_file, ""),
    row("auth_ident_file", T::Str, &S::auth_ident_file, "", kNullDefault),
    row("auth_ldap_options", T::Str, &S::auth_ldap_options, "", kNullDefault),
    row("auth_query", T::Str, &S::auth_query,
        "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM "
        "pg_authid WHERE rolname=$1 AND rolcanlogin"),
    row("auth_type", T::Enum, &S::auth_type, "md5"),
    row("auth_user", T::Str, &S::auth_user, "", kNullDefault),
    row("autodb_idle_timeout", T::Secs, &S::autodb_idle_timeout, "3600"),
    row("cancel_wait_timeout", T::Secs, &S::cancel_wait_timeout, "10"),
    row("client_idle_timeout", T::Secs, &S::client_idle_timeout, "0"),
    row("client_login_timeout", T::Secs, &S::client_login_timeout, "60"),
    row("client_tls13_ciphers", T::Str, &S::client_tls13_ciphers, "", kNullDefault),
    row("client_tls_ca_file", T::Str, &S::client_tls_ca_file, ""),
    row("client_tls_cert_file", T::Str, &S::client_tls_cert_file, ""),
    row("client_tls_ciphers", T::Str, &S::client_tls_ciphers, "default"),
    row("client_tls_dheparams", T::Str, &S::client_tls_dheparams, "auto"),
    row("client_tls_ecdhcurve", T::Str, &S::client_tls_ecdhcurve, "auto"),
    row("client_tls_key_file", T::Str, &S::client_tls_key_file, ""),
    row("client_tls_protocols", T::Str, &S::client_tls_protocols, "secure"),
    row("client_tls_sslmode", T::Enum, &S::client_tls_sslmode, "disable"),
    row("conffile", T::Str, &S::conffile, "", kNullDefault),
    row("default_pool_size", T::Int, &S::default_pool_size, "20", 0, 0, kIntMax),
    row("disable_pqexec", T::Bool, &S::disable_pqexec, "0", kNoReload),
    row("dns_max_ttl", T::Secs, &S::dns_max_ttl, "15"),
    row("dns_nxdomain_ttl", T::Secs, &S::dns_nxdomain_ttl, "15"),
    row("dns_zone_check_period", T::Secs, &S::dns_zone_check_period, "0"),
    row("idle_transaction_timeout", T::Secs, &S::idle_transaction_timeout, "0"),
    row("ignore_startup_parameters", T::List, &S::ignore_startup_parameters, ""),
    row("job_name", T::Str, &S::job_name, "pgbouncer", kNoReload),
    row("listen_addr", T::List, &S::listen_addr, "", kNoReload),
    row("listen_backlog", T::Int, &S::listen_backlog, "128", kNoReload, 1, kIntMax),
    row("listen_port", T::Int, &S::listen_port, "6432", kNoReload, 1, 65535),
    row("log_connections", T::Bool, &S::log_connections, "1"),
    row("log_disconnections", T::Bool, &S::log_disconnections, "1"),
    row("log_pooler_errors", T::Bool, &S::log_pooler_errors, "1"),
    row("log_stats", T::Bool, &S::log_stats, "1"),
    row("logfile", T::Str, &S::logfile, ""),
    row("login_notify_message", T::Str, &S::login_notify_message, ""),
    row("max_client_conn", T::Int, &S::max_client_conn, "100", 0, 1, kIntMax),
    row("max_db_client_connections", T::Int, &S::max_db_client_connections, "0", 0, 0, kIntMax),
    row("max_db_connections", T::Int, &S::max_db_connections, "0", 0, 0, kIntMax),
    row("max_packet_size", T::Int, &S::max_packet_size, "2147483647", 0, 1, UINT32_MAX),
    row("max_prepared_statements", T::Int, &S::max_prepared_statements, "200", 0, 0, kIntMax),
    row("max_user_client_connections", T::Int, &S::max_user_client_connections, "0", 0, 0, kIntMax),
    row("max_user_connections", T::Int, &S::max_user_connections, "0", 0, 0, kIntMax),
    // sluice-only keys (PgBouncer has no metrics endpoint): see doc/admin.md.
    row("metrics_listen_addr", T::List, &S::metrics_listen_addr, "", kNoReload),
    row("metrics_listen_port", T::Int, &S::metrics_listen_port, "9127", kNoReload, 1, 65535),
    row("min_pool_size", T::Int, &S::min_pool_size, "0", 0, 0, kIntMax),
    row("peer_id", T::Int, &S::peer_id, "0", 0, 0, 16383),
    row("pidfile", T::Str, &S::pidfile, "", kNoReload),
    row("pkt_buf", T::Int, &S::pkt_buf, "4096", kNoReload, 512, 16 * 1024 * 1024),
    row("pool_idle_timeout", T::Secs, &S::pool_idle_timeout, "0"),
    row("pool_mode", T::Enum, &S::pool_mode, "session"),
    row("query_timeout", T::Secs, &S::query_timeout, "0"),
    row("query_wait_notify", T::Int, &S::query_wait_notify, "5", 0, 0, kIntMax),
    row("query_wait_timeout", T::Secs, &S::query_wait_timeout, "120"),
    row("reserve_pool_size", T::Int, &S::reserve_pool_size, "0", 0, 0, kIntMax),
    row("reserve_pool_timeout", T::Secs, &S::reserve_pool_timeout, "5"),
    row("resolv_conf", T::Str, &S::resolv_conf, "", kNoReload),
    row("sbuf_loopcnt", T::Int, &S::sbuf_loopcnt, "5", 0, 0, kIntMax),
    row("scram_iterations", T::Int, &S::scram_iterations, "4096", 0, 1, kIntMax),
    row("server_check_delay", T::Secs, &S::server_check_delay, "30"),
    row("server_check_query", T::Str, &S::server_check_query, "<empty>"),
    row("server_connect_timeout", T::Secs, &S::server_connect_timeout, "15"),
    row("server_fast_close", T::Bool, &S::server_fast_close, "0"),
    row("server_idle_timeout", T::Secs, &S::server_idle_timeout, "600"),
    row("server_lifetime", T::Secs, &S::server_lifetime, "3600"),
    row("server_login_retry", T::Secs, &S::server_login_retry, "15"),
    row("server_reset_query", T::Str, &S::server_reset_query, "DISCARD ALL"),
    row("server_reset_query_always", T::Bool, &S::server_reset_query_always, "0"),
    row("server_round_robin", T::Bool, &S::server_round_robin, "0"),
    row("server_tls13_ciphers", T::Str, &S::server_tls13_ciphers, "", kNullDefault),
    row("server_tls_ca_file", T::Str, &S::server_tls_ca_file, ""),
    row("server_tls_cert_file", T::Str, &S::server_tls_cert_file, ""),
    row("server_tls_ciphers", T::Str, &S::server_tls_ciphers, "default"),
    row("server_tls_key_file", T::Str, &S::server_tls_key_file, ""),
    row("server_tls_protocols", T::Str, &S::server_tls_protocols, "secure"),
    row("server_tls_sslmode", T::Enum, &S::server_tls_sslmode, "prefer"),
    row("so_reuseport", T::Bool, &S::so_reuseport, "0", kNoReload),
    row("stats_period", T::Int, &S::stats_period, "60", 0, 1, kIntMax),
    row("stats_users", T::List, &S::stats_users, ""),
    row("suspend_timeout", T::Secs, &S::suspend_timeout, "10"),
    row("syslog", T::Bool, &S::syslog, "0"),
    row("syslog_facility", T::Str, &S::syslog_facility, "daemon"),
    row("syslog_ident", T::Str, &S::syslog_ident, "pgbouncer"),
    row("tcp_defer_accept", T::Bool, &S::tcp_defer_accept, "1"),
    row("tcp_keepalive", T::Bool, &S::tcp_keepalive, "1"),
    row("tcp_keepcnt", T::Int, &S::tcp_keepcnt, "0", 0, 0, kIntMax),
    row("tcp_keepidle", T::Int, &S::tcp_keepidle, "0", 0, 0, kIntMax),
    row("tcp_keepintvl", T::Int, &S::tcp_keepintvl, "0", 0, 0, kIntMax),
    row("tcp_socket_buffer", T::Int, &S::tcp_socket_buffer, "0", 0, 0, kIntMax),
    row("tcp_user_timeout", T::Int, &S::tcp_user_timeout, "0", 0, 0, kIntMax),
    row("track_extra_parameters", T::List, &S::track_extra_parameters, "IntervalStyle", kNoReload),
    row("transaction_timeout", T::Secs, &S::transaction_timeout, "0"),
    row("unix_socket_dir", T::Str, &S::unix_socket_dir, "/tmp", kNoReload),
    row("unix_socket_group", T::Str, &S::unix_socket_group, "", kNoReload),
    row("unix_socket_mode", T::Octal, &S::unix_socket_mode, "0777", kNoReload, 0, 07777),
    row("user", T::Str, &S::user, "", kNoReload | kNullDefault),
    row("verbose", T::Int, &S::verbose, "", kNullDefault, 0, kIntMax),
};

constexpr bool rows_sorted() {
    for (size_t i = 1; i < std::size(kRows); i++) {
        if (!(std::string_view(kRows[i - 1].info.name) < std::string_view(kRows[i].info.name)))
            return false;
    }
    return true;
}
static_assert(rows_sorted(), "settings must stay in SHOW CONFIG (alphabetical) order");

constexpr auto kInfos = [] {
    std::array<SettingInfo, std::size(kRows)> infos{};
    for (size_t i = 0; i < infos.size(); i++)
        infos[i] = kRows[i].info;
    return infos;
}();

// Keys accepted as another name for a row (PgBouncer's Windows build spells job_name so).
constexpr std::pair<std::string_view, std::string_view> kAliases[] = {
    {"service_name", "job_name"},
};

const Row* find_row(std::string_view name) noexcept {
    for (const auto& [alias, target] : kAliases) {
        if (cfgval::iequals(name, alias))
            name = target;
    }
    for (const Row& r : kRows) {
        if (cfgval::iequals(name, r.info.name))
            return &r;
    }
    return nullptr;
}

bool set_value(Settings& s, const Row& r, std::string_view value, std::string& err) {
    return std::visit(
        [&](auto member) -> bool {
            using V = std::remove_reference_t<decltype(s.*member)>;
            if constexpr (std::is_same_v<V, std::string>) {
                s.*member = std::string(value);
                return true;
            } else if constexpr (std::is_same_v<V, bool>) {
                if (cfgval::parse_bool(value, s.*member))
                    return true;
                err = "invalid value \"" + std::string(value) + "\": expected 0 or 1";
                return false;
            } else if constexpr (std::is_same_v<V, int> || std::is_same_v<V, uint32_t>) {
                cfgval::IntParser parse = r.info.type == SettingType::Octal
                                              ? cfgval::parse_int_oct
                                              : cfgval::parse_int_auto;
                int64_t v = 0;
                if (!cfgval::parse_int_in_range(value, parse, r.lo, r.hi, v, err))
                    return false;
                s.*member = static_cast<V>(v);
                return true;
            } else if constexpr (std::is_same_v<V, usec_t>) {
                if (cfgval::parse_secs(value, s.*member))
                    return true;
                err = "invalid value \"" + std::string(value) +
                      "\": expected seconds (a non-negative number)";
                return false;
            } else if constexpr (std::is_same_v<V, PoolMode>) {
                if (enum_parse(kPoolModes, value, s.*member))
                    return true;
                err = enum_error(kPoolModes, value);
                return false;
            } else if constexpr (std::is_same_v<V, AuthType>) {
                if (enum_parse(kAuthTypes, value, s.*member))
                    return true;
                err = enum_error(kAuthTypes, value);
                return false;
            } else {
                static_assert(std::is_same_v<V, SslMode>);
                if (enum_parse(kSslModes, value, s.*member))
                    return true;
                err = enum_error(kSslModes, value);
                return false;
            }
        },
        r.member);
}

}  // namespace

const char* pool_mode_name(PoolMode m) noexcept {
    return enum_name(kPoolModes, m);
}

const char* auth_type_name(AuthType t) noexcept {
    return enum_name(kAuthTypes, t);
}

const char* ssl_mode_name(SslMode m) noexcept {
    return enum_name(kSslModes, m);
}

bool parse_pool_mode(std::string_view text, PoolMode& out) noexcept {
    return enum_parse(kPoolModes, text, out);
}

bool parse_auth_type(std::string_view text, AuthType& out) noexcept {
    return enum_parse(kAuthTypes, text, out);
}

bool parse_ssl_mode(std::string_view text, SslMode& out) noexcept {
    return enum_parse(kSslModes, text, out);
}

std::span<const SettingInfo> settings_table() noexcept {
    return kInfos;
}

const SettingInfo* find_setting(std::string_view name) noexcept {
    const Row* r = find_row(name);
    return r ? &kInfos[static_cast<size_t>(r - kRows)] : nullptr;
}

std::string setting_value_text(const Settings& s, const SettingInfo& info) {
    const Row* r = find_row(info.name);
    if (!r)
        return {};
    return std::visit(
        [&](auto member) -> std::string {
            using V = std::remove_cvref_t<decltype(s.*member)>;
            const V& v = s.*member;
            if constexpr (std::is_same_v<V, std::string>) {
                return v;
            } else if constexpr (std::is_same_v<V, bool>) {
                return v ? "1" : "0";
            } else if constexpr (std::is_same_v<V, int>) {
                char buf[32];
                if (info.type == SettingType::Octal && v != 0)
                    std::snprintf(buf, sizeof(buf), "0%o", static_cast<unsigned>(v));
                else
                    std::snprintf(buf, sizeof(buf), "%d", v);
                return buf;
            } else if constexpr (std::is_same_v<V, uint32_t>) {
                return std::to_string(v);
            } else if constexpr (std::is_same_v<V, usec_t>) {
                return cfgval::format_secs(v);
            } else if constexpr (std::is_same_v<V, PoolMode>) {
                return pool_mode_name(v);
            } else if constexpr (std::is_same_v<V, AuthType>) {
                return auth_type_name(v);
            } else {
                return ssl_mode_name(v);
            }
        },
        r->member);
}

bool apply_setting(Settings& s, std::string_view key, std::string_view value, std::string& err) {
    const Row* r = find_row(key);
    if (!r) {
        err = "unknown parameter";
        return false;
    }
    return set_value(s, *r, value, err);
}

}  // namespace sluice
