// auth_hba_file / auth_ident_file: every record type, name and address form, methods and
// map=, broken lines (logged with file:line and skipped), @file includes, and the matcher's
// first-match order. Log lines are captured through a logfile; @files live in a temp dir.
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
#include <netinet/in.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/auth/hba.h"
#include "sluice/util/log.h"

namespace {

using sluice::AuthMethod;
using sluice::ConnInfo;
using sluice::HbaConnType;
using sluice::HbaFile;
using sluice::HbaRule;
using sluice::IdentFile;

std::string g_logfile;
std::string g_dir;  // temp dir for hba/@/ident files

std::string read_file(const std::string& path) {
    std::string out;
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f)
        return out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
        out.append(buf, n);
    std::fclose(f);
    return out;
}

void write_file(const std::string& path, const std::string& text) {
    FILE* f = std::fopen(path.c_str(), "wb");
    assert_non_null(f);
    assert_int_equal(std::fwrite(text.data(), 1, text.size(), f), text.size());
    std::fclose(f);
}

size_t log_mark() {
    return read_file(g_logfile).size();
}

std::string log_since(size_t mark) {
    return read_file(g_logfile).substr(mark);
}

bool contains(const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
}

// Parses hba text as if it were the file <g_dir>/hba.conf; returns what was logged.
std::string parse_hba(const std::string& text, HbaFile& hba, const IdentFile& ident = {}) {
    size_t mark = log_mark();
    hba.parse(text, g_dir + "/hba.conf", ident);
    return log_since(mark);
}

ConnInfo tcp(const char* addr, bool tls = false) {
    ConnInfo ci;
    assert_true(sluice::conn_info_set_addr(ci, addr));
    ci.tls = tls;
    return ci;
}

ConnInfo local_conn() {
    ConnInfo ci;
    ci.unix_socket = true;
    return ci;
}

// Method of the matching rule, or "none".
std::string eval(const HbaFile& hba, const ConnInfo& ci, const char* db, const char* user) {
    const HbaRule* r = hba.match(ci, db, user);
    return r ? sluice::auth_method_name(r->method) : "none";
}

int setup(void**) {
    char path[] = "/tmp/sluice_hba_log_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    close(fd);
    g_logfile = path;
    char dir[] = "/tmp/sluice_hba_dir_XXXXXX";
    if (!mkdtemp(dir))
        return -1;
    g_dir = dir;
    sluice::LogConfig cfg;
    cfg.quiet = true;
    cfg.logfile = g_logfile;
    return sluice::log_configure(cfg) ? 0 : -1;
}

int teardown(void**) {
    sluice::LogConfig cfg;
    static_cast<void>(sluice::log_configure(cfg));
    unlink(g_logfile.c_str());
    std::string cmd = "rm -rf '" + g_dir + "'";
    return std::system(cmd.c_str()) == 0 ? 0 : -1;
}

void test_record_types(void**) {
    HbaFile hba;
    std::string log = parse_hba("# comment line\n"
                                "\n"
                                "local     all  all                  peer\n"
                                "host      all  all  10.0.0.0/8      md5   # trailing comment\n"
                                "hostssl   all  all  192.168.0.0/16  cert\n"
                                "hostnossl all  all  192.168.0.0/16  password\n",
                                hba);
    assert_string_equal(log.c_str(), "");
    assert_int_equal(hba.size(), 4);
    const auto& r = hba.rules();
    assert_int_equal(static_cast<int>(r[0].type), static_cast<int>(HbaConnType::Local));
    assert_int_equal(static_cast<int>(r[1].type), static_cast<int>(HbaConnType::Host));
    assert_int_equal(static_cast<int>(r[2].type), static_cast<int>(HbaConnType::HostSsl));
    assert_int_equal(static_cast<int>(r[3].type), static_cast<int>(HbaConnType::HostNoSsl));
    assert_int_equal(r[0].line, 3);
    assert_int_equal(r[3].line, 6);

    assert_string_equal(eval(hba, local_conn(), "db", "u").c_str(), "peer");
    assert_string_equal(eval(hba, tcp("10.1.2.3"), "db", "u").c_str(), "md5");
    assert_string_equal(eval(hba, tcp("10.1.2.3", true), "db", "u").c_str(),
                        "md5");  // host: either
    assert_string_equal(eval(hba, tcp("192.168.1.1", true), "db", "u").c_str(), "cert");
    assert_string_equal(eval(hba, tcp("192.168.1.1", false), "db", "u").c_str(), "password");
    assert_string_equal(eval(hba, tcp("172.16.0.1"), "db", "u").c_str(), "none");
    assert_string_equal(eval(hba, tcp("::1"), "db", "u").c_str(), "none");
}

