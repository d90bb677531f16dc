// ClientPs: a client's prepared-statement names and in-flight bookkeeping, kept in a body that
// exists only while there is something in it. The tests pin the references it holds on
// registry entries (a leak keeps statements alive forever, a double unref frees them early)
// and when the body, with its sync count, goes away.
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <memory>  // before cmocka.h: its fail() macro clashes with <ios>
#include <string>
extern "C" {
#include <cmocka.h>
}

#include "sluice/ps_cache.h"

namespace {

using sluice::ClientPs;
using sluice::PsEntry;

const std::string kNoParams("\0\0", 2);

// DEALLOCATE of one statement, as PostgreSQL's grammar reads it (the names psycopg 3 sends
// when its cache rotates: DEALLOCATE _pg3_0).
void test_parse_deallocate(void**) {
    std::string n;
    assert_true(sluice::parse_deallocate("DEALLOCATE _pg3_0", n));
    assert_string_equal(n.c_str(), "_pg3_0");
    assert_true(sluice::parse_deallocate(std::string_view(" deallocate\n\tS_1 ;\0", 20), n));
    assert_string_equal(n.c_str(), "s_1");  // unquoted: folded
    assert_true(sluice::parse_deallocate("DEALLOCATE PREPARE \"My \"\"x\"\"\";", n));
    assert_string_equal(n.c_str(), "My \"x\"");
    assert_true(sluice::parse_deallocate("deallocate prepare", n));  // a statement named prepare
    assert_string_equal(n.c_str(), "prepare");
    assert_true(sluice::parse_deallocate("DEALLOCATE PREPARE prepare", n));
    assert_string_equal(n.c_str(), "prepare");
    assert_true(sluice::parse_deallocate("DEALLOCATE \"ALL\"", n));  // quoted: a name
    assert_string_equal(n.c_str(), "ALL");
    assert_true(sluice::parse_deallocate("DEALLOCATE a$1", n));
    assert_string_equal(n.c_str(), "a$1");
    // Not one statement's DEALLOCATE.
    for (const char* q : {"DEALLOCATE ALL", "DEALLOCATE PREPARE all", "DEALLOCATE", "DEALLOCATE;",
                          "DEALLOCATE a b", "DEALLOCATE a; SELECT 1", "DEALLOCATE a;;",
                          "DEALLOCATE \"\"", "DEALLOCATE \"open", "DEALLOCATE 1a",
                          "\"DEALLOCATE\" a", "DEALLOCATE /* c */ a", "DEALLOCATE a -- c",
                          "SELECT 1", "DISCARD ALL", ""})
        assert_false(sluice::parse_deallocate(q, n));
}

void test_empty_client_has_nothing(void**) {
    ClientPs ps;
    assert_int_equal(ps.size(), 0);
    assert_null(ps.find("s1"));
    assert_false(ps.has_unconfirmed());
    assert_false(ps.has_closed());
    ps.count_sync();  // counts only while statements are in flight
    assert_int_equal(ps.syncs(), 0);
    ps.remove("s1");
    ps.clear();
    ps.release_closed();
    assert_int_equal(ps.size(), 0);
}

void test_names_hold_references(void**) {
    size_t before = sluice::ps_registry_size();
    PsEntry* e = sluice::ps_intern("SELECT 1", kNoParams);  // our own reference
    assert_int_equal(e->refs, 1);
    {
        ClientPs ps;
        ps.add("a", e);
        ps.add("b", e);
        assert_int_equal(e->refs, 3);
        assert_ptr_equal(ps.find("a"), e);
        assert_int_equal(ps.size(), 2);
        ps.remove("a");
        assert_int_equal(e->refs, 2);
        assert_null(ps.find("a"));
        ps.remove_entry(e);  // "b", the last name: the body goes too
        assert_int_equal(e->refs, 1);
        assert_int_equal(ps.size(), 0);
        ps.add("c", e);
        assert_int_equal(e->refs, 2);
    }  // the destructor drops "c"
    assert_int_equal(e->refs, 1);
    sluice::ps_unref(e);
    assert_int_equal(sluice::ps_registry_size(), before);
}

void test_body_lives_while_parses_are_in_flight(void**) {
    PsEntry* e = sluice::ps_intern("SELECT 2", kNoParams);
    ClientPs ps;
    ps.add("s", e);
    ps.count_sync();
    ps.count_sync();
    ps.unconfirmed().emplace_back("s", ps.syncs());
    assert_int_equal(ps.syncs(), 2);
    ps.clear();  // DISCARD ALL: the names go, the Parse in flight stays, and its sync count
    assert_int_equal(ps.size(), 0);
    assert_int_equal(e->refs, 1);
    assert_true(ps.has_unconfirmed());
    assert_int_equal(ps.syncs(), 2);
    ps.unconfirmed().clear();  // answered
    ps.add("t", e);
    ps.remove("t");  // nothing left anywhere: the body is freed, the count restarts
    assert_false(ps.has_unconfirmed());
    assert_int_equal(ps.syncs(), 0);
    sluice::ps_unref(e);
}

void test_closed_names_keep_their_statement(void**) {
    PsEntry* e = sluice::ps_intern("SELECT 3", kNoParams);
    ClientPs ps;
    ps.add("s", e);
    sluice::ps_ref(e);  // as on_ps_packet does for a Close 'S'
    ps.closed().emplace_back("s", e);
    ps.closed().emplace_back("unknown", nullptr);
    ps.remove("s");
    assert_int_equal(e->refs, 2);  // ours + the closed list's
    assert_true(ps.has_closed());
    ps.release_closed();  // the client goes before the CloseComplete
    assert_false(ps.has_closed());
    assert_int_equal(e->refs, 1);
    sluice::ps_unref(e);
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_deallocate),
        cmocka_unit_test(test_empty_client_has_nothing),
        cmocka_unit_test(test_names_hold_references),
        cmocka_unit_test(test_body_lives_while_parses_are_in_flight),
        cmocka_unit_test(test_closed_names_keep_their_statement),
    };
    return cmocka_run_group_tests_name("ps_cache", tests, nullptr, nullptr);
}
