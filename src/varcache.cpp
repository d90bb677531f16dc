// Tracked parameter names, and the process-wide table of interned value sets.
#include "sluice/varcache.h"

#include <strings.h>

#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include "sluice/config/config.h"
#include "sluice/util/hash_table.h"

namespace sluice {

// One set of values, immutable once interned. The value bytes follow the struct in the same
// allocation: value i is [end[i-1], end[i]) of them (end[-1] = 0).
// Bit i of `known` says whether value i is set: an unset value is a view without data, a set
// one (even "") points into the set's bytes.
struct VarSet {
    VarSet* next = nullptr;  // hash chain
    size_t hash = 0;
    uint32_t refs = 0;
    uint32_t known = 0;
    std::array<uint32_t, kMaxVars> end{};

    const char* data() const noexcept { return reinterpret_cast<const char*>(this + 1); }
    std::string_view get(size_t i) const noexcept {
        if (!(known & (1u << i)))
            return {};
        uint32_t start = i == 0 ? 0 : end[i - 1];
        return {data() + start, end[i] - start};
    }
};

namespace {

std::vector<std::string> g_var_names;

size_t set_hash(const VarSet& s) noexcept {
    return s.hash;
}

// The set with nothing set: every connection starts with it; never counted, never freed.
constinit VarSet g_empty{};
using SetTable = IntrusiveHash<VarSet, &VarSet::next, set_hash>;
// Created with the first set and deleted with the last: no static destructor that a set
// released during exit could outlive.
SetTable* g_sets = nullptr;

uint32_t known_mask(const VarValues& v) noexcept {
    uint32_t m = 0;
    for (size_t i = 0; i < kMaxVars; ++i)
        if (var_is_set(v[i]))
            m |= 1u << i;
    return m;
}

size_t hash_values(const VarValues& v, uint32_t known) noexcept {
    uint64_t h = 14695981039346656037ull ^ known;  // FNV-1a over (length, bytes) of each value
    for (std::string_view s : v) {
        h = (h ^ s.size()) * 1099511628211ull;
        for (char ch : s)
            h = (h ^ static_cast<uint8_t>(ch)) * 1099511628211ull;
    }
    return static_cast<size_t>(h ^ (h >> 32));
}

// The set holding exactly `v`, with one more reference.
VarSet* intern(const VarValues& v) {
    uint32_t known = known_mask(v);
    if (known == 0)
        return &g_empty;
    size_t h = hash_values(v, known);
    if (!g_sets)
        g_sets = new SetTable();
    VarSet* s = g_sets->find(h, [&](const VarSet& x) {
        if (x.hash != h || x.known != known)
            return false;
        for (size_t i = 0; i < kMaxVars; ++i)
            if (x.get(i) != v[i])
                return false;
        return true;
    });
    if (s) {
        s->refs++;
        return s;
    }
    size_t total = 0;
    for (std::string_view x : v)
        total += x.size();
    void* mem = ::operator new(sizeof(VarSet) + total);
    s = new (mem) VarSet{};
    char* out = reinterpret_cast<char*>(s + 1);
    uint32_t pos = 0;
    for (size_t i = 0; i < kMaxVars; ++i) {
        if (!v[i].empty())
            memcpy(out + pos, v[i].data(), v[i].size());
        pos += static_cast<uint32_t>(v[i].size());
        s->end[i] = pos;
    }
    s->hash = h;
    s->known = known;
    s->refs = 1;
    g_sets->insert(*s);
    return s;
}

void release(VarSet* s) noexcept {
    if (s == &g_empty || --s->refs > 0)
        return;
    g_sets->remove(*s);
    s->~VarSet();
    ::operator delete(s);
    if (g_sets->size() == 0) {  // no sets left (exit, or all connections gone)
        delete g_sets;
        g_sets = nullptr;
    }
}

}  // namespace

void var_init(const std::string& extra) {
    static constexpr std::array<const char*, kBuiltinVars> kBuiltin{
        "client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings",
        "application_name"};
    g_var_names.assign(kBuiltin.begin(), kBuiltin.end());
    for (const std::string& n : split_list(extra)) {
        if (var_index(n) < 0 && g_var_names.size() < kMaxVars)
            g_var_names.push_back(n);
    }
}

int var_index(std::string_view name) noexcept {
    for (size_t i = 0; i < g_var_names.size(); ++i) {
        const std::string& v = g_var_names[i];
        if (v.size() == name.size() && strncasecmp(v.data(), name.data(), v.size()) == 0)
            return static_cast<int>(i);
    }
    return -1;
}

size_t var_count() noexcept {
    return g_var_names.size();
}

const std::string& var_name(size_t idx) noexcept {
    return g_var_names[idx];
}

VarCache::VarCache() noexcept : set_(&g_empty) {}

VarCache::VarCache(const VarCache& o) noexcept : set_(o.set_) {
    if (set_ != &g_empty)
        set_->refs++;
}

VarCache& VarCache::operator=(const VarCache& o) noexcept {
    if (o.set_ != &g_empty)
        o.set_->refs++;  // first: o may be this
    release(set_);
    set_ = o.set_;
    return *this;
}

VarCache::~VarCache() {
    release(set_);
}

std::string_view VarCache::get(size_t idx) const noexcept {
    return set_->get(idx);
}

VarValues VarCache::values() const noexcept {
    VarValues v;
    for (size_t i = 0; i < kMaxVars; ++i)
        v[i] = set_->get(i);
    return v;
}

void VarCache::set(size_t idx, std::string_view value) {
    if (same_value(set_->get(idx), value))
        return;
    VarValues v = values();
    v[idx] = value;
    assign(v);
}

void VarCache::assign(const VarValues& v) {
    VarSet* n = intern(v);  // before the release: v may view into the old set
    release(set_);
    set_ = n;
}

size_t var_set_count() noexcept {
    return g_sets ? g_sets->size() : 0;
}

size_t var_set_refs(const VarCache& v) noexcept {
    return v.set_ == &g_empty ? 0 : v.set_->refs;
}

}  // namespace sluice
