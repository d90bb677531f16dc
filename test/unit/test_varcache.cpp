// VarCache: connections' tracked parameter values as references to interned, shared sets.
// Each test checks what an idle client's memory depends on (equal values share one set, a
// change copies, the last reference frees) and that no handle ever sees another's change.
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>
extern "C" {
#include <cmocka.h>
}

#include "sluice/varcache.h"

namespace {

using sluice::var_set_count;
using sluice::var_set_refs;
using sluice::VarCache;
using sluice::VarValues;

void assert_sv(std::string_view got, const char* want) {
    if (got != want)
        fail_msg("got \"%.*s\", want \"%s\"", static_cast<int>(got.size()), got.data(), want);
}

void test_default_is_unset_and_shared(void**) {
    VarCache a;
    VarCache b;
    assert_true(a.same(b));
    assert_int_equal(var_set_count(), 0);
    for (size_t i = 0; i < sluice::kMaxVars; ++i)
        assert_false(sluice::var_is_set(a.get(i)));
    assert_int_equal(var_set_refs(a), 0);  // the static set is not counted
}

void test_equal_values_share_one_set(void**) {
    VarValues v{};
    v[0] = "UTF8";
    v[2] = "Europe/Vienna";
    {
        VarCache a;
        VarCache b;
        a.assign(v);
        b.assign(v);
        assert_true(a.same(b));
        assert_int_equal(var_set_count(), 1);
        assert_int_equal(var_set_refs(a), 2);
        VarCache c;  // built value by value, in another order: the same set
        c.set(2, "Europe/Vienna");
        c.set(0, "UTF8");
        assert_true(c.same(a));
        assert_int_equal(var_set_count(), 1);
        assert_int_equal(var_set_refs(a), 3);
        assert_sv(c.get(0), "UTF8");
        assert_sv(c.get(1), "");
        assert_sv(c.get(2), "Europe/Vienna");
    }
    assert_int_equal(var_set_count(), 0);  // the last reference freed the set
}

void test_change_copies_on_write(void**) {
    VarCache a;
    a.set(4, "pgbench");
    VarCache b = a;
    assert_true(a.same(b));
    assert_int_equal(var_set_refs(a), 2);
    b.set(4, "psql");
    assert_false(a.same(b));
    assert_sv(a.get(4), "pgbench");  // a does not see b's change
    assert_sv(b.get(4), "psql");
    assert_int_equal(var_set_count(), 2);
    assert_int_equal(var_set_refs(a), 1);
    assert_int_equal(var_set_refs(b), 1);
    b.set(4, "pgbench");  // back to a's values: shared again, the other set is gone
    assert_true(a.same(b));
    assert_int_equal(var_set_count(), 1);
    assert_int_equal(var_set_refs(a), 2);
    b.set(4, "pgbench");  // no change: nothing moves
    assert_int_equal(var_set_refs(a), 2);
    b.set(4, sluice::kVarUnset);  // nothing set again: the static set
    assert_true(b.same(VarCache()));
    assert_int_equal(var_set_refs(a), 1);
}

void test_copy_and_assignment_count_references(void**) {
    VarCache a;
    a.set(1, "ISO, MDY");
    {
        VarCache b(a);
        VarCache c;
        c = b;
        assert_int_equal(var_set_refs(a), 3);
        c = c;  // self-assignment keeps the reference
        assert_int_equal(var_set_refs(a), 3);
        c = VarCache();
        assert_int_equal(var_set_refs(a), 2);
    }
    assert_int_equal(var_set_refs(a), 1);
    a = VarCache();
    assert_int_equal(var_set_count(), 0);
}

void test_assign_from_own_values(void**) {
    VarCache a;
    a.set(0, "SQL_ASCII");
    a.set(3, "on");
    VarValues v = a.values();  // views into a's set
    v[3] = "off";
    a.assign(v);  // the old set is released only after the new one is built
    assert_sv(a.get(0), "SQL_ASCII");
    assert_sv(a.get(3), "off");
    assert_int_equal(var_set_count(), 1);
    a = VarCache();
    assert_int_equal(var_set_count(), 0);
}

void test_value_boundaries_matter(void**) {
    // Same bytes, split differently between two parameters: different sets.
    VarCache a;
    VarCache b;
    a.set(0, "ab");
    b.set(0, "a");
    b.set(1, "b");
    assert_false(a.same(b));
    assert_sv(a.get(1), "");
    assert_sv(b.get(0), "a");
    assert_int_equal(var_set_count(), 2);
}

void test_empty_value_is_not_unset(void**) {
    // application_name "" is a value (a server must be given it), not "whatever the server
    // has": a set "" and an unset value are different sets, and equal only to themselves.
    VarCache unset;
    VarCache empty;
    empty.set(4, sluice::kVarEmpty);
    assert_false(empty.same(unset));
    assert_true(sluice::var_is_set(empty.get(4)));
    assert_false(sluice::var_is_set(unset.get(4)));
    assert_int_equal(var_set_count(), 1);
    VarValues v = empty.values();
    assert_true(sluice::var_is_set(v[4]) && v[4].empty());
    assert_false(sluice::var_is_set(v[0]));
    VarCache again;
    again.assign(v);
    assert_true(again.same(empty));
    assert_false(sluice::same_value(v[4], sluice::kVarUnset));
    assert_true(sluice::same_value(v[0], sluice::kVarUnset));
    empty.set(4, sluice::kVarUnset);  // back to unset: the static set
    assert_true(empty.same(unset));
    assert_int_equal(var_set_refs(empty), 0);
    again.set(4, "app");
    again.set(4, "");  // a string literal "" is a set value too
    assert_true(sluice::var_is_set(again.get(4)));
    assert_int_equal(var_set_count(), 1);
}

void test_many_sets_grow_and_free(void**) {
    // Distinct application_name per client (a pool of many applications): one set each, the
    // table grows, every lookup still finds the right set, and all sets go with the clients.
    constexpr int kN = 5000;
    std::vector<std::unique_ptr<VarCache>> v;
    v.reserve(kN);
    for (int i = 0; i < kN; ++i) {
        v.push_back(std::make_unique<VarCache>());
        v.back()->set(0, "UTF8");
        v.back()->set(4, "app-" + std::to_string(i % (kN / 2)));
    }
    assert_int_equal(var_set_count(), kN / 2);
    for (int i = 0; i < kN / 2; ++i) {
        assert_true(v[static_cast<size_t>(i)]->same(*v[static_cast<size_t>(i + kN / 2)]));
        assert_int_equal(var_set_refs(*v[static_cast<size_t>(i)]), 2);
        std::string want = "app-" + std::to_string(i);
        assert_sv(v[static_cast<size_t>(i)]->get(4), want.c_str());
    }
    for (int i = 0; i < kN / 2; ++i)
        v[static_cast<size_t>(i)].reset();
    assert_int_equal(var_set_count(), kN / 2);  // each set still has its twin in the 2nd half
    for (int i = kN / 2; i < kN; ++i)
        assert_int_equal(var_set_refs(*v[static_cast<size_t>(i)]), 1);
    v.clear();
    assert_int_equal(var_set_count(), 0);
}

void test_names(void**) {
    sluice::var_init("search_path, TimeZone,  work_mem");
    assert_int_equal(sluice::var_count(), 7);  // the five defaults + two extra (no duplicate)
    assert_int_equal(sluice::var_index("timezone"), 2);
    assert_int_equal(sluice::var_index("SEARCH_PATH"), 5);
    assert_int_equal(sluice::var_index("work_mem"), 6);
    assert_int_equal(sluice::var_index("lc_messages"), -1);
    assert_string_equal(sluice::var_name(4).c_str(), "application_name");
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_default_is_unset_and_shared),
        cmocka_unit_test(test_equal_values_share_one_set),
        cmocka_unit_test(test_change_copies_on_write),
        cmocka_unit_test(test_copy_and_assignment_count_references),
        cmocka_unit_test(test_assign_from_own_values),
        cmocka_unit_test(test_value_boundaries_matter),
        cmocka_unit_test(test_empty_value_is_not_unset),
        cmocka_unit_test(test_many_sets_grow_and_free),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests_name("varcache", tests, nullptr, nullptr);
}
