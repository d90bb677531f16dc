// Request accounting for one server connection (DESIGN.md section 4, protocol.md section 9):
// a FIFO of the replies the server still owes, pushed as client messages pass towards it and
// popped as its replies pass back. COPY-aware: Syncs sent inside a COPY IN owe nothing, and
// CopyDone/CopyFail are matched to their COPY by order, not by timing.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "sluice/proto/packet.h"

namespace sluice {

// What happens to the replies of one request.
enum class ReplyAction : uint8_t {
    Forward,       // the client asked; pass replies on
    Skip,          // sluice injected the request; swallow its replies
    Fake,          // sluice answers it itself (nothing was sent): see take_fake()
    ReplaceError,  // injected to make the server fail; its ErrorResponse is replaced (but
                   // 25P02 passes: the transaction had failed by then, PostgreSQL's answer)
};

struct Expect {
    uint8_t type;         // frontend message type ('Q', 'P', 'S', 'c', ...)
    ReplyAction action;
    bool copy_term;       // a CopyDone/CopyFail known to end the current COPY IN
    bool client_parse = false;  // a client's named Parse (prepared-statement cache)
    // Ends one of the client's statement names (a Close, or DEALLOCATE name): the name waits
    // in ClientPs::closed() until the reply, and comes back if the server discards this.
    bool client_close = false;
    uint8_t fake = 0;           // Fake: the reply type to synthesize ('1', '3')
    // Bind/Describe of a client's statement: which of its names (ClientPs::found()).
    uint16_t client_name = 0;
    // The statement of a Parse, Bind, Describe or Close the cache sent or answered (opaque
    // here; the server keeps it alive while the request is owed: Server::pin_ps).
    void* ps = nullptr;
};
static_assert(sizeof(Expect) <= 16, "Expect: one per request in flight, keep it small");

// The request a reply of this type completes when it is at the head (0: none).
constexpr uint8_t reply_completes(uint8_t reply) noexcept {
    switch (reply) {
    case msg::kParseComplete:
        return msg::kParse;
    case msg::kBindComplete:
        return msg::kBind;
    case msg::kCloseComplete:
        return msg::kClose;
    case msg::kRowDescription:
    case msg::kNoData:
        return msg::kDescribe;
    case msg::kCommandComplete:
    case msg::kEmptyQuery:
    case msg::kPortalSuspended:
        return msg::kExecute;
    default:
        return 0;
    }
}

// RequestTracker::completed_by() as a table (the switch compiled to a chain of compares,
// and it runs for every reply).
inline constexpr auto kReplyCompletes = [] {
    std::array<uint8_t, 256> t{};
    for (unsigned i = 0; i < t.size(); ++i)
        t[i] = reply_completes(static_cast<uint8_t>(i));
    return t;
}();

// The reply types RequestTracker::server_sees() looks at further (ParseComplete,
// CommandComplete), as a table: one load per reply instead of two compares.
inline constexpr auto kServerMaySee = [] {
    std::array<bool, 256> t{};
    t[msg::kParseComplete] = true;
    t[msg::kCommandComplete] = true;
    return t;
}();

class RequestTracker {
public:
    // A frontend message is passing to the server. Flush/CopyData/Terminate owe nothing.
    void on_request(uint8_t type, ReplyAction action = ReplyAction::Forward);
    // on_request(type) for the client's own messages (inline: several per transaction).
    void on_plain_request(uint8_t type) {
        if (type == msg::kCopyDone || type == msg::kCopyFail) {
            on_copy_end(type, ReplyAction::Forward);
            return;
        }
        if (!note_request(type))
            return;
        Expect e{};  // Forward, all else zero: two 8-byte stores
        e.type = type;
        if (head_ != 0) [[unlikely]] {
            push_compacting(e);
            return;
        }
        q_.push_back(e);
    }
    // Same, with prepared-statement details (type/action as above).
    void on_request(const Expect& e);
    // A backend message arrived. Returns what to do with it (the action of the request it
    // answers; Forward for asynchronous messages). `rfq_status` is the ReadyForQuery byte.
    ReplyAction on_reply(uint8_t type, uint8_t rfq_status = 0) {
        if (take_plain_reply(type))
            return ReplyAction::Forward;
        // Inline too: the ReadyForQuery that answers the last Sync/Query of a plain cycle.
        if (type == msg::kReadyForQuery && plain_head() && size() == 1) {
            uint8_t head = q_[head_].type;
            if (head == msg::kSync || head == msg::kQuery || head == msg::kFunctionCall) {
                status_ = rfq_status;
                pop_head();
                return ReplyAction::Forward;
            }
        }
        return on_reply_full(type, rfq_status);
    }
    // The inline part of on_reply() for a row, description or completion answering the
    // client's own request at the head with no error, COPY or synthesized reply pending
    // (nearly every reply): pops what it completes and returns true. False: nothing changed,
    // on_reply() must decide.
    bool take_plain_reply(uint8_t type) noexcept {
        return plain_head() && take_step(reply_step(type, q_[head_].type));
    }
    // take_plain_reply() for a server that passes such replies straight on (Server's plain
    // path): also false for what the full path must see (server_sees()). `data`: what
    // arrived of the message.
    bool take_passthrough_reply(uint8_t type, std::span<const uint8_t> data,
                                bool statements_cached) noexcept {
        return plain_head() &&
               !server_sees(type, data, 1 + read_be32(data.data() + 1), q_[head_],
                            statements_cached) &&
               take_step(reply_step(type, q_[head_].type));
    }
    // take_passthrough_reply() over the whole messages at the front of `data` (a server's
    // input): returns the bytes of those it took, stopping at the first it would refuse.
    // During a COPY OUT of the client's own request the run is its CopyData rows.
    size_t take_passthrough_run(std::span<const uint8_t> data, uint32_t max_len,
                                bool statements_cached) noexcept {
        size_t off = 0;
        uint8_t t;
        uint32_t len;
        if (fakes_ != 0)  // the run changes neither this nor the states below
            return 0;
        if (unusual()) {
            if (!copy_out_only() || empty() || q_[head_].action != ReplyAction::Forward)
                return 0;
            while (whole_message_at(data, off, max_len, t, len) && t == msg::kCopyData)
                off += len;
            return off;
        }
        while (!empty() && q_[head_].action == ReplyAction::Forward &&
               whole_message_at(data, off, max_len, t, len) &&
               !server_sees(t, data.subspan(off, len), len, q_[head_], statements_cached) &&
               take_step(reply_step(t, q_[head_].type)))
            off += len;
        return off;
    }
    // Whether a CommandComplete of `len` bytes (the whole message) may carry the tag RESET or
    // DISCARD ALL, after which the client's tracked parameters go back to its own defaults
    // (Server::restore_client_defaults). The length alone decides here, with no byte of the
    // tag read: "RESET" and "DISCARD ALL" are 5 and 11 characters; other tags of those
    // lengths (BEGIN, GRANT, SELECT 1000 ...) are then looked at whole.
    static constexpr bool may_reset_tag(uint32_t len) noexcept {
        return len == kTypedHeaderLen + sizeof("RESET") ||
               len == kTypedHeaderLen + sizeof("DISCARD ALL");
    }
    // Nothing owed, last ReadyForQuery said idle, no COPY in either direction, and the count
    // of ReadyForQuery owed is sure (not uncertain after a failed COPY IN, see below).
    bool idle() const noexcept {
        return q_.size() == head_ && status_ == 'I' && !busy_states() && !client_owes_term_ &&
               !unsynced_;
    }
    // A COPY IN failed while Syncs sent inside its data were ignored by the tracker: those
    // that PostgreSQL read after the failure are answered after all, and which they are
    // cannot be told from here. The count is a lower bound until a marker query settles it:
    // due when nothing else is owed and the server will be idle once it has read what the
    // client sent (the caller then sends an empty Query and calls start_resync()).
    bool wants_resync() const noexcept {
        return st_.uncertain && !st_.resync && empty() && !st_.failed && !in_copy() &&
               !client_owes_term_ && !unsynced_;
    }
    // The marker went out: every reply before its EmptyQueryResponse is the client's (the
    // Syncs in doubt, or requests the count lost), then its own EmptyQueryResponse and
    // ReadyForQuery are swallowed and the count is exact again.
    void start_resync() {
        st_.resync = true;
        marker_replied_ = false;
        push({msg::kQuery, ReplyAction::Skip, false});
    }
    bool resyncing() const noexcept { return st_.resync; }
    bool empty() const noexcept { return q_.size() == head_; }
    // An ErrorResponse was seen: the server discards requests up to the next Sync.
    bool failed() const noexcept { return st_.failed; }
    // If the head is a Fake entry that is due (nothing earlier owed, no error pending), pops it
    // and returns it; the caller emits its reply. Returns false otherwise.
    bool take_fake(Expect& out);
    // Every reply still owed is to be dropped (its client left: Server::run_orphaned()).
    void skip_all() noexcept {
        for (size_t i = head_; i < q_.size(); ++i)
            q_[i].action = ReplyAction::Skip;
    }
    // Number of queued Fake entries (the caller holds replies whole while any exist).
    size_t fakes() const noexcept { return fakes_; }
    // Entries the server discarded after an error (never answered); the caller undoes their
    // effects (prepared statements) and clears the list.
    std::vector<Expect>& dropped() noexcept { return dropped_; }
    size_t size() const noexcept { return q_.size() - head_; }
    bool in_copy() const noexcept { return st_.copy_in || st_.copy_out || st_.copy_both; }
    // Every reply owed will come without anything more from the client: no extended-protocol
    // messages without their Sync, no COPY IN or BOTH waiting for data, the count sure, and
    // no synthesized reply (those are emitted to the client).
    bool ends_alone() const noexcept {
        return !unsynced_ && !sync_due_ && !client_owes_term_ && !st_.copy_in &&
               !st_.copy_both && !st_.uncertain && !st_.resync && fakes_ == 0;
    }
    bool copy_both() const noexcept { return st_.copy_both; }
    // The client still has to end a COPY IN with CopyDone/CopyFail.
    bool client_in_copy() const noexcept { return client_owes_term_; }
    uint8_t status() const noexcept { return status_; }
    // Every reply still owed goes to the client as it is (no injected request or synthesized
    // reply pending): a process that knows nothing of the requests can pass them on (online
    // restart; the statement cache's bookkeeping of them is lost, which only costs a Parse).
    bool owes_only_forwarded() const noexcept;
    // Whether the transaction status of the last ReadyForQuery (status()) still holds when a
    // message sent now runs: nothing owed that ends a batch or runs a statement (an earlier
    // batch's Sync or Query, an Execute of this batch may each change it).
    bool status_settled() const noexcept;
    // Forgets everything (new connection, or after a reset).
    void reset() noexcept;
    // Head entry (for tests and the prepared-statement cache); nullptr when empty.
    const Expect* head() const noexcept { return empty() ? nullptr : &q_[head_]; }

private:
    ReplyAction on_reply_full(uint8_t type, uint8_t rfq_status);
    ReplyAction on_resync_reply(uint8_t type, uint8_t rfq_status);
    // Something is owed, the head is the client's own request, no error, COPY or
    // synthesized reply pending.
    bool plain_head() const noexcept {
        return !empty() && fakes_ == 0 && !unusual() &&
               q_[head_].action == ReplyAction::Forward;
    }
    // The request a reply of this type completes when it is at the head ('1' -> 'P'; 0: none).
    static uint8_t completed_by(uint8_t reply) noexcept { return kReplyCompletes[reply]; }
    // What a plain reply does to the head request: nothing (rows, or the reply of another
    // request type: Describe's RowDescription while a Query is at the head), completes it, or
    // it is no plain reply at all.
    enum class Step : uint8_t { Stop, Keep, Pop };
    static Step reply_step(uint8_t type, uint8_t head_type) noexcept {
        if (type == msg::kDataRow)
            return Step::Keep;
        uint8_t completes = completed_by(type);
        if (completes == 0)
            return Step::Stop;
        return head_type == completes ? Step::Pop : Step::Keep;
    }
    // Requires !empty() for Pop.
    bool take_step(Step s) noexcept {
        if (s == Step::Pop)
            pop_head();
        return s != Step::Stop;
    }
    // Replies the server's full path must see: the ParseComplete of a cached or client-named
    // statement (the statement cache verifies and confirms it), and a CommandComplete whose
    // tag may be RESET or DISCARD ALL (may_reset_tag()) or, while statements are cached,
    // DISCARD ALL or DEALLOCATE ALL (what arrived of it begins one of them: DELETE, DROP, DO,
    // DECLARE ... pass). `reply`: what arrived; `len`: the whole message's length.
    static bool server_sees(uint8_t type, std::span<const uint8_t> reply, uint32_t len,
                            const Expect& head, bool statements_cached) noexcept {
        if (!kServerMaySee[type])
            return false;
        if (type == msg::kParseComplete)
            return head.ps || head.client_parse || head.client_close;
        if (may_reset_tag(len))
            return true;
        return statements_cached &&
               (reply.size() <= kTypedHeaderLen ||
                (reply[kTypedHeaderLen] == 'D' &&
                 (begins(reply.subspan(kTypedHeaderLen), "DISCARD ALL") ||
                  begins(reply.subspan(kTypedHeaderLen), "DEALLOCATE ALL"))));
    }
    // Whether `part` (non-empty) is the start of `text`, or `text` the start of `part`.
    static bool begins(std::span<const uint8_t> part, std::string_view text) noexcept {
        return std::memcmp(part.data(), text.data(), std::min(part.size(), text.size())) == 0;
    }
    // Requires !empty().
    void pop_head() noexcept {
        if (++head_ == q_.size()) {
            q_.clear();
            head_ = 0;
        }
    }
    // The batch state a request of this type changes; true when it owes replies (is pushed).
    // CopyDone/CopyFail go to on_copy_end() instead.
    bool note_request(uint8_t type) noexcept {
        switch (type) {
        case msg::kQuery:
        case msg::kFunctionCall:
            unsynced_ = false;  // its ReadyForQuery ends any open implicit transaction
            return true;
        case msg::kParse:
        case msg::kBind:
        case msg::kDescribe:
        case msg::kExecute:
        case msg::kClose:
            unsynced_ = true;
            sync_due_ = true;
            return true;
        case msg::kSync:
            unsynced_ = false;
            sync_due_ = false;
            // The server ignores Sync while in COPY IN (before the client's CopyDone/CopyFail),
            // unless the COPY fails before it reads it (window_syncs_).
            if (st_.copy_in && client_owes_term_) {
                ++window_syncs_;
                return false;
            }
            return true;
        default:
            return false;  // Flush, CopyData, Terminate, password messages: no reply of their own
        }
    }
    void push(Expect e) {
        if (head_ != 0) [[unlikely]] {
            push_compacting(e);
            return;
        }
        q_.push_back(e);
    }
    void push_compacting(Expect e);
    void on_copy_end(uint8_t type, ReplyAction action);
    void pop();
    void erase(size_t idx);  // idx relative to head_
    void drop_stray_copy_ends();
    void end_copy_in();

