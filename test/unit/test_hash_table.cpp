// IntrusiveHash: the allocation-free chained table behind the cancel-key index and the var
// sets. Tests drive it with a deliberately poor hash so chains are long and every removal
// position (head, middle, tail of a chain) is exercised; the randomized loop prints its seed.
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <random>
#include <set>
#include <vector>
extern "C" {
#include <cmocka.h>
}

#include "sluice/util/hash_table.h"

namespace {

struct Item {
    uint64_t key = 0;
    Item* next = nullptr;
};

size_t bad_hash(const Item& x) noexcept {
    return static_cast<size_t>(x.key % 7);  // few distinct hashes: long chains
}

size_t good_hash(const Item& x) noexcept {
    return static_cast<size_t>(x.key * 0x9e3779b97f4a7c15ull >> 17);
}

template <typename Table>
Item* find_key(const Table& t, uint64_t key, size_t h) {
    return t.find(h, [&](const Item& x) { return x.key == key; });
}

void test_insert_find_remove_with_collisions(void**) {
    sluice::IntrusiveHash<Item, &Item::next, bad_hash> t;
    std::vector<Item> items(100);
    for (size_t i = 0; i < items.size(); ++i) {
        items[i].key = i;
        t.insert(items[i]);
    }
    assert_int_equal(t.size(), 100);
    assert_true(t.bucket_count() >= 50);  // grown: at most two per bucket on average
    for (size_t i = 0; i < items.size(); ++i)
        assert_ptr_equal(find_key(t, i, bad_hash(items[i])), &items[i]);
    assert_null(find_key(t, 1000, 1000 % 7));
    // Remove every third item: heads, middles and tails of the 7 chains.
    for (size_t i = 0; i < items.size(); i += 3)
        t.remove(items[i]);
    for (size_t i = 0; i < items.size(); ++i) {
        Item* got = find_key(t, i, bad_hash(items[i]));
        if (i % 3 == 0)
            assert_null(got);
        else
            assert_ptr_equal(got, &items[i]);
    }
    assert_int_equal(t.size(), 66);
}

void test_empty_table(void**) {
    sluice::IntrusiveHash<Item, &Item::next, good_hash> t;
    assert_int_equal(t.size(), 0);
    assert_int_equal(t.bucket_count(), 0);  // nothing allocated until the first insert
    assert_null(find_key(t, 1, 1));
    Item a{.key = 5};
    t.insert(a);
    t.remove(a);
    assert_null(find_key(t, 5, good_hash(a)));
    t.clear();
    assert_int_equal(t.bucket_count(), 0);
}

void test_random_against_std_set(void**) {
    unsigned seed = 20261121;
    printf("# seed %u\n", seed);
    std::mt19937_64 rng(seed);
    sluice::IntrusiveHash<Item, &Item::next, good_hash> t;
    std::vector<Item> pool(2000);
    std::set<size_t> in;  // indexes of pool items in the table
    for (size_t i = 0; i < pool.size(); ++i)
        pool[i].key = rng();
    for (int step = 0; step < 20000; ++step) {
        size_t i = rng() % pool.size();
        if (in.count(i)) {
            t.remove(pool[i]);
            in.erase(i);
        } else {
            t.insert(pool[i]);
            in.insert(i);
        }
        if (step % 1000 == 0) {
            for (size_t j = 0; j < pool.size(); ++j) {
                Item* got = find_key(t, pool[j].key, good_hash(pool[j]));
                assert_ptr_equal(got, in.count(j) ? &pool[j] : nullptr);
            }
        }
        assert_int_equal(t.size(), in.size());
    }
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_find_remove_with_collisions),
        cmocka_unit_test(test_empty_table),
        cmocka_unit_test(test_random_against_std_set),
    };
    return cmocka_run_group_tests_name("hash_table", tests, nullptr, nullptr);
}
