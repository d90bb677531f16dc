// Unit tests for the config module: PgBouncer's file grammar, %include, typed settings,
// [databases]/[users]/[peers] values and the SHOW CONFIG table.
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
extern "C" {
#include <cmocka.h>
}

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

#include "sluice/config/config.h"

namespace {

using sluice::Config;

// A file under /tmp, removed again when the object goes out of scope.
class TempFile {
public:
    TempFile() {
        char name[] = "/tmp/sluice_test_config_XXXXXX";
        int fd = mkstemp(name);
        assert_true(fd >= 0);
        close(fd);
        path_ = name;
    }
    explicit TempFile(std::string_view text) : TempFile() { write(text); }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    ~TempFile() { unlink(path_.c_str()); }

    void write(std::string_view text) const {
        std::FILE* f = std::fopen(path_.c_str(), "wb");
        assert_non_null(f);
        assert_int_equal(std::fwrite(text.data(), 1, text.size(), f), text.size());
        std::fclose(f);
    }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.compare(0, prefix.size(), prefix) == 0;
}

bool contains(const std::string& s, std::string_view part) {
    return s.find(part) != std::string::npos;
}

// Loads `text` from a temp file; expects success.
Config load_ok(std::string_view text) {
    TempFile f(text);
    Config cfg;
    std::string err;
    bool ok = sluice::load_config(f.path(), cfg, err);
    if (!ok)
        print_error("unexpected load error: %s\n", err.c_str());
    assert_true(ok);
    assert_true(err.empty());
    return cfg;
}

// Loads `text`; expects failure with an error that starts "<file>:<line>: <rest_prefix>".
void load_fails(std::string_view text, int line, const std::string& rest_prefix) {
    TempFile f(text);
    Config cfg;
    std::string err;
    assert_false(sluice::load_config(f.path(), cfg, err));
    std::string want = f.path() + ":" + std::to_string(line) + ": " + rest_prefix;
    if (!starts_with(err, want))
        print_error("error \"%s\" does not start with \"%s\"\n", err.c_str(), want.c_str());
    assert_true(starts_with(err, want));
}

// PgBouncer's wording alone: "syntax error in configuration (<file>:<line>), stopping loading".
void syntax_fails(std::string_view text, int line) {
    TempFile f(text);
    Config cfg;
    std::string err;
    assert_false(sluice::load_config(f.path(), cfg, err));
    std::string want = "syntax error in configuration (" + f.path() + ":" + std::to_string(line) +
                       "), stopping loading";
    if (err != want)
        print_error("error \"%s\" is not \"%s\"\n", err.c_str(), want.c_str());
    assert_string_equal(err.c_str(), want.c_str());
}

const sluice::DatabaseEntry* find_db(const Config& cfg, std::string_view name) {
    for (const auto& db : cfg.databases) {
        if (db.name == name)
            return &db;
    }
    return nullptr;
}

// ---- grammar ---------------------------------------------------------------------------

void test_comments_and_no_inline_comments(void**) {
    Config cfg = load_ok("; PgBouncer-style comment\n"
                         "# another comment\n"
                         "   ; indented comment\n"
                         "\n"
                         "[pgbouncer]\n"
                         "auth_user = bob ;x\n"
                         "logfile = /var/log/pg#bouncer.log   \n"
                         "[databases]\n"
                         "db1 = host=h1 password='se cret ;x#y'\n"
                         "db2 = host=h2 password=abc#def;ghi\n");
    assert_string_equal(cfg.settings.auth_user.c_str(), "bob ;x");
    assert_string_equal(cfg.settings.logfile.c_str(), "/var/log/pg#bouncer.log");
    assert_int_equal(cfg.databases.size(), 2);
    assert_string_equal(cfg.databases[0].password.c_str(), "se cret ;x#y");
    assert_string_equal(cfg.databases[1].password.c_str(), "abc#def;ghi");
}

void test_indented_keys_blanks_and_crlf(void**) {
    Config cfg = load_ok("[pgbouncer]\r\n"
                         "    listen_port=7001\r\n"
                         "\tpool_mode\t=\ttransaction\r\n"
                         "admin_users =    \r\n"
                         "[databases] ; trailing comment after a section is fine\n"
                         "  app = host=10.0.0.1\n");
    assert_int_equal(cfg.settings.listen_port, 7001);
    assert_int_equal(static_cast<int>(cfg.settings.pool_mode),
                     static_cast<int>(sluice::PoolMode::Transaction));
    assert_string_equal(cfg.settings.admin_users.c_str(), "");
    assert_int_equal(cfg.databases.size(), 1);
    assert_string_equal(cfg.databases[0].host.c_str(), "10.0.0.1");
}

void test_quoted_key(void**) {
    Config cfg = load_ok("[pgbouncer]\n"
                         "[databases]\n"
                         "'my db!' = host=a dbname=real\n"
                         "under_score.dot-dash = host=b\n");
    assert_int_equal(cfg.databases.size(), 2);
    assert_string_equal(cfg.databases[0].name.c_str(), "my db!");
    assert_string_equal(cfg.databases[0].dbname.c_str(), "real");
    assert_string_equal(cfg.databases[1].name.c_str(), "under_score.dot-dash");
}

void test_long_lines(void**) {
    std::string query(1990, 'x');
    std::string long_query = "SELECT " + std::string(300, 'a') + " FROM t WHERE u=$1";
    std::string text = "[pgbouncer]\nauth_query = " + long_query + "\n[databases]\nbig = host=h " +
                       "connect_query='" + query + "'\n";
    assert_true(text.size() > 2000);
    Config cfg = load_ok(text);
    assert_string_equal(cfg.settings.auth_query.c_str(), long_query.c_str());
    assert_int_equal(cfg.databases.size(), 1);
    assert_string_equal(cfg.databases[0].connect_query.c_str(), query.c_str());
}

void test_syntax_errors(void**) {
    load_fails("[pgbouncer]\nlisten_port 6432\n", 2, "listen_port: syntax error");
    load_fails("[pgbouncer]\nlisten_port: 6432\n", 2, "listen_port: syntax error");
    syntax_fails("[pgbouncer\n", 1);
    syntax_fails("[databases]\n'unterminated = host=x\n", 2);
    syntax_fails("[pgbouncer]\n\n= 5\n", 3);
    load_fails("listen_port = 1\n", 1, "listen_port: value without section");
}

// ---- %include --------------------------------------------------------------------------

void test_include_two_levels(void**) {
    TempFile inner("[pgbouncer]\nmax_client_conn = 321\n[databases]\ninner = host=i\n");
    TempFile middle("[databases]\nmiddle = host=m\n%include " + inner.path() +
                    "\n[pgbouncer]\ndefault_pool_size = 7\n");
    TempFile main_file("[pgbouncer]\nmax_client_conn = 5\n%include   " + middle.path() +
                       "  \n[databases]\nlast = host=l\n");
    Config cfg;
    std::string err;
    assert_true(sluice::load_config(main_file.path(), cfg, err));
    assert_int_equal(cfg.settings.max_client_conn, 321);  // the include came later
    assert_int_equal(cfg.settings.default_pool_size, 7);
    assert_int_equal(cfg.databases.size(), 3);
    assert_string_equal(cfg.databases[0].name.c_str(), "middle");
    assert_string_equal(cfg.databases[1].name.c_str(), "inner");
    assert_string_equal(cfg.databases[2].name.c_str(), "last");
    assert_string_equal(cfg.settings.conffile.c_str(), main_file.path().c_str());
}

void test_include_keeps_current_section(void**) {
    // As in libusual: an included file continues in the includer's current section, and a
    // section it opens stays current after the %include line.
    TempFile inc("extra = host=x\n[users]\n");
    TempFile main_file("[pgbouncer]\n[databases]\n%include " + inc.path() +
                       "\nbob = pool_size=1\n");
    Config cfg;
    std::string err;
    assert_true(sluice::load_config(main_file.path(), cfg, err));
    assert_int_equal(cfg.databases.size(), 1);
    assert_string_equal(cfg.databases[0].name.c_str(), "extra");
    assert_int_equal(cfg.users.size(), 1);
    assert_string_equal(cfg.users[0].name.c_str(), "bob");
}

// PgBouncer reads a directory as an empty file (libusual): the rest of the file loads. sluice
// adds a warning naming it.
void test_include_of_a_directory_reads_nothing(void**) {
    char dir[] = "/tmp/sluice_test_config_dir_XXXXXX";
    assert_non_null(mkdtemp(dir));
    std::string inside = std::string(dir) + "/x.ini";  // not read
    std::FILE* x = std::fopen(inside.c_str(), "wb");
    assert_non_null(x);
    std::fputs("listen_port = 7011\n", x);
    std::fclose(x);
    TempFile f(std::string("[pgbouncer]\n%include ") + dir + "\ndefault_pool_size = 4\n");
    Config cfg;
    std::string err;
    bool ok = sluice::load_config(f.path(), cfg, err);
    unlink(inside.c_str());
    rmdir(dir);
    assert_true(ok);
    assert_int_equal(cfg.settings.default_pool_size, 4);
    assert_int_equal(cfg.settings.listen_port, 6432);
    assert_int_equal(cfg.warnings.size(), 1);
    std::string want = f.path() + ":2: %include " + dir + ": is a directory, nothing read from it";
    assert_string_equal(cfg.warnings[0].c_str(), want.c_str());
    assert_true(load_ok("[pgbouncer]\n").warnings.empty());
}

void test_include_missing_is_an_error(void**) {
    TempFile main_file("[pgbouncer]\nlisten_port = 7002\n\n%include /nonexistent/sluice.ini\n"
                       "max_client_conn = 9\n");
    Config cfg;
    std::string err;
    assert_false(sluice::load_config(main_file.path(), cfg, err));
    assert_string_equal(err.c_str(),
                        ("could not load file \"/nonexistent/sluice.ini\": No such file or "
                         "directory\nerror processing include file in configuration (" +
                         main_file.path() + ":4), stopping loading")
                            .c_str());
    assert_int_equal(cfg.settings.listen_port, 7002);  // applied before the failure
    assert_int_equal(cfg.settings.max_client_conn, 100);
}

void test_include_error_names_included_file(void**) {
    TempFile inc("[pgbouncer]\n\nlisten_port = 0\n");
    TempFile main_file("[pgbouncer]\n%include " + inc.path() + "\n");
    Config cfg;
    std::string err;
    assert_false(sluice::load_config(main_file.path(), cfg, err));
    assert_true(starts_with(err, inc.path() + ":3: listen_port: invalid value \"0\""));
}

void test_include_depth_limit(void**) {
    // A chain main -> f[0] -> ... -> f[n-1]; the last file sets a value.
    auto chain = [](int n, std::string& err, Config& cfg) {
        std::vector<TempFile> files(static_cast<size_t>(n));
        for (size_t i = 0; i < files.size(); i++) {
            if (i + 1 < files.size())
                files[i].write("%include " + files[i + 1].path() + "\n");
            else
                files[i].write("[pgbouncer]\nlisten_port = 7777\n");
        }
        TempFile main_file("%include " + files[0].path() + "\n");
        return sluice::load_config(main_file.path(), cfg, err);
    };
    Config cfg;
    std::string err;
    assert_true(chain(sluice::kMaxIncludeDepth, err, cfg));
    assert_int_equal(cfg.settings.listen_port, 7777);
    assert_false(chain(sluice::kMaxIncludeDepth + 1, err, cfg));
    assert_true(contains(err, "nesting too deep"));

    TempFile self;
    self.write("%include " + self.path() + "\n");
    assert_false(sluice::load_config(self.path(), cfg, err));
    assert_true(contains(err, "nesting too deep"));
}

// libusual's rule: a file that parses but never opens [pgbouncer] is refused with its one
// line (a truncated or emptied file must not run, or RELOAD, on the built-in defaults). A
// syntax or value error comes first; an included file may hold the header.
void test_main_section_required(void**) {
    const char* want = "load_init_file: main section missing from config file";
    for (std::string_view text :
         {"", "\n; only a comment\n", "[databases]\napp = host=a\n", "[users]\n[peers]\n"}) {
        TempFile f(text);
        Config cfg;
        std::string err;
        assert_false(sluice::load_config(f.path(), cfg, err));
        assert_string_equal(err.c_str(), want);
    }
    load_fails("[databases]\napp = host=a hots=b\n", 2, "app: unrecognized connection");
    syntax_fails("[databases]\n'unterminated = host=x\n", 2);
    Config cfg = load_ok("[pgbouncer]\n");  // an empty main section is enough
    assert_int_equal(cfg.settings.listen_port, 6432);
    TempFile inc("[pgbouncer]\nlisten_port = 7010\n");
    cfg = load_ok("[databases]\napp = host=a\n%include " + inc.path() + "\n");
    assert_int_equal(cfg.settings.listen_port, 7010);
}

// Which [pgbouncer] keys the file set, whatever their value, case or alias.
void test_keys_set_in_file(void**) {
    Config cfg = load_ok("[pgbouncer]\nAuth_File =\nservice_name = x\nlisten_port = 6432\n");
    assert_true(sluice::set_in_file(cfg, "auth_file"));
    assert_true(cfg.settings.auth_file.empty());
    assert_true(sluice::set_in_file(cfg, "job_name"));
    assert_true(sluice::set_in_file(cfg, "listen_port"));  // to its default value
    assert_false(sluice::set_in_file(cfg, "auth_user"));
    assert_false(sluice::set_in_file(load_ok("[pgbouncer]\n"), "auth_file"));
}

void test_missing_main_file(void**) {
    Config cfg;
    std::string err;
    assert_false(sluice::load_config("/nonexistent/pgbouncer.ini", cfg, err));
    assert_string_equal(err.c_str(),
                        "could not load file \"/nonexistent/pgbouncer.ini\": No such file or "
                        "directory");
}

// ---- errors name file, line and key ----------------------------------------------------

void test_value_errors(void**) {
    load_fails("[pgbouncer]\nlisten_port = abc\n", 2, "listen_port: invalid value \"abc\"");
    {  // then PgBouncer's line, naming the same place
        TempFile f("[pgbouncer]\nlisten_port = abc\n");
        Config cfg;
        std::string err;
        assert_false(sluice::load_config(f.path(), cfg, err));
        assert_true(contains(err, "\ninvalid value \"abc\" for parameter listen_port in "
                                  "configuration (" + f.path() + ":2)"));
        TempFile g("[mystery]\n");
        assert_false(sluice::load_config(g.path(), cfg, err));
        assert_true(contains(err, "\ninvalid section \"mystery\" in configuration (" +
                                      g.path() + ":1)"));
    }
    load_fails("[pgbouncer]\n; c\nlisten_port = 70000\n", 3,
               "listen_port: invalid value \"70000\": out of range 1..65535");
    load_fails("[pgbouncer]\npkt_buf = 100\n", 2, "pkt_buf: invalid value \"100\": out of range");
    load_fails("[pgbouncer]\ndefault_pool_size = -1\n", 2, "default_pool_size: invalid value");
    load_fails("[pgbouncer]\npool_mode = sometimes\n", 2,
               "pool_mode: invalid value \"sometimes\": expected one of session, transaction, "
               "statement");
    load_fails("[pgbouncer]\nauth_type = kerberos\n", 2, "auth_type: invalid value");
    load_fails("[pgbouncer]\nserver_tls_sslmode = maybe\n", 2, "server_tls_sslmode: invalid");
    load_fails("[pgbouncer]\nserver_lifetime = -5\n", 2, "server_lifetime: invalid value");
    load_fails("[pgbouncer]\nquery_timeout = 5 hours\n", 2, "query_timeout: invalid value");
    load_fails("[pgbouncer]\nserver_lifetime = inf\n", 2, "server_lifetime: invalid value \"inf\"");
    load_fails("[pgbouncer]\nquery_timeout = nan\n", 2, "query_timeout: invalid value");
    load_fails("[pgbouncer]\nquery_timeout = 0x\n", 2, "query_timeout: invalid value");
    load_fails("[pgbouncer]\nquery_timeout = 0x-1\n", 2, "query_timeout: invalid value");
    load_fails("[pgbouncer]\nlog_stats = maybe\n", 2, "log_stats: invalid value");
    load_fails("[pgbouncer]\nno_such_setting = 1\n", 2, "no_such_setting: unknown parameter");
    load_fails("[pgbouncer]\n[mystery]\n", 2, "unknown section [mystery]");
    load_fails("[databases]\napp = host=a hots=b\n", 2,
               "app: unrecognized connection parameter: hots");
    load_fails("[databases]\napp = host=a port=0\n", 2, "app: port: invalid value \"0\"");
    load_fails("[databases]\napp = host=a pool_mode=fast\n", 2, "app: invalid pool mode: fast");
    load_fails("[databases]\napp = host=a port=\n", 2, "app: syntax error in connection string");
    load_fails("[databases]\npgbouncer = host=a\n", 2, "pgbouncer: database name \"pgbouncer\"");
    load_fails("[users]\nbob = pool_size=x\n", 2, "bob: pool_size: invalid value \"x\"");
    load_fails("[users]\nbob = colour=blue\n", 2, "bob: unrecognized user parameter: colour");
    load_fails("[peers]\n1 = port=6433\n", 2, "1: host was not provided for peer 1");
    load_fails("[peers]\nzero = host=x\n", 2, "zero: peer id must be an integer");
    load_fails("[peers]\n2 = host=x weight=3\n", 2, "2: unrecognized connection parameter");
}

void test_load_is_not_transactional(void**) {
    TempFile f("[pgbouncer]\nlisten_port = 7003\nmax_client_conn = oops\ndefault_pool_size = 3\n");
    Config cfg;
    std::string err;
    assert_false(sluice::load_config(f.path(), cfg, err));
    assert_int_equal(cfg.settings.listen_port, 7003);
    assert_int_equal(cfg.settings.default_pool_size, 20);
}

// ---- typed values ----------------------------------------------------------------------

void test_typed_settings(void**) {
    Config cfg = load_ok("[pgbouncer]\n"
                         "query_timeout = 1.5\n"
                         "server_lifetime = 0.25\n"
                         "idle_transaction_timeout = 250ms\n"
                         "client_idle_timeout = 2min\n"
                         "server_idle_timeout = 30s\n"
                         "dns_max_ttl = 1e2\n"
                         "server_connect_timeout = 0x10\n"
                         "server_login_retry = 0X1.8\n"
                         "log_connections = off\n"
                         "log_stats = No\n"
                         "server_round_robin = TRUE\n"
                         "disable_pqexec = 1\n"
                         "unix_socket_mode = 0700\n"
                         "max_packet_size = 4294967295\n"
                         "tcp_keepcnt = 0x10\n"
                         "auth_type = SCRAM-SHA-256\n"
                         "client_tls_sslmode = Verify-Full\n"
                         "pool_mode = STATEMENT\n"
                         "service_name = mybouncer\n");
    const auto& s = cfg.settings;
    assert_int_equal(s.query_timeout, 1500000);
    assert_int_equal(s.server_lifetime, 250000);
    assert_int_equal(s.idle_transaction_timeout, 250000);
    assert_int_equal(s.client_idle_timeout, 120000000);
    assert_int_equal(s.server_idle_timeout, 30000000);
    assert_int_equal(s.dns_max_ttl, 100000000);
    assert_int_equal(s.server_connect_timeout, 16000000);
    assert_int_equal(s.server_login_retry, 1500000);
    assert_false(s.log_connections);
    assert_false(s.log_stats);
    assert_true(s.server_round_robin);
    assert_true(s.disable_pqexec);
    assert_int_equal(s.unix_socket_mode, 0700);
    assert_int_equal(s.max_packet_size, 4294967295u);
    assert_int_equal(s.tcp_keepcnt, 16);
    assert_int_equal(static_cast<int>(s.auth_type),
                     static_cast<int>(sluice::AuthType::ScramSha256));
    assert_int_equal(static_cast<int>(s.client_tls_sslmode),
                     static_cast<int>(sluice::SslMode::VerifyFull));
    assert_int_equal(static_cast<int>(s.pool_mode), static_cast<int>(sluice::PoolMode::Statement));
    assert_string_equal(s.job_name.c_str(), "mybouncer");

    const auto* qt = sluice::find_setting("query_timeout");
    assert_non_null(qt);
    assert_string_equal(sluice::setting_value_text(s, *qt).c_str(), "1.5");
    assert_string_equal(
        sluice::setting_value_text(s, *sluice::find_setting("unix_socket_mode")).c_str(), "0700");
    assert_string_equal(sluice::setting_value_text(s, *sluice::find_setting("auth_type")).c_str(),
                        "scram-sha-256");
    assert_string_equal(sluice::setting_value_text(s, *sluice::find_setting("log_stats")).c_str(),
                        "0");
}

// ---- [databases], [users], [peers] -----------------------------------------------------

void test_database_every_key(void**) {
    sluice::DatabaseEntry db;
    std::string err;
    bool ok = sluice::parse_database_entry(
        "dbname=real_db host=db1.example.com,db2.example.com port=5433 user=app "
        "password='it''s a secret' auth_user=authu auth_query='SELECT usename, passwd FROM "
        "pgbouncer.get_auth($1)' auth_dbname=authdb pool_size=30 min_pool_size=2 "
        "reserve_pool=4 max_db_connections=50 max_db_client_connections=500 server_lifetime=1200 "
        "pool_mode=transaction connect_query='SET search_path = app' load_balance_hosts=disable "
        "client_encoding=UTF8 datestyle='ISO, MDY' timezone=UTC application_name=sluice_app "
        "query_wait_timeout=30",
        db, err);
    if (!ok)
        print_error("%s\n", err.c_str());
    assert_true(ok);
    assert_string_equal(db.dbname.c_str(), "real_db");
    assert_string_equal(db.host.c_str(), "db1.example.com,db2.example.com");
    assert_int_equal(db.port, 5433);
    assert_string_equal(db.user.c_str(), "app");
    assert_string_equal(db.password.c_str(), "it's a secret");
    assert_string_equal(db.auth_user.c_str(), "authu");
    assert_string_equal(db.auth_query.c_str(),
                        "SELECT usename, passwd FROM pgbouncer.get_auth($1)");
    assert_string_equal(db.auth_dbname.c_str(), "authdb");
    assert_int_equal(db.pool_size, 30);
    assert_int_equal(db.min_pool_size, 2);
    assert_int_equal(db.reserve_pool_size, 4);
    assert_int_equal(db.max_db_connections, 50);
    assert_int_equal(db.max_db_client_connections, 500);
    assert_int_equal(db.server_lifetime, 1200);
    assert_true(db.pool_mode.has_value());
    assert_int_equal(static_cast<int>(*db.pool_mode),
                     static_cast<int>(sluice::PoolMode::Transaction));
    assert_string_equal(db.connect_query.c_str(), "SET search_path = app");
    assert_string_equal(db.load_balance_hosts.c_str(), "disable");
    assert_string_equal(db.client_encoding.c_str(), "UTF8");
    assert_string_equal(db.datestyle.c_str(), "ISO, MDY");
    assert_string_equal(db.timezone.c_str(), "UTC");
    assert_string_equal(db.application_name.c_str(), "sluice_app");
    assert_int_equal(db.query_wait_timeout, 30);

    sluice::DatabaseEntry d2;
    assert_true(sluice::parse_database_entry("reserve_pool_size=3 server_lifetime=0", d2, err));
    assert_int_equal(d2.reserve_pool_size, 3);
    assert_int_equal(d2.server_lifetime, -1);  // 0 means "use the global value"

    sluice::DatabaseEntry d3;  // empty value: all defaults, unix socket
    assert_true(sluice::parse_database_entry("", d3, err));
    assert_string_equal(d3.host.c_str(), "");
    assert_int_equal(d3.port, 5432);
    assert_int_equal(d3.pool_size, -1);
    assert_false(d3.pool_mode.has_value());

    sluice::DatabaseEntry d4;
    assert_true(sluice::parse_database_entry("  host = spaced   password=''''  ", d4, err));
    assert_string_equal(d4.host.c_str(), "spaced");
    assert_string_equal(d4.password.c_str(), "'");

    sluice::DatabaseEntry d5;
    assert_false(sluice::parse_database_entry("password='open", d5, err));
    assert_string_equal(err.c_str(), "syntax error in connection string");
    assert_false(sluice::parse_database_entry("password='a'b", d5, err));
    assert_false(sluice::parse_database_entry("password=''", d5, err));
    assert_false(sluice::parse_database_entry("=x", d5, err));
    assert_false(sluice::parse_database_entry("load_balance_hosts=random", d5, err));
    assert_string_equal(err.c_str(), "invalid load_balance_hosts: random");
}

void test_fallback_and_duplicates(void**) {
    Config cfg = load_ok("[pgbouncer]\n"
                         "[databases]\n"
                         "app = host=a\n"
                         "* = host=fallback.example.com port=6000\n"
                         "app = host=b pool_size=3\n");
    assert_int_equal(cfg.databases.size(), 2);
    const auto* app = find_db(cfg, "app");
    assert_non_null(app);
    assert_string_equal(app->host.c_str(), "b");
    assert_int_equal(app->pool_size, 3);
    const auto* star = find_db(cfg, "*");
    assert_non_null(star);
    assert_string_equal(star->host.c_str(), "fallback.example.com");
    assert_int_equal(star->port, 6000);
    assert_string_equal(star->dbname.c_str(), "");
}

void test_users_and_peers(void**) {
    Config cfg = load_ok("[pgbouncer]\n"
                         "[users]\n"
                         "alice = pool_mode=session pool_size=4 reserve_pool_size=1 "
                         "max_user_connections=10 max_user_client_connections=100 "
                         "query_timeout=30 idle_transaction_timeout=60 transaction_timeout=90 "
                         "client_idle_timeout=600 query_wait_timeout=15\n"
                         "bob =\n"
                         "[peers]\n"
                         "1 = host=/tmp/peer1\n"
                         "2 = host=10.0.0.2 port=6433 pool_size=8\n");
    assert_int_equal(cfg.users.size(), 2);
    const auto& a = cfg.users[0];
    assert_string_equal(a.name.c_str(), "alice");
    assert_int_equal(static_cast<int>(*a.pool_mode), static_cast<int>(sluice::PoolMode::Session));
    assert_int_equal(a.pool_size, 4);
    assert_int_equal(a.reserve_pool_size, 1);
    assert_int_equal(a.max_user_connections, 10);
    assert_int_equal(a.max_user_client_connections, 100);
    assert_int_equal(a.query_timeout, 30);
    assert_int_equal(a.idle_transaction_timeout, 60);
    assert_int_equal(a.transaction_timeout, 90);
    assert_int_equal(a.client_idle_timeout, 600);
    assert_int_equal(a.query_wait_timeout, 15);
    assert_string_equal(cfg.users[1].name.c_str(), "bob");
    assert_false(cfg.users[1].pool_mode.has_value());
    assert_int_equal(cfg.users[1].pool_size, -1);

    assert_int_equal(cfg.peers.size(), 2);
    assert_int_equal(cfg.peers[0].peer_id, 1);
    assert_string_equal(cfg.peers[0].host.c_str(), "/tmp/peer1");
    assert_int_equal(cfg.peers[0].port, 6432);
    assert_int_equal(cfg.peers[0].pool_size, -1);
    assert_int_equal(cfg.peers[1].peer_id, 2);
    assert_int_equal(cfg.peers[1].port, 6433);
    assert_int_equal(cfg.peers[1].pool_size, 8);

    // [users] timeouts are whole seconds, unlike the float globals
    sluice::UserEntry u;
    std::string err;
    assert_false(sluice::parse_user_entry("query_timeout=1.5", u, err));
    assert_string_equal(err.c_str(), "query_timeout: invalid value \"1.5\": not an integer");
}

// ---- settings table --------------------------------------------------------------------

void test_settings_table_sorted_and_complete(void**) {
    static const char* const kExpected[] = {
        "admin_users",
        "application_name_add_host",
        "auth_dbname",
        "auth_file",
        "auth_hba_file",
        "auth_ident_file",
        "auth_ldap_options",
        "auth_query",
        "auth_type",
        "auth_user",
        "autodb_idle_timeout",
        "cancel_wait_timeout",
        "client_idle_timeout",
        "client_login_timeout",
        "client_tls13_ciphers",
        "client_tls_ca_file",
        "client_tls_cert_file",
        "client_tls_ciphers",
        "client_tls_dheparams",
        "client_tls_ecdhcurve",
        "client_tls_key_file",
        "client_tls_protocols",
        "client_tls_sslmode",
        "conffile",
        "default_pool_size",
        "disable_pqexec",
        "dns_max_ttl",
        "dns_nxdomain_ttl",
        "dns_zone_check_period",
        "idle_transaction_timeout",
        "ignore_startup_parameters",
        "job_name",
        "listen_addr",
        "listen_backlog",
        "listen_port",
        "log_connections",
        "log_disconnections",
        "log_pooler_errors",
        "log_stats",
        "logfile",
        "login_notify_message",
        "max_client_conn",
        "max_db_client_connections",
        "max_db_connections",
        "max_packet_size",
        "max_prepared_statements",
        "max_user_client_connections",
        "max_user_connections",
        "metrics_listen_addr",  // sluice-only
        "metrics_listen_port",  // sluice-only
        "min_pool_size",
        "peer_id",
        "pidfile",
        "pkt_buf",
        "pool_idle_timeout",
        "pool_mode",
        "query_timeout",
        "query_wait_notify",
        "query_wait_timeout",
        "reserve_pool_size",
        "reserve_pool_timeout",
        "resolv_conf",
        "sbuf_loopcnt",
        "scram_iterations",
        "server_check_delay",
        "server_check_query",
        "server_connect_timeout",
        "server_fast_close",
        "server_idle_timeout",
        "server_lifetime",
        "server_login_retry",
        "server_reset_query",
        "server_reset_query_always",
        "server_round_robin",
        "server_tls13_ciphers",
        "server_tls_ca_file",
        "server_tls_cert_file",
        "server_tls_ciphers",
        "server_tls_key_file",
        "server_tls_protocols",
        "server_tls_sslmode",
        "so_reuseport",
        "stats_period",
        "stats_users",
        "suspend_timeout",
        "syslog",
        "syslog_facility",
        "syslog_ident",
        "tcp_defer_accept",
        "tcp_keepalive",
        "tcp_keepcnt",
        "tcp_keepidle",
        "tcp_keepintvl",
        "tcp_socket_buffer",
        "tcp_user_timeout",
        "track_extra_parameters",
        "transaction_timeout",
        "unix_socket_dir",
        "unix_socket_group",
        "unix_socket_mode",
        "user",
        "verbose",
    };
    static const std::set<std::string> kNoReload = {
        "disable_pqexec",   "job_name",
        "listen_addr",      "listen_backlog",
        "listen_port",      "metrics_listen_addr",
        "metrics_listen_port", "pidfile",
        "pkt_buf",          "resolv_conf",
        "so_reuseport",     "track_extra_parameters",
        "unix_socket_dir",  "unix_socket_group",
        "unix_socket_mode", "user",
    };
    auto table = sluice::settings_table();
    assert_int_equal(table.size(), std::size(kExpected));
    for (size_t i = 0; i < table.size(); i++) {
        assert_string_equal(table[i].name, kExpected[i]);
        if (i > 0)
            assert_true(std::strcmp(table[i - 1].name, table[i].name) < 0);
        assert_non_null(table[i].default_text);
        assert_int_equal(table[i].reloadable, kNoReload.count(table[i].name) == 0);
    }
}

void test_settings_defaults_match_struct(void**) {
    // SHOW CONFIG of a fresh Settings prints each row's default (NULL defaults print empty
    // for strings; verbose's NULL default stands for 0; conffile is the command-line file).
    sluice::Settings s;
    for (const auto& info : sluice::settings_table()) {
        std::string value = sluice::setting_value_text(s, info);
        if (std::string_view(info.name) == "verbose") {
            assert_string_equal(value.c_str(), "0");
            assert_true(info.null_default);
            continue;
        }
        if (value != info.default_text)
            print_error("%s: value \"%s\" vs default \"%s\"\n", info.name, value.c_str(),
                        info.default_text);
        assert_string_equal(value.c_str(), info.default_text);
        // every row accepts its own default text back
        sluice::Settings t;
        std::string err;
        assert_true(sluice::apply_setting(t, info.name, info.default_text, err));
    }
    assert_string_equal(sluice::find_setting("auth_query")->default_text, s.auth_query.c_str());
    assert_true(sluice::find_setting("auth_file")->null_default);
    assert_false(sluice::find_setting("auth_hba_file")->null_default);
}

void test_apply_setting(void**) {
    sluice::Settings s;
    std::string err;
    assert_true(sluice::apply_setting(s, "POOL_MODE", "Transaction", err));
    assert_int_equal(static_cast<int>(s.pool_mode),
                     static_cast<int>(sluice::PoolMode::Transaction));
    assert_true(sluice::apply_setting(s, "Default_Pool_Size", "42", err));
    assert_int_equal(s.default_pool_size, 42);
    assert_true(sluice::apply_setting(s, "SERVICE_NAME", "svc", err));
    assert_string_equal(s.job_name.c_str(), "svc");
    assert_true(sluice::apply_setting(s, "stats_users", "stats, monitor", err));
    assert_string_equal(s.stats_users.c_str(), "stats, monitor");

    assert_false(sluice::apply_setting(s, "bogus", "1", err));
    assert_string_equal(err.c_str(), "unknown parameter");
    assert_false(sluice::apply_setting(s, "max_client_conn", "10x", err));
    assert_string_equal(err.c_str(), "invalid value \"10x\": not an integer");
    assert_int_equal(s.max_client_conn, 100);  // unchanged on failure

    const auto* js = sluice::find_setting("service_name");
    assert_non_null(js);
    assert_string_equal(js->name, "job_name");
    assert_null(sluice::find_setting("nope"));

    sluice::PoolMode m{};
    assert_true(sluice::parse_pool_mode("SeSsIoN", m));
    assert_string_equal(sluice::pool_mode_name(sluice::PoolMode::Statement), "statement");
    assert_string_equal(sluice::auth_type_name(sluice::AuthType::ScramSha256), "scram-sha-256");
    assert_string_equal(sluice::ssl_mode_name(sluice::SslMode::VerifyCa), "verify-ca");
}

void test_split_list(void**) {
    auto v = sluice::split_list(" admin ,  ops,,\tstats  ,");
    assert_int_equal(v.size(), 3);
    assert_string_equal(v[0].c_str(), "admin");
    assert_string_equal(v[1].c_str(), "ops");
    assert_string_equal(v[2].c_str(), "stats");
    assert_int_equal(sluice::split_list("").size(), 0);
}

// ---- the shipped example files ---------------------------------------------------------

void test_pgbouncer_compat_ini(void**) {
    // Runs from the repo root (make unit); the %include inside is relative to it.
    Config cfg;
    std::string err;
    bool ok = sluice::load_config("pgbouncer-compat.ini", cfg, err);
    if (!ok)
        print_error("%s\n", err.c_str());
    assert_true(ok);
    const auto& s = cfg.settings;
    assert_string_equal(s.listen_addr.c_str(), "127.0.0.1,::1");
    assert_int_equal(s.listen_port, 6432);
    assert_int_equal(static_cast<int>(s.auth_type), static_cast<int>(sluice::AuthType::Md5));
    assert_string_equal(s.auth_file.c_str(), "etc/userlist.txt");
    assert_string_equal(s.auth_hba_file.c_str(), "etc/pgbouncer-hba.conf");
    assert_int_equal(static_cast<int>(s.pool_mode),
                     static_cast<int>(sluice::PoolMode::Transaction));
    assert_int_equal(s.max_client_conn, 2000);
    assert_int_equal(s.default_pool_size, 25);
    assert_int_equal(s.server_idle_timeout, 300 * 1000000LL);
    assert_int_equal(s.query_wait_timeout, 90 * 1000000LL);
    assert_int_equal(s.reserve_pool_timeout, 2500000);
    assert_string_equal(s.admin_users.c_str(), "postgres, pgbouncer_admin");
    assert_true(contains(s.auth_query, "pgbouncer.get_auth($1)"));

    const auto* app = find_db(cfg, "appdb");
    assert_non_null(app);
    assert_string_equal(app->host.c_str(), "10.20.0.11");
    assert_int_equal(*app->pool_mode == sluice::PoolMode::Transaction, 1);
    const auto* reporting = find_db(cfg, "reporting");  // from the %include
    assert_non_null(reporting);
    assert_string_equal(reporting->password.c_str(), "r3p0rt;ng#'pw");
    const auto* jobs = find_db(cfg, "jobs");
    assert_non_null(jobs);
    assert_string_equal(jobs->connect_query.c_str(), "SET statement_timeout = '15min'");
    assert_non_null(find_db(cfg, "legacy-app.v1"));
    assert_non_null(find_db(cfg, "*"));
    assert_true(cfg.users.size() >= 2);
    assert_string_equal(cfg.users[0].name.c_str(), "etl_loader");
}

void test_sluice_demo_ini(void**) {
    Config cfg;
    std::string err;
    bool ok = sluice::load_config("etc/sluice.ini", cfg, err);
    if (!ok)
        print_error("%s\n", err.c_str());
    assert_true(ok);
    assert_string_equal(cfg.settings.listen_addr.c_str(), "127.0.0.1");
    assert_int_equal(cfg.settings.listen_port, 6432);
    assert_true(cfg.databases.size() >= 1);
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_comments_and_no_inline_comments),
        cmocka_unit_test(test_indented_keys_blanks_and_crlf),
        cmocka_unit_test(test_quoted_key),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_include_two_levels),
        cmocka_unit_test(test_include_keeps_current_section),
        cmocka_unit_test(test_include_of_a_directory_reads_nothing),
        cmocka_unit_test(test_include_missing_is_an_error),
        cmocka_unit_test(test_include_error_names_included_file),
        cmocka_unit_test(test_include_depth_limit),
        cmocka_unit_test(test_main_section_required),
        cmocka_unit_test(test_keys_set_in_file),
        cmocka_unit_test(test_missing_main_file),
        cmocka_unit_test(test_value_errors),
        cmocka_unit_test(test_load_is_not_transactional),
        cmocka_unit_test(test_typed_settings),
        cmocka_unit_test(test_database_every_key),
        cmocka_unit_test(test_fallback_and_duplicates),
        cmocka_unit_test(test_users_and_peers),
        cmocka_unit_test(test_settings_table_sorted_and_complete),
        cmocka_unit_test(test_settings_defaults_match_struct),
        cmocka_unit_test(test_apply_setting),
        cmocka_unit_test(test_split_list),
        cmocka_unit_test(test_pgbouncer_compat_ini),
        cmocka_unit_test(test_sluice_demo_ini),
    };
    return cmocka_run_group_tests_name("config", tests, nullptr, nullptr);
}
