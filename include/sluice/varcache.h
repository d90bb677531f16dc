// Tracked parameters (client_encoding, DateStyle, TimeZone, standard_conforming_strings,
// application_name and track_extra_parameters): which names are tracked, and each
// connection's values of them as a reference to an interned, shared set.
//
// Every client of a pool usually has the same values (pgbench: all of them), so a connection
// holds one pointer to a refcounted, immutable set of values kept once process-wide. Equal
// values mean the same set, so "does this server need SETs for this client" starts with a
// pointer comparison.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

namespace sluice {

inline constexpr size_t kMaxVars = 16;
// The first tracked names are always PgBouncer's five (client_encoding, DateStyle, TimeZone,
// standard_conforming_strings, application_name); track_extra_parameters come after them.
inline constexpr size_t kBuiltinVars = 5;

// Index of a tracked parameter name (case-insensitive), or -1.
int var_index(std::string_view name) noexcept;
size_t var_count() noexcept;
const std::string& var_name(size_t idx) noexcept;
// Rebuilds the tracked list from track_extra_parameters (at start-up, before any VarCache
// holds a value).
void var_init(const std::string& extra);

// Values by tracked index. A value is either set (possibly to "") or not set at all: the
// server never said and the client never asked. Not set is a view without data
// (kVarUnset); a set "" is a view with data (kVarEmpty, or into a packet or a set). The
// difference matters: application_name "" is a value a server must be given (SET
// application_name = ''), not a "whatever the server has". As a VarCache's values(), views
// into its set.
using VarValues = std::array<std::string_view, kMaxVars>;
inline constexpr std::string_view kVarUnset{};
inline constexpr std::string_view kVarEmpty{""};
inline bool var_is_set(std::string_view v) noexcept {
    return v.data() != nullptr;
}
// Equal values: both unset, or both set to the same text.
inline bool same_value(std::string_view a, std::string_view b) noexcept {
    return var_is_set(a) == var_is_set(b) && a == b;
}

struct VarSet;  // one interned set (varcache.cpp)

// One connection's values of the tracked parameters: a counted reference to the interned set
// holding them. Copying shares the set; changing a value moves this handle to the set with
// that value changed (found, or created when no connection has those values yet). A set is
// freed with its last reference. Not thread-safe (the pooler is one thread).
class VarCache {
public:
    VarCache() noexcept;  // every value unset (a shared static set: no allocation)
    VarCache(const VarCache& o) noexcept;
    VarCache& operator=(const VarCache& o) noexcept;
    ~VarCache();

    // The value at a tracked index (kVarUnset when not set). The view lives as long as this handle
    // keeps its set (until the next change of this handle).
    std::string_view get(size_t idx) const noexcept;
    // All values; views with the lifetime of get()'s.
    VarValues values() const noexcept;
    // Sets one value (no-op when equal; kVarUnset unsets). Requires: idx < kMaxVars.
    void set(size_t idx, std::string_view value);
    // Replaces every value at once (one lookup). `v` may view into this handle's own set.
    void assign(const VarValues& v);
    // True when every value is equal: interned sets make that one pointer comparison.
    bool same(const VarCache& o) const noexcept { return set_ == o.set_; }

private:
    friend size_t var_set_refs(const VarCache& v) noexcept;

    VarSet* set_;
};

// Distinct sets alive, the all-empty one not counted (tests and debugging).
size_t var_set_count() noexcept;
// References held on the set that `v` points to (0 for the all-empty set; tests).
size_t var_set_refs(const VarCache& v) noexcept;

}  // namespace sluice
