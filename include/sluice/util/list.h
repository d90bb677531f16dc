// Intrusive doubly linked list: an object embeds a ListNode and moves between lists in O(1)
// without allocating. A node is in at most one list at a time.
#pragma once

#include <cstddef>

namespace sluice {

struct ListNode {
    ListNode* prev = this;
    ListNode* next = this;

    bool linked() const noexcept { return next != this; }
    void unlink() noexcept {
        prev->next = next;
        next->prev = prev;
        prev = next = this;
    }
};

// A list of T linked through the member `Node` (a ListNode).
template <typename T, ListNode T::*Node>
class List {
public:
    List() = default;
    List(const List&) = delete;
    List& operator=(const List&) = delete;

    bool empty() const noexcept { return head_.next == &head_; }
    size_t size() const noexcept { return count_; }

    void push_back(T& item) noexcept { insert_before(&head_, item); }
    void push_front(T& item) noexcept { insert_before(head_.next, item); }
    // Requires: item is in this list.
    void remove(T& item) noexcept {
        (item.*Node).unlink();
        --count_;
    }
    T* front() noexcept { return empty() ? nullptr : owner(head_.next); }
    T* back() noexcept { return empty() ? nullptr : owner(head_.prev); }
    T* pop_front() noexcept {
        T* t = front();
        if (t)
            remove(*t);
        return t;
    }
    T* pop_back() noexcept {
        T* t = back();
        if (t)
            remove(*t);
        return t;
    }

    // Iteration that tolerates removal of the current element.
    template <typename F>
    void for_each(F&& f) {
        ListNode* n = head_.next;
        while (n != &head_) {
            ListNode* next = n->next;
            f(*owner(n));
            n = next;
        }
    }

private:
    static T* owner(ListNode* n) noexcept {
        // offsetof on a member pointer: compute the member's offset from a null-based object
        const auto offset = reinterpret_cast<size_t>(&(static_cast<T*>(nullptr)->*Node));
        return reinterpret_cast<T*>(reinterpret_cast<char*>(n) - offset);
    }
    void insert_before(ListNode* pos, T& item) noexcept {
        ListNode* n = &(item.*Node);
        n->prev = pos->prev;
        n->next = pos;
        pos->prev->next = n;
        pos->prev = n;
        ++count_;
    }

    ListNode head_;
    size_t count_ = 0;
};

}  // namespace sluice
