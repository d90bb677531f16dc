// The loaded configuration: [pgbouncer] settings, [databases], [users], [peers].
// Parsed with PgBouncer's grammar (see doc/config.md); a bad line stops the load with
// "file:line: key: message". Times are stored in microseconds.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sluice {

enum class PoolMode : uint8_t {
    Session,
    Transaction,
    Statement,
};

enum class AuthType : uint8_t {
    Cert,
    Md5,
    ScramSha256,
    Plain,
    Trust,
    Any,
    Hba,
    Ldap,
    Pam,
};

enum class SslMode : uint8_t {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
};

const char* pool_mode_name(PoolMode m) noexcept;  // "session" ...
const char* auth_type_name(AuthType t) noexcept;  // "md5", "scram-sha-256" ...
const char* ssl_mode_name(SslMode m) noexcept;    // "disable", "verify-full" ...
// Inverse of the above, case-insensitive (PgBouncer matches enum values with strcasecmp).
[[nodiscard]] bool parse_pool_mode(std::string_view text, PoolMode& out) noexcept;
[[nodiscard]] bool parse_auth_type(std::string_view text, AuthType& out) noexcept;
[[nodiscard]] bool parse_ssl_mode(std::string_view text, SslMode& out) noexcept;

using usec_t = int64_t;

// Every [pgbouncer] key of PgBouncer 1.26, named exactly as in the ini file.
// Lists stay as the raw comma-separated string; use split_list() to iterate.
struct Settings {
    std::string admin_users;
    bool application_name_add_host = false;
    std::string auth_dbname;
    std::string auth_file;
    std::string auth_hba_file;
    std::string auth_ident_file;
    std::string auth_ldap_options;
    std::string auth_query = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE "
                             "rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin";
    AuthType auth_type = AuthType::Md5;
    std::string auth_user;
    usec_t autodb_idle_timeout = 3600 * 1000000LL;
    usec_t cancel_wait_timeout = 10 * 1000000LL;
    usec_t client_idle_timeout = 0;
    usec_t client_login_timeout = 60 * 1000000LL;
    std::string client_tls13_ciphers;
    std::string client_tls_ca_file;
    std::string client_tls_cert_file;
    std::string client_tls_ciphers = "default";
    std::string client_tls_dheparams = "auto";
    std::string client_tls_ecdhcurve = "auto";
    std::string client_tls_key_file;
    std::string client_tls_protocols = "secure";
    SslMode client_tls_sslmode = SslMode::Disable;
    std::string conffile;
    int default_pool_size = 20;
    bool disable_pqexec = false;
    usec_t dns_max_ttl = 15 * 1000000LL;
    usec_t dns_nxdomain_ttl = 15 * 1000000LL;
    usec_t dns_zone_check_period = 0;
    usec_t idle_transaction_timeout = 0;
    std::string ignore_startup_parameters;
    std::string job_name = "pgbouncer";
    std::string listen_addr;
    int listen_backlog = 128;
    int listen_port = 6432;
    bool log_connections = true;
    bool log_disconnections = true;
    bool log_pooler_errors = true;
    bool log_stats = true;
    std::string logfile;
    std::string login_notify_message;
    int max_client_conn = 100;
    int max_db_client_connections = 0;
    int max_db_connections = 0;
    uint32_t max_packet_size = 2147483647u;
    int max_prepared_statements = 200;
    int max_user_client_connections = 0;
    int max_user_connections = 0;
    // sluice-only (not PgBouncer): the OpenMetrics endpoint; "" = off (doc/admin.md).
    std::string metrics_listen_addr;
    int metrics_listen_port = 9127;
    int min_pool_size = 0;
    int peer_id = 0;
    std::string pidfile;
    int pkt_buf = 4096;
    usec_t pool_idle_timeout = 0;
    PoolMode pool_mode = PoolMode::Session;
    usec_t query_timeout = 0;
    int query_wait_notify = 5;  // seconds
    usec_t query_wait_timeout = 120 * 1000000LL;
    int reserve_pool_size = 0;
    usec_t reserve_pool_timeout = 5 * 1000000LL;
    std::string resolv_conf;
    int sbuf_loopcnt = 5;
    int scram_iterations = 4096;
    usec_t server_check_delay = 30 * 1000000LL;
    std::string server_check_query = "<empty>";
    usec_t server_connect_timeout = 15 * 1000000LL;
    bool server_fast_close = false;
    usec_t server_idle_timeout = 600 * 1000000LL;
    usec_t server_lifetime = 3600 * 1000000LL;
    usec_t server_login_retry = 15 * 1000000LL;
    std::string server_reset_query = "DISCARD ALL";
    bool server_reset_query_always = false;
    bool server_round_robin = false;
    std::string server_tls13_ciphers;
    std::string server_tls_ca_file;
    std::string server_tls_cert_file;
    std::string server_tls_ciphers = "default";
    std::string server_tls_key_file;
    std::string server_tls_protocols = "secure";
    SslMode server_tls_sslmode = SslMode::Prefer;
    bool so_reuseport = false;
    int stats_period = 60;  // seconds
    std::string stats_users;
    usec_t suspend_timeout = 10 * 1000000LL;
    bool syslog = false;
    std::string syslog_facility = "daemon";
    std::string syslog_ident = "pgbouncer";
    bool tcp_defer_accept = true;
    bool tcp_keepalive = true;
    int tcp_keepcnt = 0;
    int tcp_keepidle = 0;
    int tcp_keepintvl = 0;
    int tcp_socket_buffer = 0;
    int tcp_user_timeout = 0;  // milliseconds
    std::string track_extra_parameters = "IntervalStyle";
    usec_t transaction_timeout = 0;
    std::string unix_socket_dir = "/tmp";
    std::string unix_socket_group;
    int unix_socket_mode = 0777;
    std::string user;
    int verbose = 0;
};

