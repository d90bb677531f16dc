// Request FIFO. The rules and the bugs they avoid are in DESIGN.md section 4.
#include "sluice/proto/tracker.h"

#include "sluice/proto/packet.h"

namespace sluice {
namespace {
bool is_copy_end(uint8_t t) noexcept {
    return t == msg::kCopyDone || t == msg::kCopyFail;
}
bool ends_batch(uint8_t t) noexcept {
    return t == msg::kSync || t == msg::kQuery || t == msg::kFunctionCall;
}
// The messages after whose error PostgreSQL skips to the next Sync (postgres.c sets
// doing_extended_query_message for them; the COPY data of an extended COPY counts as its
// Execute).
bool extended(uint8_t t) noexcept {
    return t == msg::kParse || t == msg::kBind || t == msg::kDescribe || t == msg::kExecute ||
           t == msg::kClose;
}
}  // namespace

void RequestTracker::reset() noexcept {
    q_.clear();
    dropped_.clear();
    fakes_ = 0;
    head_ = 0;
    status_ = 'I';
    st_ = States{};
    client_owes_term_ = unsynced_ = sync_due_ = false;
    ext_error_ = marker_replied_ = head_replied_ = false;
    window_syncs_ = 0;
}

void RequestTracker::on_request(const Expect& e) {
    if (e.action == ReplyAction::Fake) {
        // Answered by sluice; owes nothing from the server but keeps its place in line.
        unsynced_ = true;
        ++fakes_;
        push(e);
        return;
    }
    switch (e.type) {
    case msg::kParse:
    case msg::kBind:
    case msg::kDescribe:
    case msg::kClose:
        unsynced_ = sync_due_ = true;
        push(e);
        return;
    case msg::kQuery:
        unsynced_ = false;
        push(e);
        return;
    default:
        on_request(e.type, e.action);
        return;
    }
}

bool RequestTracker::status_settled() const noexcept {
    for (size_t i = head_; i < q_.size(); ++i) {
        uint8_t t = q_[i].type;
        if (t == msg::kSync || t == msg::kQuery || t == msg::kExecute || t == msg::kFunctionCall)
            return false;
    }
    return true;
}

bool RequestTracker::owes_only_forwarded() const noexcept {
    if (fakes_ != 0 || !dropped_.empty() || st_.uncertain || st_.resync)
        return false;
    for (size_t i = head_; i < q_.size(); ++i) {
        const Expect& e = q_[i];
        if (e.action != ReplyAction::Forward)
            return false;
    }
    return true;
}

bool RequestTracker::take_fake(Expect& out) {
    if (empty() || st_.failed || q_[head_].action != ReplyAction::Fake)
        return false;
    out = q_[head_];
    --fakes_;
    pop();
    return true;
}

void RequestTracker::push_compacting(Expect e) {
    if (head_ > 0 && head_ == q_.size()) {
        q_.clear();
        head_ = 0;
    } else if (head_ >= 64 && head_ * 2 >= q_.size()) {
        q_.erase(q_.begin(), q_.begin() + static_cast<std::ptrdiff_t>(head_));
        head_ = 0;
    }
    q_.push_back(e);
}

void RequestTracker::pop() {
    head_replied_ = false;
    if (head_ < q_.size())
        ++head_;
    if (head_ == q_.size()) {
        q_.clear();
        head_ = 0;
    }
}

void RequestTracker::erase(size_t idx) {
    q_.erase(q_.begin() + static_cast<std::ptrdiff_t>(head_ + idx));
}

void RequestTracker::on_request(uint8_t type, ReplyAction action) {
    if (is_copy_end(type))
        on_copy_end(type, action);
    else if (note_request(type))
        push({type, action, false});
}

void RequestTracker::on_copy_end(uint8_t type, ReplyAction action) {
    if (client_owes_term_) {
        client_owes_term_ = false;
        // COPY still running: this ends it. If the server already failed the COPY, the
        // message only feeds its discard loop and is answered by nothing.
        if (st_.copy_in)
            push({type, action, true});
        return;
    }
    // Sent before CopyInResponse arrived (pgx), or stray after the COPY ended (postgres.js):
    // order decides when the replies come.
    push({type, action, false});
    drop_stray_copy_ends();
}

void RequestTracker::drop_stray_copy_ends() {
    // A CopyDone/CopyFail at the head cannot belong to a COPY: none can start before it.
    while (!empty() && !st_.copy_in && is_copy_end(q_[head_].type))
        pop();
}

void RequestTracker::end_copy_in() {
    st_.copy_in = false;
    for (size_t i = 0; i < size(); ++i) {
        if (q_[head_ + i].copy_term) {
            erase(i);
            break;
        }
    }
}

ReplyAction RequestTracker::on_reply_full(uint8_t type, uint8_t rfq_status) {
    if (st_.resync)
        return on_resync_reply(type, rfq_status);
    bool async = type == msg::kNoticeResponse || type == msg::kNotification ||
                 type == msg::kParameterStatus;
    if (st_.uncertain && type == msg::kReadyForQuery && !st_.failed && !empty() &&
        q_[head_].type != msg::kSync && !head_replied_) {
        // The head (a Query, Parse, ...) never answers with a bare ReadyForQuery first: this
        // one answers a Sync sent inside the failed COPY's data. The client's.
        status_ = rfq_status;
        return ReplyAction::Forward;
    }
    if (!async && type != msg::kReadyForQuery)
        head_replied_ = true;  // (a ReadyForQuery that pops resets it)
    // After an error of an extended-protocol message the ReadyForQuery answers the next Sync.
    bool to_sync = st_.failed && ext_error_;
    ReplyAction act = empty() ? ReplyAction::Forward : q_[head_].action;
    if (type == msg::kReadyForQuery) {
        // It answers the Sync/Query that ends the batch, not the head: after an error the
        // head may be a request the server discarded (an injected Parse that failed, Skip).
        for (size_t i = head_; i < q_.size(); ++i) {
            if (to_sync ? q_[i].type == msg::kSync : ends_batch(q_[i].type)) {
                act = q_[i].action;
                break;
            }
        }
    }
    if (act == ReplyAction::Fake)
        act = ReplyAction::Forward;  // only while discarding after an error: asynchronous
    if (type == msg::kNotification) {
        act = ReplyAction::Forward;  // asynchronous: the client's, whatever is at the head
    } else if (type == msg::kNoticeResponse) {
        // Asynchronous too, except under a Query of the pooler's own (the SETs that carry the
        // client's values): `identifier ... will be truncated` for a long application_name is
        // that Query's, and the client, which sent the name at startup, never hears it
        // directly.
        bool own_query = !empty() && q_[head_].type == msg::kQuery &&
                         q_[head_].action == ReplyAction::Skip;
        act = own_query ? ReplyAction::Skip : ReplyAction::Forward;
    }
    uint8_t head_type = empty() ? 0 : q_[head_].type;
    switch (type) {
    case msg::kParseComplete:
        if (head_type == msg::kParse)
            pop();
        break;
    case msg::kBindComplete:
        if (head_type == msg::kBind)
            pop();
        break;
    case msg::kCloseComplete:
        if (head_type == msg::kClose)
            pop();
        break;
    case msg::kRowDescription:
    case msg::kNoData:
        if (head_type == msg::kDescribe)
            pop();
        break;
    case msg::kCommandComplete:
    case msg::kEmptyQuery:
    case msg::kPortalSuspended:
        if (st_.copy_in) {
            end_copy_in();
            window_syncs_ = 0;  // the COPY read them all: ignored
        }
        st_.copy_out = false;
        if (head_type == msg::kExecute)
            pop();
        break;
    case msg::kCopyInResponse: {
        st_.copy_in = true;
        window_syncs_ = 0;
        // Find the CopyDone/CopyFail that ends this COPY; Syncs before it owe nothing.
        bool found = false;
        for (size_t i = 1; i < size();) {
            Expect& e = q_[head_ + i];
            if (is_copy_end(e.type)) {
                e.copy_term = true;
                found = true;
                break;
            }
            if (e.type == msg::kSync) {
                erase(i);
                ++window_syncs_;
                continue;
            }
            ++i;
        }
        client_owes_term_ = !found;
        break;
    }
    case msg::kCopyOutResponse:
        st_.copy_out = true;
        break;
    case msg::kCopyBothResponse:
        st_.copy_both = true;
        break;
    case msg::kErrorResponse:
        if (!st_.failed) {
            // The request that failed: the first one the server was sent (the COPY's Execute
            // while its data streams).
            ext_error_ = false;
            for (size_t i = head_; i < q_.size(); ++i) {
                if (q_[i].action != ReplyAction::Fake) {
                    ext_error_ = extended(q_[i].type);
                    break;
                }
            }
        }
        if (st_.copy_in) {
            end_copy_in();
            // Syncs sent inside the data: those read after the failure get a ReadyForQuery.
            if (window_syncs_ > 0)
                st_.uncertain = true;
            window_syncs_ = 0;
        }
        st_.copy_out = false;
        st_.failed = true;
        break;
    case msg::kReadyForQuery: {
        status_ = rfq_status;
        // Pops the request this answers (Sync, Query or FunctionCall). After an error the
        // server discarded everything up to that Sync, so those entries go too; after an
        // extended-protocol error that is everything up to the next Sync, Queries included.
        bool sync_owed = false;
        if (to_sync) {
            for (size_t i = head_; i < q_.size() && !sync_owed; ++i)
                sync_owed = q_[i].type == msg::kSync;
        }
        // Without a Sync owed, such a ReadyForQuery answers a Sync sent inside a failed
        // COPY's data (st_.uncertain): it ends the skipping, and answers nothing counted.
        while (!empty() && (!to_sync || sync_owed)) {
            const Expect& e = q_[head_];
            uint8_t t = e.type;
            if (e.action == ReplyAction::Fake)
                --fakes_;
            bool last = to_sync ? t == msg::kSync : ends_batch(t);
            if (st_.failed && !last)
                dropped_.push_back(e);
            pop();
            if (last)
                break;
        }
        st_.failed = false;
        ext_error_ = false;
        drop_stray_copy_ends();
        break;
    }
    default:
        break;
    }
    return act;
}

ReplyAction RequestTracker::on_resync_reply(uint8_t type, uint8_t rfq_status) {
    if (!marker_replied_) {
        if (type == msg::kEmptyQuery) {
            marker_replied_ = true;
            return ReplyAction::Skip;
        }
        // Owed to the client: a ReadyForQuery of a Sync in doubt, or replies the count lost.
        if (type == msg::kReadyForQuery)
            status_ = rfq_status;
        return ReplyAction::Forward;
    }
    if (type != msg::kReadyForQuery)
        return ReplyAction::Forward;  // asynchronous (a notice, a parameter status)
    // The marker's own: everything before it is answered, the count is exact again.
    status_ = rfq_status;
    pop();  // the marker (at the head since start_resync(): nothing was owed before it)
    st_.resync = st_.uncertain = st_.failed = false;
    ext_error_ = marker_replied_ = false;
    drop_stray_copy_ends();  // sent after the marker, behind it: nothing owes them a reply
    return ReplyAction::Skip;
}

}  // namespace sluice
