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
}  // namespace

void RequestTracker::reset() noexcept {
    q_.clear();
    dropped_.clear();
    fakes_ = 0;
    head_ = 0;
    status_ = 'I';
    st_ = States{};
    client_owes_term_ = unsynced_ = false;
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
        unsynced_ = true;
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
    if (fakes_ != 0 || !dropped_.empty())
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
    ReplyAction act = empty() ? ReplyAction::Forward : q_[head_].action;
    if (type == msg::kReadyForQuery) {
        // It answers the Sync/Query that ends the batch, not the head: after an error the
        // head may be a request the server discarded (an injected Parse that failed, Skip).
        for (size_t i = head_; i < q_.size(); ++i) {
            if (ends_batch(q_[i].type)) {
                act = q_[i].action;
                break;
            }
        }
    }
    if (act == ReplyAction::Fake)
        act = ReplyAction::Forward;  // only while discarding after an error: asynchronous
    if (type == msg::kNoticeResponse || type == msg::kNotification)
        act = ReplyAction::Forward;  // asynchronous: the client's, whatever is at the head
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
        if (st_.copy_in)
            end_copy_in();
        st_.copy_out = false;
        if (head_type == msg::kExecute)
            pop();
        break;
    case msg::kCopyInResponse: {
        st_.copy_in = true;
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
        if (st_.copy_in)
            end_copy_in();
        st_.copy_out = false;
        st_.failed = true;
        break;
    case msg::kReadyForQuery:
        status_ = rfq_status;
        // Pops the request this answers (Sync, Query or FunctionCall). After an error the
        // server discarded everything up to that Sync, so those entries go too.
        while (!empty()) {
            const Expect& e = q_[head_];
            uint8_t t = e.type;
            if (e.action == ReplyAction::Fake)
                --fakes_;
            if (st_.failed && !ends_batch(t))
                dropped_.push_back(e);
            pop();
            if (ends_batch(t))
                break;
        }
        st_.failed = false;
        drop_stray_copy_ends();
        break;
    default:
        break;
    }
    return act;
}

}  // namespace sluice