void test_methods(void**) {
    HbaFile hba;
    std::string log =
        parse_hba("host d1 all all trust\n"
                  "host d2 all all reject\n"
                  "host d3 all all md5\n"
                  "host d4 all all password\n"
                  "host d5 all all scram-sha-256\n"
                  "host d6 all all cert\n"
                  "local d7 all peer\n"
                  "host d8 all all ldap ldapserver=ldap.example.net ldapprefix=\"cn=\"\n",
                  hba);
    assert_string_equal(log.c_str(), "");
    assert_int_equal(hba.size(), 8);
    const char* names[] = {"trust",         "reject", "md5",  "password",
                           "scram-sha-256", "cert",   "peer", "ldap"};
    for (size_t i = 0; i < 8; ++i)
        assert_string_equal(sluice::auth_method_name(hba.rules()[i].method), names[i]);
    assert_string_equal(hba.rules()[7].ldap_options.c_str(),
                        "ldapserver=ldap.example.net ldapprefix=\"cn=\"");
    assert_string_equal(eval(hba, tcp("1.2.3.4"), "d5", "x").c_str(), "scram-sha-256");
    assert_string_equal(eval(hba, local_conn(), "d7", "x").c_str(), "peer");
    assert_string_equal(eval(hba, local_conn(), "d6", "x").c_str(), "none");
}

void test_addresses(void**) {
    HbaFile hba;
    std::string log = parse_hba("host a all 127.0.0.1/32 trust\n"
                                "host b all 10.1.0.0 255.255.0.0 trust\n"
                                "host c all ::1/128 trust\n"
                                "host d all fe80::/10 trust\n"
                                "host e all 2001:db8:: ffff:ffff:: trust\n"
                                "host f all all trust\n"
                                "host g all 0.0.0.0/0 trust\n"
                                "host h all ::/0 trust\n",
                                hba);
    assert_string_equal(log.c_str(), "");
    assert_int_equal(hba.size(), 8);
    assert_non_null(hba.match(tcp("127.0.0.1"), "a", "u"));
    assert_null(hba.match(tcp("127.0.0.2"), "a", "u"));
    assert_null(hba.match(tcp("::1"), "a", "u"));  // families never mix
    assert_non_null(hba.match(tcp("10.1.255.7"), "b", "u"));
    assert_null(hba.match(tcp("10.2.0.1"), "b", "u"));
    assert_non_null(hba.match(tcp("::1"), "c", "u"));
    assert_null(hba.match(tcp("::2"), "c", "u"));
    assert_null(hba.match(tcp("127.0.0.1"), "c", "u"));
    assert_non_null(hba.match(tcp("fe80::1:2"), "d", "u"));
    assert_null(hba.match(tcp("fec0::1"), "d", "u"));
    assert_non_null(hba.match(tcp("2001:db8::5"), "e", "u"));
    assert_null(hba.match(tcp("2001:db9::5"), "e", "u"));
    assert_non_null(hba.match(tcp("8.8.8.8"), "f", "u"));
    assert_non_null(hba.match(tcp("2001::1"), "f", "u"));
    assert_null(hba.match(local_conn(), "f", "u"));  // `all` is any TCP address, not the socket
    assert_non_null(hba.match(tcp("8.8.8.8"), "g", "u"));
    assert_null(hba.match(tcp("::1"), "g", "u"));
    assert_non_null(hba.match(tcp("::1"), "h", "u"));
    ConnInfo odd;  // a TCP peer of no known family matches only `all`
    assert_null(hba.match(odd, "a", "u"));
    assert_non_null(hba.match(odd, "f", "u"));
}

