// Intrusive chained hash table: each element embeds its chain link, so inserting and removing
// never allocate (only growing the bucket array does). Used where one node per element of a
// std::unordered_map would cost memory per connection (the cancel-key index, the var sets).
#pragma once

#include <cstddef>
#include <vector>

namespace sluice {

// A set of T chained through the member `Next` (a T*), bucketed by HashOf(element). The
// table does not own its elements; an element is in at most one table through one link.
// Requires: HashOf(x) does not change while x is in the table.
template <typename T, T* T::*Next, size_t (*HashOf)(const T&) noexcept>
class IntrusiveHash {
public:
    IntrusiveHash() = default;
    IntrusiveHash(const IntrusiveHash&) = delete;
    IntrusiveHash& operator=(const IntrusiveHash&) = delete;

    size_t size() const noexcept { return size_; }
    size_t bucket_count() const noexcept { return buckets_.size(); }

    // The first element whose hash is h and for which eq(element) is true, or nullptr.
    template <typename Eq>
    T* find(size_t h, Eq&& eq) const {
        if (buckets_.empty())
            return nullptr;
        for (T* x = buckets_[h & (buckets_.size() - 1)]; x; x = x->*Next)
            if (eq(static_cast<const T&>(*x)))
                return x;
        return nullptr;
    }

    // Requires: x is in no table.
    void insert(T& x) {
        if (size_ >= buckets_.size() * kMaxLoad)
            grow();
        T*& head = buckets_[HashOf(x) & (buckets_.size() - 1)];
        x.*Next = head;
        head = &x;
        ++size_;
    }

    // Requires: x is in this table.
    void remove(T& x) noexcept {
        T** link = &buckets_[HashOf(x) & (buckets_.size() - 1)];
        while (*link != &x)
            link = &((*link)->*Next);
        *link = x.*Next;
        x.*Next = nullptr;
        --size_;
    }

    // Forgets every element (their links are left as they are) and frees the buckets.
    void clear() noexcept {
        std::vector<T*>().swap(buckets_);
        size_ = 0;
    }

private:
    // Chains average at most this long: a cancel lookup walks a few pointers, and the bucket
    // array costs 8 / kMaxLoad .. 16 / kMaxLoad bytes per element.
    static constexpr size_t kMaxLoad = 2;

    void grow() {
        std::vector<T*> old;
        old.swap(buckets_);
        buckets_.assign(old.empty() ? 64 : old.size() * 2, nullptr);
        for (T* x : old) {
            while (x) {
                T* next = x->*Next;
                T*& head = buckets_[HashOf(*x) & (buckets_.size() - 1)];
                x->*Next = head;
                head = x;
                x = next;
            }
        }
    }

    std::vector<T*> buckets_;  // a power of two in size, or empty
    size_t size_ = 0;
};

}  // namespace sluice
