// auth_file parsing: quoting, comments, broken lines (logged with file:line and skipped),
// secrets kept verbatim, and loading from disk. Log lines are captured through a logfile.
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
extern "C" {
#include <cmocka.h>
}

#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>

#include "sluice/auth/userlist.h"
#include "sluice/util/log.h"

namespace {

using sluice::UserList;

std::string g_logfile;

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

std::string write_temp(const std::string& text) {
    char path[] = "/tmp/sluice_userlist_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    close(fd);
    return path;
}

// Parses text and returns what was logged meanwhile.
std::string parse_logged(std::string_view text, UserList& out) {
    size_t before = read_file(g_logfile).size();
    sluice::parse_userlist(text, "users.txt", out);
    return read_file(g_logfile).substr(before);
}

const std::string& get(const UserList& u, const std::string& name) {
    auto it = u.find(name);
    if (it == u.end())
        fail_msg("user \"%s\" missing", name.c_str());
    return it->second;
}

int setup_log(void**) {
    char path[] = "/tmp/sluice_userlist_log_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    close(fd);
    g_logfile = path;
    sluice::LogConfig cfg;
    cfg.quiet = true;
    cfg.logfile = g_logfile;
    return sluice::log_configure(cfg) ? 0 : -1;
}

int teardown_log(void**) {
    sluice::LogConfig cfg;
    static_cast<void>(sluice::log_configure(cfg));
    unlink(g_logfile.c_str());
    return 0;
}

void test_basic(void**) {
    UserList u;
    std::string log = parse_logged("\"alice\" \"secret\"\n\"bob\"\t\"pw two\"\n", u);
    assert_int_equal(u.size(), 2);
    assert_string_equal(get(u, "alice").c_str(), "secret");
    assert_string_equal(get(u, "bob").c_str(), "pw two");
    assert_string_equal(log.c_str(), "");
}

void test_quote_escape(void**) {
    UserList u;
    sluice::parse_userlist("\"a\"\"b\" \"p\"\"w\"\"\"\n"
                           "\"q\" \"\"\"\"\n"
                           "\"empty\" \"\"\n",
                           "users.txt", u);
    assert_int_equal(u.size(), 3);
    assert_string_equal(get(u, "a\"b").c_str(), "p\"w\"");
    assert_string_equal(get(u, "q").c_str(), "\"");
    assert_string_equal(get(u, "empty").c_str(), "");
}

void test_trailing_junk_ignored(void**) {
    UserList u;
    std::string log = parse_logged("\"bob\" \"pw\" trailing stuff \"third\" field\n"
                                   "\"carol\" \"x\"\"y\"junk\n"
                                   "\"dave\" \"d\";comment\n",
                                   u);
    assert_int_equal(u.size(), 3);
    assert_string_equal(get(u, "bob").c_str(), "pw");
    assert_string_equal(get(u, "carol").c_str(), "x\"y");
    assert_string_equal(get(u, "dave").c_str(), "d");
    assert_string_equal(log.c_str(), "");
}

void test_between_fields(void**) {
    // PgBouncer skips anything up to the second field's opening quote.
    UserList u;
    sluice::parse_userlist("\"erin\"x\"pw\"\n\"frank\"\"\" \"pw2\"\n", "users.txt", u);
    assert_string_equal(get(u, "erin").c_str(), "pw");
    assert_string_equal(get(u, "frank\"").c_str(), "pw2");
}

void test_comments_and_blanks(void**) {
    UserList u;
    std::string log = parse_logged("; a comment\n"
                                   "# another comment\n"
                                   "\n"
                                   "   \t \n"
                                   "   ; indented comment\n"
                                   "\t# indented hash\n"
                                   ";\"x\" \"y\"\n"
                                   "  \"alice\" \"a\"\r\n"
                                   "\"bob\" \"b\"\r\n"
                                   "\r\n"
                                   "\"carol\" \"c\"",  // no final newline
                                   u);
    assert_int_equal(u.size(), 3);
    assert_string_equal(get(u, "alice").c_str(), "a");
    assert_string_equal(get(u, "bob").c_str(), "b");
    assert_string_equal(get(u, "carol").c_str(), "c");
    assert_string_equal(log.c_str(), "");
}

void test_malformed_lines_skipped(void**) {
    UserList u;
    std::string log = parse_logged("\"ok1\" \"1\"\n"            // 1
                                   "alice \"x\"\n"              // 2: name not quoted
                                   "\"unterminated\n"           // 3
                                   "\"onlyname\"\n"             // 4: no secret
                                   "\"name\" \"unterminated\n"  // 5
                                   "\"name2\" secret\n"         // 6: secret not quoted
                                   "\"\" \"x\"\n"               // 7: empty name
                                   "\"ok2\" \"2\"\n",           // 8
                                   u);
    assert_int_equal(u.size(), 2);
    assert_string_equal(get(u, "ok1").c_str(), "1");
    assert_string_equal(get(u, "ok2").c_str(), "2");
    for (int line = 2; line <= 7; line++) {
        char want[64];
        std::snprintf(want, sizeof want, "ERROR broken auth file: users.txt:%d: ", line);
        if (log.find(want) == std::string::npos)
            fail_msg("no warning for line %d in log:\n%s", line, log.c_str());
    }
    assert_true(log.find("users.txt:1:") == std::string::npos);
    assert_true(log.find("users.txt:8:") == std::string::npos);
}

void test_secret_kinds_verbatim(void**) {
    const std::string scram =
        "SCRAM-SHA-256$4096:U3ERMrSjCObJc3/lXzIm/Q==$31k79QbacEGVKOQzLcewoWYRU6zOuXm4RkvFCcyw2TY=:"
        "HbRLeJ9PoeNZ8LOt2pWRkCPd7Fge5Qit8k1u2E64Z2o=";
    UserList u;
    sluice::parse_userlist("\"md5user\" \"md5b17c42003f4dfed74de11664395e0bc2\"\n"
                           "\"scramuser\" \"" +
                               scram +
                               "\"\n"
                               "\"plainuser\" \"  spaces; # and symbols $:=,\"\n",
                           "users.txt", u);
    assert_int_equal(u.size(), 3);
    assert_string_equal(get(u, "md5user").c_str(), "md5b17c42003f4dfed74de11664395e0bc2");
    assert_string_equal(get(u, "scramuser").c_str(), scram.c_str());
    assert_string_equal(get(u, "plainuser").c_str(), "  spaces; # and symbols $:=,");
}

void test_duplicate_last_wins(void**) {
    UserList u;
    sluice::parse_userlist("\"alice\" \"first\"\n\"alice\" \"second\"\n", "users.txt", u);
    assert_int_equal(u.size(), 1);
    assert_string_equal(get(u, "alice").c_str(), "second");
}

void test_parse_adds(void**) {
    UserList u;
    u["old"] = "kept";
    sluice::parse_userlist("\"new\" \"n\"\n", "users.txt", u);
    assert_int_equal(u.size(), 2);
    assert_string_equal(get(u, "old").c_str(), "kept");
}

void test_load_file(void**) {
    const std::string path = write_temp("; users\n\"alice\" \"a\"\nbroken\n\"bob\" \"b\"\n");
    UserList u;
    u["stale"] = "gone after load";
    std::string err;
    size_t before = read_file(g_logfile).size();
    assert_true(sluice::load_userlist(path, u, err));
    std::string log = read_file(g_logfile).substr(before);
    assert_int_equal(u.size(), 2);
    assert_string_equal(get(u, "alice").c_str(), "a");
    assert_string_equal(get(u, "bob").c_str(), "b");
    // The warning names the real file.
    assert_true(log.find(path + ":3: ") != std::string::npos);
    unlink(path.c_str());
}

void test_load_missing_file(void**) {
    UserList u;
    u["alice"] = "a";
    std::string err;
    assert_false(sluice::load_userlist("/nonexistent/dir/userlist.txt", u, err));
    assert_string_equal(err.c_str(), "No such file or directory");
    assert_int_equal(u.size(), 1);                        // untouched
    assert_false(sluice::load_userlist("/tmp", u, err));  // a directory cannot be read
    assert_false(err.empty());
    assert_int_equal(u.size(), 1);
}

void test_load_empty_file(void**) {
    const std::string path = write_temp("");
    UserList u;
    u["stale"] = "x";
    std::string err;
    assert_true(sluice::load_userlist(path, u, err));
    assert_true(u.empty());
    unlink(path.c_str());
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_quote_escape),
        cmocka_unit_test(test_trailing_junk_ignored),
        cmocka_unit_test(test_between_fields),
        cmocka_unit_test(test_comments_and_blanks),
        cmocka_unit_test(test_malformed_lines_skipped),
        cmocka_unit_test(test_secret_kinds_verbatim),
        cmocka_unit_test(test_duplicate_last_wins),
        cmocka_unit_test(test_parse_adds),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_load_missing_file),
        cmocka_unit_test(test_load_empty_file),
    };
    return cmocka_run_group_tests_name("userlist", tests, setup_log, teardown_log);
}