void test_mask_mismatch_never_matches(void**) {
    HbaFile hba;
    std::string log = parse_hba("host all all 10.0.0.5/8 trust\n", hba);
    assert_true(contains(log, "hba.conf:1: address does not match mask: 10.0.0.5 / 255.0.0.0"));
    assert_int_equal(hba.size(), 1);  // kept, as PgBouncer does
    assert_null(hba.match(tcp("10.0.0.5"), "d", "u"));
}

void test_database_column(void**) {
    HbaFile hba;
    std::string log = parse_hba("host sameuser all all md5\n"
                                "host replication all all trust\n"
                                "host \"all\",app1 , app2 all all password\n"
                                "host \"we\"\"ird db\" all all cert\n"
                                "host all all all reject\n",
                                hba);
    assert_string_equal(log.c_str(), "");
    ConnInfo ci = tcp("1.1.1.1");
    assert_string_equal(eval(hba, ci, "alice", "alice").c_str(), "md5");
    assert_string_equal(eval(hba, ci, "app1", "alice").c_str(), "password");
    assert_string_equal(eval(hba, ci, "app2", "alice").c_str(), "password");
    assert_string_equal(eval(hba, ci, "all", "alice").c_str(), "password");  // quoted: a name
    assert_string_equal(eval(hba, ci, "we\"ird db", "x").c_str(), "cert");
    assert_string_equal(eval(hba, ci, "replication", "x").c_str(), "reject");
    assert_string_equal(eval(hba, ci, "other", "x").c_str(), "reject");
    // physical replication: only `replication` lines; `all` and sameuser do not cover it
    ci.replication = true;
    assert_string_equal(eval(hba, ci, "alice", "alice").c_str(), "trust");
    HbaFile no_repl;
    parse_hba("host all all all trust\n", no_repl);
    assert_string_equal(eval(no_repl, ci, "x", "x").c_str(), "none");
}

void test_user_column(void**) {
    HbaFile hba;
    std::string log = parse_hba("host all alice,\"bob smith\" all md5\n"
                                "host all \"all\" all password\n"
                                "host all all all reject\n",
                                hba);
    assert_string_equal(log.c_str(), "");
    ConnInfo ci = tcp("1.1.1.1");
    assert_string_equal(eval(hba, ci, "d", "alice").c_str(), "md5");
    assert_string_equal(eval(hba, ci, "d", "bob smith").c_str(), "md5");
    assert_string_equal(eval(hba, ci, "d", "bob").c_str(), "reject");
    assert_string_equal(eval(hba, ci, "d", "all").c_str(), "password");
}

void test_name_files(void**) {
    mkdir((g_dir + "/lists").c_str(), 0700);
    write_file(g_dir + "/lists/dbs.txt", "# databases\nsales, hr\n  \"odd name\" @more.txt\n");
    write_file(g_dir + "/lists/more.txt", "finance\n");
    write_file(g_dir + "/users.txt", "alice bob\ncarol # the admin\n");
    HbaFile hba;
    std::string log = parse_hba("host @lists/dbs.txt @users.txt all scram-sha-256\n"
                                "host @" +
                                    g_dir +
                                    "/lists/more.txt all all md5\n"
                                    "host all all all reject\n",
                                hba);
    assert_string_equal(log.c_str(), "");
    ConnInfo ci = tcp("1.1.1.1");
    for (const char* db : {"sales", "hr", "odd name", "finance"})
        for (const char* u : {"alice", "bob", "carol"})
            assert_string_equal(eval(hba, ci, db, u).c_str(), "scram-sha-256");
    assert_string_equal(eval(hba, ci, "sales", "dave").c_str(), "reject");
    assert_string_equal(eval(hba, ci, "finance", "dave").c_str(), "md5");  // absolute @path
    assert_string_equal(eval(hba, ci, "lists", "alice").c_str(), "reject");
}