// One [databases] line: "name = key=value ...". -1 / empty / nullopt = not set (inherit).
struct DatabaseEntry {
    std::string name;
    std::string host;  // "" = unix socket in the default dir; may be a comma list
    int port = 5432;
    std::string dbname;  // "" = same as name
    std::string user;    // forced user
    std::string password;
    std::string auth_user;
    std::string auth_query;
    std::string auth_dbname;
    int pool_size = -1;
    int min_pool_size = -1;
    int reserve_pool_size = -1;
    int max_db_connections = -1;
    int max_db_client_connections = -1;
    int server_lifetime = -1;  // seconds
    std::optional<PoolMode> pool_mode;
    std::string connect_query;
    std::string load_balance_hosts;  // "" = round-robin
    std::string client_encoding;
    std::string datestyle;
    std::string timezone;
    std::string application_name;
    int query_wait_timeout = -1;  // seconds
};

// One [users] line.
struct UserEntry {
    std::string name;
    std::optional<PoolMode> pool_mode;
    int pool_size = -1;
    int reserve_pool_size = -1;
    int max_user_connections = -1;
    int max_user_client_connections = -1;
    int query_timeout = -1;  // seconds
    int idle_transaction_timeout = -1;
    int transaction_timeout = -1;
    int client_idle_timeout = -1;
    int query_wait_timeout = -1;
};

// One [peers] line.
struct PeerEntry {
    int peer_id = 0;
    std::string host;
    int port = 6432;
    int pool_size = -1;
};

struct Config {
    Settings settings;
    std::vector<DatabaseEntry> databases;  // file order; "*" is the fallback entry if present
    std::vector<UserEntry> users;
    std::vector<PeerEntry> peers;
    // The [pgbouncer] keys the file set, as settings_table() names (views of static strings):
    // tells a key left out from one set to its default or to "". See set_in_file().
    std::vector<std::string_view> keys_in_file;
    // What the load skipped without failing, one WARNING line each ("<file>:<line>: ...").
    std::vector<std::string> warnings;
};

// Whether cfg's file set the [pgbouncer] key `name` (a settings_table() name, as spelt there),
// whatever the value; an alias or other case in the file counts.
[[nodiscard]] bool set_in_file(const Config& cfg, std::string_view name) noexcept;

// Loads `path` and its %includes into `out` (which starts from defaults). On failure returns
// false and sets `err` to one or two lines to log: "<file>:<line>: <key>: <what is wrong>"
// where we can say more than PgBouncer, then PgBouncer's own line ("invalid value \"x\" for
// parameter k in configuration (<file>:<line>)", "syntax error in configuration (...),
// stopping loading", "could not load file ..."). A file that loads but has no [pgbouncer]
// section header anywhere (empty, only [databases]) fails with PgBouncer's one line
// "load_init_file: main section missing from config file".
//
// `out` is first reset to Config{} and settings.conffile set to `path` (the file may override
// it). Like PgBouncer the load is not transactional: on failure `out` holds every line before
// the bad one. A later duplicate [databases]/[users] name or [peers] id replaces the earlier
// entry in place. Relative %include paths are opened relative to the working directory; one
// naming a directory reads nothing, as in PgBouncer, and adds to out.warnings.
[[nodiscard]] bool load_config(const std::string& path, Config& out, std::string& err);

// Deepest %include nesting accepted (the main file is depth 0), as libusual's MAX_INCLUDE.
inline constexpr int kMaxIncludeDepth = 10;

// Parses a [databases] value ("host=... port=... dbname=..."); err names the bad key.
[[nodiscard]] bool parse_database_entry(std::string_view value, DatabaseEntry& out,
                                        std::string& err);
[[nodiscard]] bool parse_user_entry(std::string_view value, UserEntry& out, std::string& err);
[[nodiscard]] bool parse_peer_entry(std::string_view value, PeerEntry& out, std::string& err);

// Splits a comma-separated list, trimming blanks around items; empty items are dropped.
std::vector<std::string> split_list(std::string_view list);

// The settings table, in SHOW CONFIG order (alphabetical).
enum class SettingType : uint8_t {
    Int,
    Bool,
    Secs,  // float seconds in the file, usec_t in Settings
    Str,
    Enum,
    List,
    Octal,  // unix_socket_mode
};
struct SettingInfo {
    const char* name;
    SettingType type;
    const char* default_text;  // as SHOW CONFIG prints it; never null ("" for PgBouncer's NULL)
    bool reloadable;           // SHOW CONFIG changeable=yes
    // PgBouncer's default is NULL (auth_file, auth_user, user, verbose ...): its SHOW CONFIG
    // prints NULL in the default column, and in the value column while a Str stays empty.
    bool null_default = false;
};
std::span<const SettingInfo> settings_table() noexcept;
// The row for `name` (case-insensitive; "service_name" finds job_name), or nullptr.
const SettingInfo* find_setting(std::string_view name) noexcept;
// Current value as SHOW CONFIG prints it.
std::string setting_value_text(const Settings& s, const SettingInfo& info);
// Sets one [pgbouncer] key from its text form (file, admin SET). Case-insensitive key lookup.
// err says what was wrong ("invalid value", "unknown parameter").
[[nodiscard]] bool apply_setting(Settings& s, std::string_view key, std::string_view value,
                                 std::string& err);

}  // namespace sluice
