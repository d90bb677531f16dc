// Prepared statements in transaction pooling (DESIGN.md section 5): one process-wide registry
// keyed by (query text, parameter types) gives each distinct statement one server-side name;
// clients keep their own names mapped to registry entries, servers keep an LRU set of the
// entries they have prepared.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace sluice {

struct PsEntry {
    uint64_t id = 0;
    std::string name;         // server-side name, "sluice_<id>"
    std::string key;          // registry key: query + NUL + parameter type bytes
    std::string_view query;   // view into key
    std::string_view params;  // Int16 count + Int32 OIDs, raw, view into key
    uint32_t refs = 0;        // client mappings + server sets holding it
    // Raised when a server refused a Bind or Describe of it with 0A000 (its result type
    // changed, e.g. ALTER TABLE ... TYPE): copies servers prepared before are made anew.
    uint32_t generation = 0;
    bool verified = false;    // some server answered its Parse with ParseComplete
};

// Interns a statement; the result has one more reference (release with ps_unref).
PsEntry* ps_intern(std::string_view query, std::string_view params);
// Online restart: statement names go on from `first` (sluice_<first>, ...), so that they
// cannot collide with those an earlier process prepared on servers taken over from it.
void ps_names_start_at(uint64_t first);
// The registry entry for a statement, or nullptr (no reference taken).
PsEntry* ps_find(std::string_view query, std::string_view params);
void ps_ref(PsEntry* e) noexcept;
void ps_unref(PsEntry* e) noexcept;
// Number of distinct statements in the registry (SHOW/tests).
size_t ps_registry_size() noexcept;

// A client's prepared statements: its names -> entries, and the bookkeeping of its named
// Parses and Closes in flight. All of it lives in a body allocated at first use (most clients
// never prepare a named statement and carry one null pointer) and freed when a removal leaves
// it empty.
class ClientPs {
public:
    ClientPs() = default;
    ClientPs(const ClientPs&) = delete;
    ClientPs& operator=(const ClientPs&) = delete;
    ~ClientPs();
    PsEntry* find(std::string_view name) const;
    // Requires: name not present. Takes a reference of its own.
    void add(std::string_view name, PsEntry* e);
    // Which of the client's names the last successful find() matched: a serial number each
    // name gets when added (never 0; 16 bits, enough to tell apart the names in flight).
    uint16_t found() const noexcept {
        return body_ && body_->last ? body_->last->second.serial : uint16_t{0};
    }
    // The client's name for e with that serial (still there or closed since), else any of
    // its names for e, else empty: PostgreSQL's errors name the statement, and the server
    // knows it as sluice_<n>.
    std::string_view name_of(const PsEntry* e, uint16_t serial) const noexcept;
    // Removes a name (no-op when absent).
    void remove(std::string_view name);
    // Removes one name mapped to e (undoing a Parse the server never ran).
    void remove_entry(PsEntry* e);
    // Forgets every name; the lists below stay.
    void clear();
    // DISCARD ALL / DEALLOCATE ALL sent: every name goes now (the Parses pipelined behind it
    // start afresh) but is kept aside until the server answers: forget_done(true) drops them,
    // forget_done(false) (the statement failed: in a transaction block, in a failed one)
    // brings back those no Parse since has taken.
    void forget_all();
    void forget_done(bool ran);
    size_t size() const noexcept { return body_ ? body_->map.size() : 0; }
    // Calls f(name, entry) for each of the client's statements (online restart).
    template <typename F> void for_each(F&& f) const {
        if (body_)
            for (const auto& [name, n] : body_->map)
                f(std::string_view(name), *n.e);
    }

