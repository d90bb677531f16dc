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

// DISCARD ALL / DEALLOCATE [PREPARE] ALL / DEALLOCATE of one statement, as PostgreSQL's
// grammar reads them (psycopg 3 sends DEALLOCATE _pg3_0 when its cache rotates).
void test_read_forget(void**) {
    using sluice::Forget;
    std::string n;
    auto one = [&](std::string_view q, const char* name) {
        n.clear();
        assert_int_equal(sluice::read_forget(q, n), Forget::One);
        assert_string_equal(n.c_str(), name);
    };
    one("DEALLOCATE _pg3_0", "_pg3_0");
    one(std::string_view(" deallocate\n\tS_1 ;\0", 20), "s_1");  // unquoted: folded
    one("DEALLOCATE PREPARE \"My \"\"x\"\"\";", "My \"x\"");
    one("deallocate prepare", "prepare");  // a statement named prepare
    one("DEALLOCATE PREPARE prepare", "prepare");
    one("DEALLOCATE \"ALL\"", "ALL");  // quoted: a name
    one("DEALLOCATE a$1", "a$1");
    one("DEALLOCATE a;;", "a");  // empty statements after it
    for (const char* q : {"DISCARD ALL", "discard all;", "  Discard\tALL ; "})
        assert_int_equal(sluice::read_forget(q, n), Forget::DiscardAll);
    for (const char* q : {"DEALLOCATE ALL", "deallocate prepare all", "DEALLOCATE PREPARE ALL;"})
        assert_int_equal(sluice::read_forget(q, n), Forget::DeallocateAll);
    for (const char* q : {"DEALLOCATE", "DEALLOCATE;", "DEALLOCATE a b", "DEALLOCATE a; SELECT 1",
                          "DEALLOCATE \"\"", "DEALLOCATE \"open", "DEALLOCATE 1a",
                          "\"DEALLOCATE\" a", "DEALLOCATE /* c */ a", "DEALLOCATE a -- c",
                          "DISCARD PLANS", "DISCARD \"ALL\"", "DISCARD PREPARE ALL", "DISCARD; ALL",
                          "DELETE FROM t", "SELECT 1", ""})
        assert_int_equal(sluice::read_forget(q, n), Forget::None);
    // The cheap gate in front of it: a D first, after blanks, ';' and NUL.
    auto bytes = [](std::string_view t) {
        return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(t.data()), t.size());
    };
    assert_true(sluice::may_forget(bytes(" ;\tdiscard")));
    assert_true(sluice::may_forget(bytes("DELETE")));
    assert_true(sluice::may_forget(bytes("  ")));  // nothing to tell by yet
    assert_false(sluice::may_forget(bytes(" SELECT 1")));
}

// The texts a failed transaction block still accepts (PostgreSQL's IsTransactionExitStmt).
void test_is_transaction_exit(void**) {
    for (const char* q : {"ROLLBACK", "rollback", "Rollback;", "ABORT", "end", "COMMIT",
                          "commit and chain", "ROLLBACK WORK", "rollback to s1",
                          "ROLLBACK TO SAVEPOINT \"x\"", "PREPARE TRANSACTION 'g1'",
                          "  /* app: x /* nested */ */ -- line\n\tROLLBACK", "COMMIT -- done"})
        assert_true(sluice::is_transaction_exit(q));
    for (const char* q : {"COMMIT PREPARED 'g1'", "rollback prepared 'g1'", "BEGIN",
                          "RELEASE SAVEPOINT s1", "SAVEPOINT s1", "PREPARE p AS SELECT 1",
                          "\"ROLLBACK\"", "SELECT 1", "/* ROLLBACK */ SELECT 1", "-- ROLLBACK",
                          "/* open ROLLBACK", "endx", ""})
        assert_false(sluice::is_transaction_exit(q));
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
        cmocka_unit_test(test_read_forget),
        cmocka_unit_test(test_is_transaction_exit),
        cmocka_unit_test(test_empty_client_has_nothing),
        cmocka_unit_test(test_names_hold_references),
        cmocka_unit_test(test_body_lives_while_parses_are_in_flight),
        cmocka_unit_test(test_closed_names_keep_their_statement),
    };
    return cmocka_run_group_tests_name("ps_cache", tests, nullptr, nullptr);
}