void test_missing_name_file_skips_line(void**) {
    HbaFile hba;
    std::string log = parse_hba("host @nope.txt all all trust\nhost all all all md5\n", hba);
    assert_true(contains(log, "hba.conf:1: could not read @file " + g_dir + "/nope.txt"));
    assert_true(contains(log, "WARNING could not parse hba config line 1\n"));
    assert_int_equal(hba.size(), 1);
    assert_string_equal(eval(hba, tcp("1.1.1.1"), "x", "y").c_str(), "md5");
}

void test_broken_lines_skipped(void**) {
    struct Case {
        const char* line;
        const char* why;
    } cases[] = {
        {"hostgssenc all all all trust", "unknown connection type \"hostgssenc\""},
        {"host samerole all all trust", "samerole is not supported"},
        {"host all +admins all trust", "group names (+admins) are not supported"},
        {"host all all samenet trust", "invalid address \"samenet\""},
        {"host all all db.example.com trust", "invalid address \"db.example.com\""},
        {"host all all 10.0.0.0 trust", "invalid netmask \"trust\""},
        {"host all all 10.0.0.0", "missing netmask"},
        {"host all all 10.0.0.0/33 trust", "invalid mask length \"33\""},
        {"host all all ::/129 trust", "invalid mask length \"129\""},
        {"host all all 10.0.0.0/x trust", "invalid mask length \"x\""},
        {"host all all all pam", "unsupported authentication method \"pam\""},
        {"host all all all ident", "unsupported authentication method \"ident\""},
        {"local all all", "missing authentication method"},
        {"host all all all md5 clientcert=verify-full", "unsupported option \"clientcert"},
        {"host all all all md5 map=m extra", "ident map \"m\" is not found"},
        {"host all all all trust junk=1", "unsupported option"},
        {"host \"unterminated all all trust", "unterminated quoted name"},
        {"host", "missing database name"},
        {"host all", "missing user name"},
    };
    for (const Case& c : cases) {
        HbaFile hba;
        std::string text = std::string("host all all 1.2.3.4/32 trust\n") + c.line +
                           "\nhost all all 0.0.0.0/0 md5\n";
        std::string log = parse_hba(text, hba);
        if (!contains(log, std::string("hba.conf:2: ") + c.why))
            fail_msg("line '%s': expected '%s' in log, got '%s'", c.line, c.why, log.c_str());
        assert_true(contains(log, "WARNING could not parse hba config line 2\n"));
        assert_int_equal(hba.size(), 2);  // the lines around it still load
        assert_int_equal(hba.rules()[1].line, 3);
    }
}

void test_first_match_wins(void**) {
    HbaFile hba;
    parse_hba("host app alice 10.0.0.1/32 reject\n"
              "host app all 10.0.0.0/24 md5\n"
              "host all all all scram-sha-256\n",
              hba);
    assert_string_equal(eval(hba, tcp("10.0.0.1"), "app", "alice").c_str(), "reject");
    assert_string_equal(eval(hba, tcp("10.0.0.1"), "app", "bob").c_str(), "md5");
    assert_string_equal(eval(hba, tcp("10.0.0.2"), "app", "alice").c_str(), "md5");
    assert_string_equal(eval(hba, tcp("10.0.1.2"), "app", "alice").c_str(), "scram-sha-256");
    assert_int_equal(hba.match(tcp("10.0.0.2"), "app", "alice")->line, 2);
}