    // Names of this client's Parses not yet answered, oldest first, each with syncs() as it
    // was when the Parse passed: a Parse the server discards after an error takes exactly its
    // own name back out. (vectors, not deques: an empty std::deque allocates ~600 bytes)
    std::vector<std::pair<std::string, uint64_t>>& unconfirmed() { return body().unconfirmed; }
    bool has_unconfirmed() const noexcept { return body_ && !body_->unconfirmed.empty(); }
    // Names removed by a Close 'S' whose synthesized CloseComplete is not out yet, with a
    // reference to their statement (nullptr if the name was unknown).
    struct Closed {
        std::string name;
        PsEntry* e;  // nullptr if the name was unknown
        uint16_t serial;
    };
    std::vector<Closed>& closed() { return body().closed; }
    bool has_closed() const noexcept { return body_ && !body_->closed.empty(); }
    // Removes a name, keeping it in closed() (its entry referenced) until pop_closed() or
    // until a discarded request puts it back.
    void close_name(std::string_view name);
    // The oldest closed name's request was answered: it is gone for good.
    void pop_closed() noexcept;
    // Drops the closed list and its references (the client is closing).
    void release_closed() noexcept;
    // Sync/Query messages the client passed to servers since its first named statement.
    uint64_t syncs() const noexcept { return body_ ? body_->syncs : 0; }
    void count_sync() noexcept {
        if (body_)
            body_->syncs++;
    }

private:
    // Looked up by the name as it sits in the client's message, without a copy.
    struct NameHash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const noexcept {
            return std::hash<std::string_view>{}(s);
        }
    };
    struct Named {
        PsEntry* e;
        uint16_t serial;
    };
    using Map = std::unordered_map<std::string, Named, NameHash, std::equal_to<>>;
    struct Body {
        Map map;
        // The name find() returned last: a client binds the same few statements over and
        // over, and one compare is cheaper than hashing the name. Reset by every erase.
        const Map::value_type* last = nullptr;
        std::vector<std::pair<std::string, uint64_t>> unconfirmed;
        std::vector<Closed> closed;
        uint16_t serial = 0;  // of the last name added
        std::vector<std::pair<std::string, PsEntry*>> forgotten;  // forget_all()
        uint64_t syncs = 0;
    };
    Body& body() {
        if (!body_)
            body_ = std::make_unique<Body>();
        return *body_;
    }
    void drop_body_if_empty() noexcept;
    std::unique_ptr<Body> body_;
};

// References to the entries named by requests a server connection still owes replies for
// (Expect::ps). A DISCARD ALL, a DEALLOCATE ALL or an eviction can drop the maps' references
// while such a request is in flight; the entry must outlive the replies that concern it.
// The owner lets go of them together once nothing is owed (and at destruction).
class PsPins {
public:
    PsPins() = default;
    PsPins(const PsPins&) = delete;
    PsPins& operator=(const PsPins&) = delete;
    ~PsPins() { release(); }
    void pin(PsEntry* e) {
        ps_ref(e);
        pins_.push_back(e);
    }
    // Takes over a reference the caller holds (an evicted entry leaving a server's set).
    void adopt(PsEntry* e) { pins_.push_back(e); }
    void release() noexcept {
        for (PsEntry* e : pins_)
            ps_unref(e);
        pins_.clear();
    }

private:
    std::vector<PsEntry*> pins_;
};

// The statements one server connection has prepared, least recently used first out.
class ServerPs {
public:
    ServerPs() = default;
    ServerPs(const ServerPs&) = delete;
    ServerPs& operator=(const ServerPs&) = delete;
    ~ServerPs() { clear(); }
    bool has(PsEntry* e) const { return set_.count(e) != 0; }
    enum class Copy : uint8_t { None, Current, Stale };
    // Marks e used now and says whether the server has it, as it is now or from before its
    // generation changed (the caller closes a stale copy before preparing it again).
    Copy touch(PsEntry* e);
    // The same without marking it used.
    Copy copy(PsEntry* e) const;
    // Adds e (current); if the set is full, removes and returns the least recently used
    // entry, whose reference passes to the caller (it closes the statement on the server),
    // else nullptr.
    PsEntry* add(PsEntry* e, size_t max);
    void remove(PsEntry* e);
    // Removes e unless its copy is of unknown generation (undoing a Parse the server
    // discarded: a copy mark_unknown() kept may still be on the server).
    void remove_current(PsEntry* e);
    // The server may or may not have e now, of a generation no longer known (a Close of ours
    // it discarded, a DEALLOCATE a client sent): stale, so that its next use closes it
    // before preparing it (takes a reference of its own if e had left the set).
    void mark_unknown(PsEntry* e);
    // mark_unknown() of every copy (a DISCARD ALL sent that may yet fail).
    void mark_all_unknown();
    void clear();
    size_t size() const noexcept { return set_.size(); }

private:
    struct Use {
        uint64_t tick;         // last use
        uint32_t generation;   // PsEntry::generation when prepared, or kUnknown
    };
    static constexpr uint32_t kUnknown = UINT32_MAX;
    static Copy of(const PsEntry& e, const Use& u) noexcept {
        return u.generation == e.generation ? Copy::Current : Copy::Stale;
    }
    std::unordered_map<PsEntry*, Use> set_;
    uint64_t tick_ = 0;
};

