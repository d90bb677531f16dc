// The latency histogram behind SHOW STATS averages and the metrics endpoint: every duration
// lands in the bucket whose bounds hold it (upper bound inclusive), whatever shortcut
// observe() takes to find it.
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <random>
extern "C" {
#include <cmocka.h>
}

#include "sluice/stats.h"

namespace {

using sluice::kLatencyBoundsUs;
using sluice::LatencyHistogram;
using sluice::usec_t;

// The definition: the first bucket whose upper bound is >= us; the last one is +Inf.
size_t reference_bucket(usec_t us) {
    if (us < 0)
        us = 0;
    for (size_t i = 0; i < kLatencyBoundsUs.size(); ++i)
        if (us <= kLatencyBoundsUs[i])
            return i;
    return kLatencyBoundsUs.size();
}

void check(usec_t us) {
    LatencyHistogram h;
    h.observe(us);
    size_t want = reference_bucket(us);
    for (size_t i = 0; i < h.counts.size(); ++i) {
        if (h.counts[i] != (i == want ? 1u : 0u))
            fail_msg("%lld us: bucket %zu has %llu, want it in bucket %zu",
                     static_cast<long long>(us), i, static_cast<unsigned long long>(h.counts[i]),
                     want);
    }
    assert_int_equal(h.sum_us, us < 0 ? 0 : us);
}

void test_bounds_and_neighbours(void**) {
    for (usec_t b : kLatencyBoundsUs)
        for (usec_t d = -2; d <= 2; ++d)
            check(b + d);
    for (int bit = 0; bit < 63; ++bit) {  // every bit length, at both ends
        usec_t p = static_cast<usec_t>(uint64_t{1} << bit);
        check(p);
        check(p - 1);
        check(p + 1);
    }
    check(0);
    check(-5);
    check(INT64_MAX);
}

void test_random_durations(void**) {
    std::mt19937_64 rng(20261122);
    for (int i = 0; i < 200000; ++i) {
        int bits = static_cast<int>(rng() % 40);
        check(static_cast<usec_t>(rng() & ((uint64_t{1} << bits) - 1)));
    }
}

void test_counts_accumulate(void**) {
    LatencyHistogram h;
    for (usec_t us : {50, 100, 101, 2500, 2501, 20000000})
        h.observe(us);
    assert_int_equal(h.count(), 6);
    assert_int_equal(h.counts[0], 2);  // 50, 100
    assert_int_equal(h.counts[1], 1);  // 101
    assert_int_equal(h.counts[4], 1);  // 2500
    assert_int_equal(h.counts[5], 1);  // 2501
    assert_int_equal(h.counts[kLatencyBoundsUs.size()], 1);  // above 10 s
    assert_int_equal(h.sum_us, 50 + 100 + 101 + 2500 + 2501 + 20000000);
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds_and_neighbours),
        cmocka_unit_test(test_random_durations),
        cmocka_unit_test(test_counts_accumulate),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