    std::vector<Expect> q_;  // live entries are q_[head_ .. size)
    std::vector<Expect> dropped_;
    size_t fakes_ = 0;
    size_t head_ = 0;
    uint8_t status_ = 'I';
    // The states that take every reply off the inline paths, side by side so that one load
    // tests them all (unusual()).
    struct States {
        bool failed = false;     // ErrorResponse seen: clear up to the next Sync at ReadyForQuery
        bool copy_in = false;
        bool copy_out = false;
        bool copy_both = false;
        bool uncertain = false;  // ReadyForQuery owed is a lower bound (wants_resync())
        bool resync = false;     // the marker query is out (start_resync())
        bool unused[2] = {};
    } st_;
    static_assert(sizeof(States) == sizeof(uint64_t));
    bool unusual() const noexcept {
        uint64_t v;
        memcpy(&v, &st_, sizeof v);
        return v != 0;
    }
    // A COPY in either direction, or the count of ReadyForQuery uncertain or resyncing: every
    // state but failed, in one test.
    bool busy_states() const noexcept {
        States busy{};
        busy.copy_in = busy.copy_out = busy.copy_both = busy.uncertain = busy.resync = true;
        uint64_t v, mask;
        memcpy(&v, &st_, sizeof v);
        memcpy(&mask, &busy, sizeof mask);
        return (v & mask) != 0;
    }
    bool copy_out_only() const noexcept {
        return st_.copy_out && !st_.failed && !st_.copy_in && !st_.copy_both;
    }
    bool client_owes_term_ = false;  // COPY IN started and its CopyDone/CopyFail not yet seen
    // The error being cleared (failed) came from an extended-protocol message: PostgreSQL
    // then skips everything up to the next Sync, simple Queries and FunctionCalls too.
    bool ext_error_ = false;
    bool marker_replied_ = false;  // resync: the marker's EmptyQueryResponse arrived
    bool head_replied_ = false;    // uncertain: the head request has had a reply
    uint32_t window_syncs_ = 0;    // Syncs sent inside the current COPY IN's data
    // Extended-protocol messages were sent after the last Sync/Query: the server is inside an
    // implicit transaction that only a Sync (or a simple Query) will end.
    bool unsynced_ = false;
    // Extended-protocol messages were sent after the last Sync: should one of them fail, the
    // server skips everything (a simple Query too) until a Sync comes.
    bool sync_due_ = false;
};

}  // namespace sluice