// A client's statements as text (online restart: an extra SHOW FDS column between sluice
// processes): "<name>:<query>:<parameter types>" in hex, one per statement, ';' after each.
std::string ps_export(const ClientPs& ps);
// Adds the statements of such a text to ps; false when it is malformed (ps may have some).
bool ps_import(std::string_view text, ClientPs& ps);

// Whether a Parse/Bind/Describe/Close names a prepared statement, read from the first bytes
// of its body. Returns false when those bytes have not arrived yet.
[[nodiscard]] bool peek_statement_named(uint8_t type, std::span<const uint8_t> body_start,
                                        bool& named) noexcept;

// Statement texts that drop prepared statements, as PostgreSQL's grammar reads them: keywords
// in any case, blanks around, ';' and NUL at the end; an unquoted name folded to lower case
// (ASCII), a quoted one as written ("" is a quote). Comments, several statements: None.
enum class Forget : uint8_t {
    None,
    DiscardAll,     // DISCARD ALL
    DeallocateAll,  // DEALLOCATE [PREPARE] ALL
    One,  // DEALLOCATE [PREPARE] name (sets `name`)
};
[[nodiscard]] Forget read_forget(std::string_view text, std::string& name);
// Whether a text (or what arrived of it) may be one of those: its first character other than
// blanks, ';' and NUL is a D. The cheap test for every simple Query while statements are
// cached; the others take the plain path.
[[nodiscard]] inline bool may_forget(std::span<const uint8_t> text) noexcept {
    for (uint8_t ch : text) {
        if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r' && ch != ';' && ch != '\0')
            return ch == 'D' || ch == 'd';
    }
    return true;
}

// Whether a statement text is one that PostgreSQL still runs in a failed transaction block
// (its IsTransactionExitStmt): COMMIT, END, ROLLBACK, ABORT, ROLLBACK TO [SAVEPOINT], PREPARE
// TRANSACTION, in any case, after blanks and comments. Read for valid texts only: a text
// the server has parsed, or one whose errors the server will report anyway.
[[nodiscard]] bool is_transaction_exit(std::string_view text);

// Message bodies (after the 5-byte header) sluice rewrites.
struct ParseMsg {
    std::string_view name;
    std::string_view query;
    std::string_view params;  // Int16 count + OIDs, raw
};
[[nodiscard]] bool parse_parse_msg(std::span<const uint8_t> body, ParseMsg& out) noexcept;
// Bind: portal, statement name, then everything else (kept raw).
struct BindMsg {
    std::string_view portal;
    std::string_view statement;
    std::span<const uint8_t> rest;
};
[[nodiscard]] bool parse_bind_msg(std::span<const uint8_t> body, BindMsg& out) noexcept;

void write_parse(std::string& out, std::string_view name, std::string_view query,
                 std::string_view params);
void write_bind(std::string& out, std::string_view portal, std::string_view statement,
                std::span<const uint8_t> rest);
void write_describe_or_close(std::string& out, uint8_t type, uint8_t what, std::string_view name);
// A Parse that prepares nothing and fails in any state: with 25P02 inside a failed transaction
// block, else with 42703 (column "sluice_checks_the_transaction_state" does not exist). How
// the cache gets PostgreSQL's answer where it depends on the state the request runs in.
void write_state_probe(std::string& out);

}  // namespace sluice