void test_ident_file(void**) {
    IdentFile id;
    size_t mark = log_mark();
    id.parse("# map  system  db\n"
             "ops    root    md5user\n"
             "ops    \"o s\" all\n"
             "certs  CN1     alice   # comment\n"
             "bad    /^(.*)$ x\n"
             "bad2   root\n"
             "bad3   root x y\n"
             "\n",
             "ident.conf");
    std::string log = log_since(mark);
    assert_int_equal(id.size(), 3);
    assert_true(contains(log, "ident.conf:5: regular expressions are not supported"));
    assert_true(contains(log, "ident.conf:6: missing database user name"));
    assert_true(contains(log, "ident.conf:7: unsupported parameters"));
    assert_true(contains(log, "WARNING could not parse ident config line 7\n"));
    assert_true(id.has_map("ops"));
    assert_true(id.has_map("certs"));
    assert_false(id.has_map("bad"));
    assert_true(id.allows("ops", "root", "md5user"));
    assert_false(id.allows("ops", "root", "scramuser"));
    assert_true(id.allows("ops", "o s", "anyone"));
    assert_false(id.allows("certs", "root", "md5user"));  // maps do not mix
    assert_true(id.allows("certs", "CN1", "alice"));
    assert_true(id.allows("", "alice", "alice"));  // no map: the names must be equal
    assert_false(id.allows("", "root", "alice"));
    assert_false(id.allows("nomap", "root", "root"));
}

void test_map_option(void**) {
    IdentFile id;
    id.parse("ops root md5user\n", "ident.conf");
    HbaFile hba;
    std::string log = parse_hba("local all all peer map=ops\n"
                                "hostssl all all all cert map=ops\n"
                                "local all all peer map=nosuch\n",
                                hba, id);
    assert_int_equal(hba.size(), 2);
    assert_string_equal(hba.rules()[0].map.c_str(), "ops");
    assert_string_equal(hba.rules()[1].map.c_str(), "ops");
    assert_true(contains(log, "hba.conf:3: ident map \"nosuch\" is not found"));
}

void test_load_files(void**) {
    std::string hba_path = g_dir + "/load_hba.conf";
    std::string ident_path = g_dir + "/load_ident.conf";
    write_file(ident_path, "m root postgres\n");
    write_file(hba_path, "local all all peer map=m\nhost all all all md5\n");
    HbaFile hba;
    IdentFile id;
    sluice::load_hba_files(hba_path, ident_path, hba, id);
    assert_int_equal(id.size(), 1);
    assert_int_equal(hba.size(), 2);
    // a reload replaces both
    write_file(hba_path, "host all all all trust\n");
    sluice::load_hba_files(hba_path, "", hba, id);
    assert_int_equal(id.size(), 0);
    assert_int_equal(hba.size(), 1);
    // an unreadable file leaves no rules: everything is rejected
    size_t mark = log_mark();
    sluice::load_hba_files(g_dir + "/missing.conf", "", hba, id);
    assert_int_equal(hba.size(), 0);
    assert_true(contains(log_since(mark), "could not open hba config file " + g_dir +
                                              "/missing.conf: No such file or directory"));
    std::string err;
    assert_false(hba.load(g_dir + "/missing.conf", id, err));
    assert_string_equal(err.c_str(), "No such file or directory");
}

void test_conn_info_and_os_user(void**) {
    ConnInfo ci;
    assert_false(sluice::conn_info_set_addr(ci, "localhost"));
    assert_int_equal(ci.family, 0);
    assert_true(sluice::conn_info_set_addr(ci, "127.0.0.1"));
    assert_int_equal(ci.family, AF_INET);
    assert_int_equal(ci.addr[0], 127);
    sockaddr_storage ss{};
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_addr.s6_addr[15] = 1;
    std::memcpy(&ss, &sin6, sizeof sin6);
    sluice::conn_info_set_addr(ci, ss);
    assert_int_equal(ci.family, AF_INET6);
    assert_int_equal(ci.addr[15], 1);
    std::string name;
    assert_true(sluice::os_user_name(0, name));
    assert_string_equal(name.c_str(), "root");
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_record_types),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_mask_mismatch_never_matches),
        cmocka_unit_test(test_database_column),
        cmocka_unit_test(test_user_column),
        cmocka_unit_test(test_name_files),
        cmocka_unit_test(test_missing_name_file_skips_line),
        cmocka_unit_test(test_broken_lines_skipped),
        cmocka_unit_test(test_first_match_wins),
        cmocka_unit_test(test_ident_file),
        cmocka_unit_test(test_map_option),
        cmocka_unit_test(test_load_files),
        cmocka_unit_test(test_conn_info_and_os_user),
    };
    return cmocka_run_group_tests_name("hba", tests, setup, teardown);
}
