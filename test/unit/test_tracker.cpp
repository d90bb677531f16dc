// RequestTracker: the FIFO of replies a server still owes (DESIGN.md section 4). Every step
// of every sequence asserts size()/empty()/idle(), so a test pins the exact accounting, not
// just the end state. The reply streams are what PostgreSQL 15/16 sends for each request
// sequence (checked against postgres.c/copyfromparse.c behaviour described in DESIGN.md).
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
extern "C" {
#include <cmocka.h>
}

#include <cstdio>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/proto/tracker.h"

namespace {

using sluice::Expect;
using sluice::ReplyAction;
using sluice::RequestTracker;

constexpr ReplyAction kFwd = ReplyAction::Forward;
constexpr ReplyAction kSkip = ReplyAction::Skip;

// Client messages, applied in order.
void req(RequestTracker& t, const char* types, ReplyAction a = kFwd) {
    for (const char* p = types; *p; ++p)
        t.on_request(static_cast<uint8_t>(*p), a);
}

ReplyAction rep(RequestTracker& t, char type, char status = 0) {
    return t.on_reply(static_cast<uint8_t>(type), static_cast<uint8_t>(status));
}

// Asserts the tracker's observable state.
#define EXPECT_STATE(t, n, is_idle)                                                                \
    do {                                                                                           \
        assert_int_equal((t).size(), (n));                                                         \
        assert_int_equal((t).empty(), (n) == 0);                                                   \
        assert_int_equal((t).idle(), (is_idle));                                                   \
    } while (0)

void assert_head(const RequestTracker& t, char type) {
    const sluice::Expect* h = t.head();
    if (!h) {
        fail_msg("head is empty, expected '%c'", type);
        return;
    }
    assert_int_equal(h->type, static_cast<uint8_t>(type));
}

ReplyAction head_action(const RequestTracker& t) {
    const sluice::Expect* h = t.head();
    if (!h) {
        fail_msg("head is empty");
        return kFwd;
    }
    return h->action;
}

// The marker round trip a server connection makes when wants_resync() (Server::resync_if_due):
// the marker's EmptyQueryResponse and ReadyForQuery are swallowed, and the count is exact.
void resync(RequestTracker& t) {
    assert_true(t.wants_resync());
    assert_false(t.idle());
    t.start_resync();
    assert_false(t.wants_resync());
    assert_int_equal(rep(t, 'I'), kSkip);
    assert_int_equal(rep(t, 'Z', 'I'), kSkip);
    assert_false(t.resyncing());
}

// ---------------------------------------------------------------- simple protocol

void test_fresh_tracker_is_idle(void**) {
    RequestTracker t;
    EXPECT_STATE(t, 0, true);
    assert_null(t.head());
    assert_int_equal(t.status(), 'I');
    assert_false(t.in_copy());
    assert_false(t.client_in_copy());
}

void test_simple_query(void**) {
    RequestTracker t;
    req(t, "Q");
    EXPECT_STATE(t, 1, false);
    assert_head(t, 'Q');
    assert_int_equal(rep(t, 'T'), kFwd);
    EXPECT_STATE(t, 1, false);
    rep(t, 'D');
    rep(t, 'D');
    EXPECT_STATE(t, 1, false);
    rep(t, 'C');
    EXPECT_STATE(t, 1, false);
    assert_int_equal(rep(t, 'Z', 'I'), kFwd);
    EXPECT_STATE(t, 0, true);
    assert_int_equal(t.status(), 'I');
}

void test_simple_query_multi_statement_and_empty(void**) {
    RequestTracker t;
    req(t, "Q");  // "select 1; select 2"
    rep(t, 'T');
    rep(t, 'D');
    rep(t, 'C');
    rep(t, 'T');
    rep(t, 'D');
    rep(t, 'C');
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);

    req(t, "Q");  // ""
    rep(t, 'I');  // EmptyQueryResponse answers nothing on its own in simple mode
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);

    req(t, "Q");  // error
    rep(t, 'E');
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

void test_ready_for_query_in_transaction(void**) {
    RequestTracker t;
    req(t, "Q");  // BEGIN
    rep(t, 'C');
    rep(t, 'Z', 'T');
    EXPECT_STATE(t, 0, false);
    assert_int_equal(t.status(), 'T');
    req(t, "Q");  // bad statement
    rep(t, 'E');
    rep(t, 'Z', 'E');
    EXPECT_STATE(t, 0, false);
    assert_int_equal(t.status(), 'E');
    req(t, "Q");  // ROLLBACK
    rep(t, 'C');
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

void test_pipelined_simple_queries(void**) {
    RequestTracker t;
    req(t, "QQQ");
    EXPECT_STATE(t, 3, false);
    rep(t, 'C');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 2, false);
    rep(t, 'E');
    rep(t, 'Z', 'I');  // an error in simple mode ends only its own Query
    EXPECT_STATE(t, 1, false);
    rep(t, 'C');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

// ---------------------------------------------------------------- extended protocol

void test_extended_parse_bind_describe_execute_sync(void**) {
    RequestTracker t;
    req(t, "PBDES");
    EXPECT_STATE(t, 5, false);
    assert_head(t, 'P');
    rep(t, '1');
    EXPECT_STATE(t, 4, false);
    assert_head(t, 'B');
    rep(t, '2');
    EXPECT_STATE(t, 3, false);
    assert_head(t, 'D');
    rep(t, 't');  // ParameterDescription: a statement Describe has two replies
    EXPECT_STATE(t, 3, false);
    rep(t, 'T');
    EXPECT_STATE(t, 2, false);
    assert_head(t, 'E');
    rep(t, 'D');
    rep(t, 'D');
    EXPECT_STATE(t, 2, false);
    rep(t, 'C');
    EXPECT_STATE(t, 1, false);
    assert_head(t, 'S');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

void test_extended_describe_portal_nodata_and_close(void**) {
    RequestTracker t;
    req(t, "PBDECS");  // Describe portal of an INSERT: NoData; then Close
    rep(t, '1');
    rep(t, '2');
    EXPECT_STATE(t, 4, false);
    rep(t, 'n');
    EXPECT_STATE(t, 3, false);
    rep(t, 'C');
    EXPECT_STATE(t, 2, false);
    assert_head(t, 'C');
    rep(t, '3');
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

// The status of the last ReadyForQuery holds for a message sent now only while nothing owed
// can change it: an earlier batch's Sync or Query, an Execute of this one.
void test_status_settled(void**) {
    RequestTracker t;
    assert_true(t.status_settled());
    req(t, "PBD");
    assert_true(t.status_settled());  // Parse, Bind, Describe run no statement
    req(t, "E");
    assert_false(t.status_settled());
    req(t, "S");
    rep(t, '1');
    rep(t, '2');
    rep(t, 'n');
    rep(t, 'C');
    assert_false(t.status_settled());  // the Sync's ReadyForQuery is still owed
    rep(t, 'Z', 'E');
    assert_true(t.status_settled());
    assert_int_equal(t.status(), 'E');
    req(t, "Q");
    assert_false(t.status_settled());
}

void test_pipeline_of_n_syncs(void**) {
    for (size_t n : {1u, 2u, 5u, 40u, 200u}) {
        RequestTracker t;
        for (size_t i = 0; i < n; ++i)
            req(t, "PBES");
        EXPECT_STATE(t, 4 * n, false);
        for (size_t i = 0; i < n; ++i) {
            rep(t, '1');
            rep(t, '2');
            rep(t, 'D');
            rep(t, 'C');
            EXPECT_STATE(t, 4 * (n - i) - 3, false);
            rep(t, 'Z', 'I');
            EXPECT_STATE(t, 4 * (n - i - 1), i + 1 == n);
        }
    }
}

void test_pipeline_interleaved_with_replies(void**) {
    // Requests keep arriving while replies come back (push() compaction is exercised).
    RequestTracker t;
    size_t owed = 0;
    for (int i = 0; i < 300; ++i) {
        req(t, "BES");
        owed += 3;
        if (i >= 2) {
            rep(t, '2');
            rep(t, 'C');
            rep(t, 'Z', 'I');
            owed -= 3;
        }
        EXPECT_STATE(t, owed, false);
    }
    for (int i = 0; i < 2; ++i) {
        rep(t, '2');
        rep(t, 'C');
        rep(t, 'Z', 'I');
    }
    EXPECT_STATE(t, 0, true);
}

void test_execute_row_limit_portal_suspended(void**) {
    RequestTracker t;
    req(t, "PBEH");  // Execute with max_rows=2, Flush
    EXPECT_STATE(t, 3, false);
    rep(t, '1');
    rep(t, '2');
    rep(t, 'D');
    rep(t, 'D');
    EXPECT_STATE(t, 1, false);
    rep(t, 's');                // PortalSuspended answers the Execute
    EXPECT_STATE(t, 0, false);  // nothing owed, but the portal's transaction is still open
    req(t, "ES");
    EXPECT_STATE(t, 2, false);
    rep(t, 'D');
    rep(t, 'C');
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

void test_error_in_middle_of_pipeline(void**) {
    RequestTracker t;
    req(t, "PBEPBES");
    req(t, "PBES");
    EXPECT_STATE(t, 11, false);
    rep(t, '1');
    rep(t, '2');
    EXPECT_STATE(t, 9, false);
    rep(t, 'E');  // the first Execute fails; the server skips to the first Sync
    EXPECT_STATE(t, 9, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 4, false);  // second batch still owed
    assert_head(t, 'P');
    rep(t, '1');
    rep(t, '2');
    rep(t, 'C');
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

void test_error_on_parse_skips_whole_batch(void**) {
    RequestTracker t;
    req(t, "PBDES");
    rep(t, 'E');
    EXPECT_STATE(t, 5, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

void test_function_call(void**) {
    RequestTracker t;
    req(t, "F");
    EXPECT_STATE(t, 1, false);
    rep(t, 'V');
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
    req(t, "F");
    rep(t, 'E');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

void test_empty_query_response_for_execute(void**) {
    RequestTracker t;
    req(t, "PBES");
    rep(t, '1');
    rep(t, '2');
    EXPECT_STATE(t, 2, false);
    rep(t, 'I');
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

void test_flush_owes_nothing(void**) {
    RequestTracker t;
    req(t, "H");
    EXPECT_STATE(t, 0, true);
    req(t, "X");  // Terminate owes nothing either
    req(t, "p");  // nor a password message
    req(t, "d");  // nor CopyData outside COPY
    EXPECT_STATE(t, 0, true);
    req(t, "PH");
    EXPECT_STATE(t, 1, false);
    rep(t, '1');
    // Nothing owed, but the Parse opened an implicit transaction that only a Sync ends.
    EXPECT_STATE(t, 0, false);
    req(t, "H");
    EXPECT_STATE(t, 0, false);
    req(t, "S");
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

void test_async_messages_change_nothing(void**) {
    RequestTracker t;
    assert_int_equal(rep(t, 'N'), kFwd);
    assert_int_equal(rep(t, 'A'), kFwd);
    assert_int_equal(rep(t, 'S'), kFwd);
    EXPECT_STATE(t, 0, true);
    req(t, "PBES");
    rep(t, 'N');
    rep(t, 'S');
    rep(t, 'A');
    EXPECT_STATE(t, 4, false);
    assert_head(t, 'P');
    rep(t, '1');
    rep(t, 'N');
    rep(t, '2');
    rep(t, 'S');
    rep(t, 'C');
    rep(t, 'A');
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    rep(t, 'N');
    rep(t, 'A');
    rep(t, 'S');
    EXPECT_STATE(t, 0, true);
}

// A NoticeResponse under the pooler's own Query (a skipped SET) is that Query's, not the
// client's; under the client's requests it is passed on.
void test_notice_of_own_query_is_not_passed_on(void**) {
    RequestTracker t;
    req(t, "Q", kSkip);
    req(t, "Q");
    assert_int_equal(rep(t, 'N'), kSkip);
    assert_int_equal(rep(t, 'A'), kFwd);
    assert_int_equal(rep(t, 'C'), kSkip);
    assert_int_equal(rep(t, 'Z', 'I'), kSkip);
    assert_int_equal(rep(t, 'N'), kFwd);
    assert_int_equal(rep(t, 'C'), kFwd);
    assert_int_equal(rep(t, 'Z', 'I'), kFwd);
    EXPECT_STATE(t, 0, true);
}

// What a departed client sent ends alone only if nothing more from it is needed: every
// extended-protocol message has a Sync after it (should one fail, the server skips a
// simple Query too until a Sync), no COPY IN waits for data.
void test_ends_alone(void**) {
    RequestTracker t;
    req(t, "Q");
    assert_true(t.ends_alone());
    req(t, "PBE");
    assert_false(t.ends_alone());
    req(t, "Q");  // ends the implicit transaction, but not a failed batch
    assert_false(t.ends_alone());
    req(t, "S");
    assert_true(t.ends_alone());
    req(t, "PBES");
    assert_true(t.ends_alone());
    RequestTracker c;
    req(c, "Q");
    rep(c, 'G');  // COPY FROM STDIN: the data must come from the client
    assert_false(c.ends_alone());
}

void test_replies_without_matching_request_do_not_pop(void**) {
    // A reply answers only the kind of request at the head.
    RequestTracker t;
    req(t, "BES");
    rep(t, '1');  // not a Parse at the head
    rep(t, 'T');
    rep(t, '3');
    EXPECT_STATE(t, 3, false);
    rep(t, '2');
    rep(t, 'C');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

// ---------------------------------------------------------------- COPY

// (a) tokio-postgres & co: Parse Bind Execute Sync, then data, then CopyDone Sync.
void test_copy_in_extended_one_ready(void**) {
    RequestTracker t;
    req(t, "PBES");
    EXPECT_STATE(t, 4, false);
    rep(t, '1');
    rep(t, '2');
    EXPECT_STATE(t, 2, false);
    rep(t, 'G');  // the Sync sent before CopyInResponse owes nothing now
    EXPECT_STATE(t, 1, false);
    assert_true(t.in_copy());
    assert_true(t.client_in_copy());
    req(t, "dd");
    EXPECT_STATE(t, 1, false);
    req(t, "c");
    assert_false(t.client_in_copy());
    req(t, "S");
    EXPECT_STATE(t, 3, false);
    rep(t, 'C');
    assert_false(t.in_copy());
    EXPECT_STATE(t, 1, false);
    assert_head(t, 'S');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

void test_copy_in_extended_sync_inside_copy_owes_nothing(void**) {
    RequestTracker t;
    req(t, "PBE");
    rep(t, '1');
    rep(t, '2');
    rep(t, 'G');
    EXPECT_STATE(t, 1, false);
    req(t, "dSdHS");  // the server ignores Sync/Flush inside COPY IN
    EXPECT_STATE(t, 1, false);
    req(t, "cS");
    rep(t, 'C');
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

// (a') the same with everything pipelined before CopyInResponse.
void test_copy_in_extended_fully_pipelined(void**) {
    RequestTracker t;
    req(t, "PBESddcS");
    EXPECT_STATE(t, 6, false);
    rep(t, '1');
    rep(t, '2');
    rep(t, 'G');
    EXPECT_STATE(t, 3, false);  // E, c (ends the COPY), S
    assert_false(t.client_in_copy());
    rep(t, 'C');
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

// (b) pgx: CopyData/CopyDone pipelined before CopyInResponse.
void test_copy_in_data_pipelined_before_response(void**) {
    RequestTracker t;
    req(t, "Qddc");
    EXPECT_STATE(t, 2, false);
    rep(t, 'G');
    assert_true(t.in_copy());
    assert_false(t.client_in_copy());
    EXPECT_STATE(t, 2, false);
    rep(t, 'C');
    assert_false(t.in_copy());
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

void test_copy_in_simple_step_by_step(void**) {
    RequestTracker t;
    req(t, "Q");
    rep(t, 'G');
    EXPECT_STATE(t, 1, false);
    assert_true(t.client_in_copy());
    req(t, "ddd");
    req(t, "c");
    assert_false(t.client_in_copy());
    EXPECT_STATE(t, 2, false);
    rep(t, 'C');
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

// (c) CopyFail: ErrorResponse, then ReadyForQuery.
void test_copy_fail(void**) {
    RequestTracker t;
    req(t, "Q");
    rep(t, 'G');
    req(t, "d");
    req(t, "f");
    EXPECT_STATE(t, 2, false);
    assert_false(t.client_in_copy());
    rep(t, 'E');
    assert_false(t.in_copy());
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

// (d) The COPY fails before it starts (no such table): the pipelined CopyDone is void.
void test_copy_error_before_copy_starts(void**) {
    RequestTracker t;
    req(t, "Qdc");
    EXPECT_STATE(t, 2, false);
    rep(t, 'E');
    EXPECT_STATE(t, 2, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
    assert_false(t.client_in_copy());
}

// (d') extended: the server answers the failed batch, ignores d/c, and answers the second Sync.
void test_copy_error_before_copy_starts_extended(void**) {
    RequestTracker t;
    req(t, "PBESdcS");
    rep(t, '1');
    rep(t, '2');
    rep(t, 'E');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 1, false);
    assert_head(t, 'S');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

// (e) Late CopyData after the server failed the COPY.
void test_copy_late_data_after_server_error(void**) {
    RequestTracker t;
    req(t, "Q");
    rep(t, 'G');
    req(t, "d");
    rep(t, 'E');
    assert_false(t.in_copy());
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, false);  // nothing owed by the server, but the client owes CopyDone
    assert_true(t.client_in_copy());
    req(t, "d");
    EXPECT_STATE(t, 0, false);
    assert_true(t.client_in_copy());
    req(t, "c");
    assert_false(t.client_in_copy());
    EXPECT_STATE(t, 0, true);  // the CopyDone only feeds the server's discard loop
}

// (f) Extended COPY that fails while the client streams.
void test_copy_extended_error(void**) {
    RequestTracker t;
    req(t, "PBES");
    rep(t, '1');
    rep(t, '2');
    rep(t, 'G');
    EXPECT_STATE(t, 1, false);
    req(t, "d");
    rep(t, 'E');  // copy failed
    assert_false(t.in_copy());
    EXPECT_STATE(t, 1, false);
    req(t, "c");
    EXPECT_STATE(t, 1, false);
    req(t, "S");
    EXPECT_STATE(t, 2, false);
    rep(t, 'Z', 'I');
    // The Sync sent right after the Execute (libpq's) was read during the COPY here, but
    // had the COPY failed before reading it, it would have had a ReadyForQuery of its own.
    EXPECT_STATE(t, 0, false);
    resync(t);
    EXPECT_STATE(t, 0, true);
}

void test_copy_extended_error_all_pipelined(void**) {
    RequestTracker t;
    req(t, "PBESdcS");
    rep(t, '1');
    rep(t, '2');
    rep(t, 'G');
    EXPECT_STATE(t, 3, false);
    rep(t, 'E');  // bad data
    EXPECT_STATE(t, 2, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, false);
    resync(t);
    EXPECT_STATE(t, 0, true);
}

// libpq's extended COPY (Parse Bind Execute Sync, data, CopyDone Sync) into a table whose
// BEFORE STATEMENT trigger raises: PostgreSQL fails the COPY before it reads anything, so
// the first Sync ends the skipping and is answered, and so is the last. Counting the first
// as ignored (as a COPY that succeeds or fails later does) would leave a ReadyForQuery for
// the next client; the marker settles it: both go to this client.
void test_copy_extended_fails_before_reading(void**) {
    RequestTracker t;
    req(t, "PBESddcS");
    rep(t, '1');
    rep(t, '2');
    rep(t, 'G');
    rep(t, 'E');  // the trigger
    assert_int_equal(rep(t, 'Z', 'I'), kFwd);  // the first Sync's, taken for the last's
    EXPECT_STATE(t, 0, false);
    t.start_resync();
    assert_int_equal(rep(t, 'Z', 'I'), kFwd);  // the last Sync's: the client's too
    assert_int_equal(rep(t, 'I'), kSkip);
    assert_int_equal(rep(t, 'Z', 'I'), kSkip);
    EXPECT_STATE(t, 0, true);
}

// While the count is uncertain, a ReadyForQuery that arrives when a Query is at the head
// cannot be the Query's (it answers with something else first): a Sync of the failed COPY.
void test_uncertain_ready_for_query_before_a_query(void**) {
    RequestTracker t;
    req(t, "Q");
    rep(t, 'G');
    req(t, "dSdc");  // a Sync inside the data
    req(t, "Q");     // the next query, pipelined
    rep(t, 'E');     // the first row was bad: the server reads the Sync after the COPY
    rep(t, 'Z', 'I');  // the COPY Query's
    EXPECT_STATE(t, 1, false);
    assert_int_equal(rep(t, 'Z', 'I'), kFwd);  // the Sync's: the next Query stays owed
    EXPECT_STATE(t, 1, false);
    rep(t, 'T');
    rep(t, 'D');
    rep(t, 'C');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, false);
    resync(t);
    EXPECT_STATE(t, 0, true);
}

// A Sync after the bad row, inside the COPY data (all pipelined): PostgreSQL ends the COPY at
// the bad row and skips to that Sync, which it answers; the rest of the data and the
// CopyDone are strays, and the last Sync gets a ReadyForQuery of its own.
void test_copy_extended_error_sync_inside_data(void**) {
    RequestTracker t;
    req(t, "PBEddSdcS");
    rep(t, '1');
    rep(t, '2');
    rep(t, 'G');
    rep(t, 'E');  // the bad row
    rep(t, 'Z', 'I');  // the Sync after it (taken for the last Sync's: the count is unsure)
    EXPECT_STATE(t, 0, false);
    t.start_resync();
    assert_int_equal(rep(t, 'Z', 'I'), kFwd);  // the last Sync's
    assert_int_equal(rep(t, 'I'), kSkip);
    assert_int_equal(rep(t, 'Z', 'I'), kSkip);
    EXPECT_STATE(t, 0, true);
}

// After an error in an extended-protocol message PostgreSQL skips every message up to the
// next Sync, a simple Query and a FunctionCall too: one ReadyForQuery answers them all.
void test_query_skipped_after_extended_error(void**) {
    RequestTracker t;
    req(t, "PBE");
    req(t, "Q");  // pipelined behind the failing Execute, no Sync in between
    req(t, "S");
    req(t, "Q");
    rep(t, '1');
    rep(t, 'E');  // the Bind fails (SELECT 1/0 is folded at planning)
    EXPECT_STATE(t, 5, false);
    rep(t, 'Z', 'I');  // answers the Sync: the Query before it was skipped
    EXPECT_STATE(t, 1, false);
    assert_head(t, 'Q');
    rep(t, 'T');
    rep(t, 'D');
    rep(t, 'C');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
    // A FunctionCall the same way.
    req(t, "PBE");
    req(t, "F");
    req(t, "S");
    rep(t, '1');
    rep(t, 'E');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

// An error of a simple Query skips nothing: the extended batch behind it runs.
void test_extended_batch_runs_after_query_error(void**) {
    RequestTracker t;
    req(t, "QPBES");
    rep(t, 'E');
    rep(t, 'Z', 'I');  // the Query's own
    EXPECT_STATE(t, 4, false);
    rep(t, '1');
    rep(t, '2');
    rep(t, 'D');
    rep(t, 'C');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

// A COPY started by a simple Query that fails: no skip either (the Sync after it is answered).
void test_simple_copy_error_then_extended(void**) {
    RequestTracker t;
    req(t, "Q");
    rep(t, 'G');
    req(t, "d");
    rep(t, 'E');
    rep(t, 'Z', 'I');
    req(t, "c");  // a stray now
    req(t, "PBQS");  // Parse, Bind, then a Query: no error, nothing skipped
    rep(t, '1');
    rep(t, '2');
    rep(t, 'T');
    rep(t, 'D');
    rep(t, 'C');
    rep(t, 'Z', 'I');  // the Query's
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');  // the Sync's
    EXPECT_STATE(t, 0, true);
}

// (g) postgres.js sends a CopyDone/CopyFail after the COPY already finished.
void test_stray_copy_end_after_copy(void**) {
    RequestTracker t;
    req(t, "Q");
    rep(t, 'G');
    req(t, "dc");
    rep(t, 'C');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
    req(t, "f");
    EXPECT_STATE(t, 0, true);
    req(t, "c");
    EXPECT_STATE(t, 0, true);
    // A stray one behind a running query is dropped when the query ends.
    req(t, "Q");
    req(t, "c");
    rep(t, 'C');
    EXPECT_STATE(t, 2, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

// (h) COPY OUT does not touch Sync accounting.
void test_copy_out_simple(void**) {
    RequestTracker t;
    req(t, "Q");
    rep(t, 'H');
    assert_true(t.in_copy());
    EXPECT_STATE(t, 1, false);
    rep(t, 'd');
    rep(t, 'd');
    rep(t, 'c');
    EXPECT_STATE(t, 1, false);
    rep(t, 'C');
    assert_false(t.in_copy());
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

void test_copy_out_extended_with_close(void**) {
    RequestTracker t;
    req(t, "PBECS");
    EXPECT_STATE(t, 5, false);
    rep(t, '1');
    rep(t, '2');
    rep(t, 'H');
    assert_true(t.in_copy());
    EXPECT_STATE(t, 3, false);
    rep(t, 'd');
    rep(t, 'c');
    EXPECT_STATE(t, 3, false);
    rep(t, 'C');  // CommandComplete of the Execute, not CloseComplete
    assert_false(t.in_copy());
    EXPECT_STATE(t, 2, false);
    assert_head(t, 'C');
    rep(t, '3');
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

void test_copy_out_error(void**) {
    RequestTracker t;
    req(t, "Q");
    rep(t, 'H');
    rep(t, 'd');
    rep(t, 'E');
    assert_false(t.in_copy());
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

// (i) asyncpg: Parse/Describe/Flush without Sync, then a simple Query.
void test_parse_describe_flush_then_query(void**) {
    RequestTracker t;
    req(t, "PDHQ");
    EXPECT_STATE(t, 3, false);
    rep(t, '1');
    EXPECT_STATE(t, 2, false);
    rep(t, 't');
    EXPECT_STATE(t, 2, false);
    rep(t, 'T');
    EXPECT_STATE(t, 1, false);
    assert_head(t, 'Q');
    rep(t, 'C');
    EXPECT_STATE(t, 1, false);
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

// (j) CopyBoth (replication) pins the server.
void test_copy_both(void**) {
    RequestTracker t;
    req(t, "Q");
    rep(t, 'W');
    assert_true(t.in_copy());
    assert_true(t.copy_both());
    EXPECT_STATE(t, 1, false);
    rep(t, 'd');
    rep(t, 'd');
    assert_true(t.copy_both());
    assert_false(t.idle());
    t.reset();
    EXPECT_STATE(t, 0, true);
    assert_false(t.copy_both());
}

// (k) Replies of a request sluice injected itself are swallowed.
void test_skip_actions(void**) {
    RequestTracker t;
    t.on_request('Q', kSkip);
    req(t, "Q");
    EXPECT_STATE(t, 2, false);
    assert_int_equal(head_action(t), kSkip);
    assert_int_equal(rep(t, 'C'), kSkip);
    assert_int_equal(rep(t, 'Z', 'I'), kSkip);  // its own ReadyForQuery too
    EXPECT_STATE(t, 1, false);
    assert_int_equal(rep(t, 'T'), kFwd);
    assert_int_equal(rep(t, 'D'), kFwd);
    assert_int_equal(rep(t, 'C'), kFwd);
    assert_int_equal(rep(t, 'Z', 'I'), kFwd);
    EXPECT_STATE(t, 0, true);
}

void test_skip_error_then_forward(void**) {
    RequestTracker t;
    t.on_request('Q', kSkip);
    req(t, "PBES");
    assert_int_equal(rep(t, 'E'), kSkip);
    assert_int_equal(rep(t, 'Z', 'I'), kSkip);
    EXPECT_STATE(t, 4, false);
    assert_int_equal(rep(t, '1'), kFwd);
    assert_int_equal(rep(t, '2'), kFwd);
    assert_int_equal(rep(t, 'C'), kFwd);
    assert_int_equal(rep(t, 'Z', 'I'), kFwd);
    EXPECT_STATE(t, 0, true);
}

// A request sluice injected (Skip) fails in front of the client's own: the error is the
// head's, but the ReadyForQuery answers the client's Sync and goes to the client (it waited
// for it forever when the head's action decided).
void test_injected_parse_fails_client_gets_its_ready_for_query(void**) {
    RequestTracker t;
    t.on_request('P', kSkip);  // the cache's Parse of a statement this server lacks
    req(t, "BES");
    assert_int_equal(rep(t, 'E'), kSkip);  // Server forwards this one itself
    assert_int_equal(rep(t, 'Z', 'I'), kFwd);
    assert_int_equal(t.dropped().size(), 3);
    EXPECT_STATE(t, 0, true);
    // A batch all of its own stays swallowed, error and ReadyForQuery.
    t.dropped().clear();
    t.on_request('P', kSkip);
    t.on_request('S', kSkip);
    assert_int_equal(rep(t, 'E'), kSkip);
    assert_int_equal(rep(t, 'Z', 'I'), kSkip);
    EXPECT_STATE(t, 0, true);
}

void test_reset(void**) {
    RequestTracker t;
    req(t, "PBE");
    rep(t, '1');
    rep(t, '2');
    rep(t, 'G');
    rep(t, 'Z', 'T');
    t.reset();
    EXPECT_STATE(t, 0, true);
    assert_false(t.in_copy());
    assert_false(t.client_in_copy());
    assert_int_equal(t.status(), 'I');
    req(t, "Q");
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

// ---------------------------------------------------------------- error bookkeeping, Fake

void test_dropped_after_error(void**) {
    RequestTracker t;
    req(t, "PBEPBES");
    req(t, "PBES");
    rep(t, '1');
    rep(t, '2');
    assert_false(t.failed());
    rep(t, 'E');
    assert_true(t.failed());
    assert_true(t.dropped().empty());  // filled at the ReadyForQuery
    rep(t, 'Z', 'I');
    assert_false(t.failed());
    // The failed Execute and everything discarded up to the Sync (the Sync itself was answered).
    const char want[] = {'E', 'P', 'B', 'E'};
    assert_int_equal(t.dropped().size(), sizeof want);
    for (size_t i = 0; i < sizeof want; ++i)
        assert_int_equal(t.dropped()[i].type, want[i]);
    t.dropped().clear();
    EXPECT_STATE(t, 4, false);
    rep(t, '1');
    rep(t, '2');
    rep(t, 'C');
    rep(t, 'Z', 'I');
    assert_true(t.dropped().empty());  // no error: nothing dropped
    EXPECT_STATE(t, 0, true);
}

void test_request_details_kept(void**) {
    RequestTracker t;
    int stmt = 0;
    sluice::Expect p{'P', kFwd, false};
    p.client_parse = true;
    p.ps = &stmt;
    t.on_request(p);
    req(t, "S");
    const sluice::Expect* h = t.head();
    if (!h) {
        fail();
        return;
    }
    assert_int_equal(h->type, 'P');
    assert_true(h->client_parse);
    assert_ptr_equal(h->ps, &stmt);
    EXPECT_STATE(t, 2, false);
    rep(t, '1');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);
}

void test_fake_entries(void**) {
    RequestTracker t;
    sluice::Expect f{'P', ReplyAction::Fake, false};
    f.fake = '1';
    // A Fake Parse at the head is due at once.
    t.on_request(f);
    assert_int_equal(t.fakes(), 1);
    EXPECT_STATE(t, 1, false);
    sluice::Expect out{};
    assert_true(t.take_fake(out));
    assert_int_equal(out.type, 'P');
    assert_int_equal(out.fake, '1');
    assert_int_equal(t.fakes(), 0);
    assert_false(t.take_fake(out));
    req(t, "BES");
    rep(t, '2');
    rep(t, 'C');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);

    // Behind a real request it waits for that request's reply.
    req(t, "P");
    t.on_request(f);
    req(t, "BS");
    assert_false(t.take_fake(out));
    assert_int_equal(rep(t, '1'), kFwd);
    assert_true(t.take_fake(out));
    EXPECT_STATE(t, 2, false);
    rep(t, '2');
    rep(t, 'Z', 'I');
    EXPECT_STATE(t, 0, true);

    // An error before it: the server never sees it, the ReadyForQuery retires it.
    req(t, "B");
    t.on_request(f);
    req(t, "S");
    rep(t, 'E');
    assert_false(t.take_fake(out));
    rep(t, 'Z', 'I');
    assert_int_equal(t.fakes(), 0);
    assert_int_equal(t.dropped().size(), 2);
    assert_int_equal(t.dropped()[1].action, ReplyAction::Fake);
    t.dropped().clear();
    EXPECT_STATE(t, 0, true);
}

void test_replace_error_action(void**) {
    RequestTracker t;
    t.on_request('Q', ReplyAction::ReplaceError);
    assert_int_equal(rep(t, 'E'), ReplyAction::ReplaceError);
    assert_int_equal(rep(t, 'Z', 'I'), ReplyAction::ReplaceError);
    EXPECT_STATE(t, 0, true);
}

// What the full path must see stays off the passthrough path: a CommandComplete while
// statements are cached when its tag may be DISCARD ALL / DEALLOCATE ALL (what arrived begins
// one, or only the header has arrived), the ParseComplete of a cached or client-named
// statement, and always a CommandComplete as long as RESET or DISCARD ALL (the client's
// parameters go back to its own defaults: the length decides, BEGIN is as long as RESET).
void test_passthrough_leaves_cache_replies(void**) {
    auto bytes = [](std::string_view m) {
        return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(m.data()), m.size());
    };
    const std::string select_tag("C\0\0\0\x0d" "SELECT 1\0", 14);
    const std::string discard_tag("C\0\0\0\x10" "DISCARD ALL\0", 17);
    RequestTracker t;
    t.on_request('Q');
    assert_false(t.take_passthrough_reply('C', bytes(discard_tag), true));
    assert_false(t.take_passthrough_reply('C', bytes(select_tag).first(5), true));  // header only
    assert_true(t.take_passthrough_reply('C', bytes(select_tag).first(7), true));   // "SE" arrived
    assert_false(t.take_passthrough_reply('C', bytes(discard_tag), false));  // nothing cached
    const std::string reset_tag("C\0\0\0\x0a" "RESET\0", 11);
    const std::string begin_tag("C\0\0\0\x0a" "BEGIN\0", 11);
    const std::string commit_tag("C\0\0\0\x0b" "COMMIT\0", 12);
    assert_false(t.take_passthrough_reply('C', bytes(reset_tag), false));
    assert_false(t.take_passthrough_reply('C', bytes(reset_tag).first(5), false));
    assert_false(t.take_passthrough_reply('C', bytes(begin_tag), false));
    assert_true(t.take_passthrough_reply('C', bytes(commit_tag), false));
    assert_true(t.take_passthrough_reply('C', bytes(select_tag), false));
    const std::string dealloc_tag("C\0\0\0\x13" "DEALLOCATE ALL\0", 20);
    const std::string delete_tag("C\0\0\0\x0d" "DELETE 1\0", 14);
    assert_false(t.take_passthrough_reply('C', bytes(dealloc_tag), true));
    assert_false(t.take_passthrough_reply('C', bytes(dealloc_tag).first(7), true));  // "DE"
    assert_true(t.take_passthrough_reply('C', bytes(delete_tag), true));
    assert_true(t.take_passthrough_reply('C', bytes(delete_tag).first(8), true));  // "DEL"
    const std::string drop_tag("C\0\0\0\x0f" "DROP TABLE\0", 16);
    assert_true(t.take_passthrough_reply('C', bytes(drop_tag), true));
    EXPECT_STATE(t, 1, false);  // a Query's tags pop nothing; its ReadyForQuery does
    assert_int_equal(t.take_passthrough_run(bytes(discard_tag + select_tag), 1 << 20, true), 0);
    assert_int_equal(t.take_passthrough_run(bytes(select_tag + discard_tag), 1 << 20, true),
                     select_tag.size());
    assert_int_equal(t.take_passthrough_run(bytes(select_tag + reset_tag), 1 << 20, false),
                     select_tag.size());

    RequestTracker p;
    p.on_request(Expect{.type = 'P', .action = kFwd, .copy_term = false, .client_parse = true});
    const std::string parse_complete("1\0\0\0\x04", 5);
    assert_false(p.take_passthrough_reply('1', bytes(parse_complete), false));
    assert_int_equal(p.take_passthrough_run(bytes(parse_complete), 1 << 20, false), 0);
    EXPECT_STATE(p, 1, false);
    p.on_request('P');  // behind it, an unnamed Parse: passes once the head is answered
    assert_int_equal(rep(p, '1'), kFwd);
    assert_true(p.take_passthrough_reply('1', bytes(parse_complete), false));
    EXPECT_STATE(p, 0, false);  // unsynced: no Sync yet
}

// ---------------------------------------------------------------- randomized

// One server reply of a script: it may be delivered once the client message with index
// `dep` has been sent. `pops` is how many tracker entries it must retire.
struct Reply {
    char type;
    size_t dep;
    size_t pops;
    ReplyAction act;
    bool async;
};

struct Script {
    std::vector<char> client;
    std::vector<ReplyAction> client_act;
    std::vector<Reply> server;
    void send(char t, ReplyAction a) {
        client.push_back(t);
        client_act.push_back(a);
    }
    size_t last() const { return client.size() - 1; }
    void reply(char t, size_t dep, size_t pops, ReplyAction a) {
        server.push_back({t, dep, pops, a, false});
    }
};

bool owes(char t) {
    switch (t) {
    case 'Q':
    case 'P':
    case 'B':
    case 'D':
    case 'E':
    case 'C':
    case 'S':
    case 'F':
        return true;
    default:
        return false;
    }
}

// What PostgreSQL answers, for a small model: simple Query, FunctionCall, and extended
// batches (Parse/Bind/Describe/Execute/Close/Flush ... Sync) with an optional error.
void gen_batch(std::mt19937& rng, Script& s) {
    auto pick = [&](unsigned n) { return static_cast<unsigned>(rng() % n); };
    ReplyAction a = pick(5) == 0 ? kSkip : kFwd;
    unsigned kind = pick(6);
    if (kind == 0 || kind == 1) {  // simple Query
        s.send('Q', a);
        size_t q = s.last();
        if (pick(4) == 0) {
            s.reply('E', q, 0, a);
        } else if (pick(6) == 0) {
            s.reply('I', q, 0, a);
        } else {
            unsigned stmts = 1 + pick(3);
            for (unsigned i = 0; i < stmts; ++i) {
                s.reply('T', q, 0, a);
                for (unsigned r = pick(3); r > 0; --r)
                    s.reply('D', q, 0, a);
                s.reply('C', q, 0, a);
            }
        }
        s.reply('Z', q, 1, a);
        return;
    }
    if (kind == 2) {  // FunctionCall
        s.send('F', a);
        size_t f = s.last();
        s.reply(pick(4) == 0 ? 'E' : 'V', f, 0, a);
        s.reply('Z', f, 1, a);
        return;
    }
    // Extended batch: a list of messages, each with its replies, then Sync.
    struct Msg {
        char type;
        std::vector<char> replies;  // last one retires the message (none for Flush)
    };
    std::vector<Msg> msgs;
    unsigned stmts = 1 + pick(3);
    for (unsigned i = 0; i < stmts; ++i) {
        if (pick(2) == 0)
            msgs.push_back({'P', {'1'}});
        msgs.push_back({'B', {'2'}});
        if (pick(3) == 0)
            msgs.push_back({'D', pick(2) ? std::vector<char>{'t', 'T'} : std::vector<char>{'n'}});
        std::vector<char> ex;
        for (unsigned r = pick(3); r > 0; --r)
            ex.push_back('D');
        unsigned end = pick(8);
        ex.push_back(end == 0 ? 'I' : end == 1 ? 's' : 'C');
        msgs.push_back({'E', ex});
        if (pick(4) == 0)
            msgs.push_back({'H', {}});
        if (pick(5) == 0)
            msgs.push_back({'C', {'3'}});
    }
    // Error at message `err` (only a message that owes a reply can fail).
    size_t err = SIZE_MAX;
    if (pick(3) == 0) {
        size_t i = pick(static_cast<unsigned>(msgs.size()));
        if (msgs[i].type != 'H')
            err = i;
    }
    size_t failed_owed = 0;
    for (size_t i = 0; i < msgs.size(); ++i) {
        s.send(msgs[i].type, a);
        size_t idx = s.last();
        if (i < err) {
            for (size_t r = 0; r < msgs[i].replies.size(); ++r)
                s.reply(msgs[i].replies[r], idx, r + 1 == msgs[i].replies.size() ? 1 : 0, a);
        } else if (i == err) {
            // Part of the Execute's rows may come before the error.
            if (msgs[i].type == 'E')
                for (size_t r = 0; r + 1 < msgs[i].replies.size(); ++r)
                    s.reply('D', idx, 0, a);
            s.reply('E', idx, 0, a);
        }
        if (i >= err && owes(msgs[i].type))
            ++failed_owed;
    }
    s.send('S', a);
    s.reply('Z', s.last(), err == SIZE_MAX ? 1 : failed_owed + 1, a);
}

void sprinkle_async(std::mt19937& rng, Script& s) {
    std::vector<Reply> out;
    for (const Reply& r : s.server) {
        if (rng() % 6 == 0) {
            static const char kinds[] = {'N', 'S', 'A'};
            out.push_back({kinds[rng() % 3], r.dep, 0, kFwd, true});
        }
        out.push_back(r);
    }
    s.server = std::move(out);
}

void run_random_exact(uint32_t seed) {
    std::mt19937 rng(seed);
    Script s;
    unsigned batches = 1 + static_cast<unsigned>(rng() % 40);
    for (unsigned b = 0; b < batches; ++b)
        gen_batch(rng, s);
    sprinkle_async(rng, s);

    RequestTracker t;
    size_t sent = 0, delivered = 0, owed_sent = 0, popped = 0;
    while (sent < s.client.size() || delivered < s.server.size()) {
        bool can_send = sent < s.client.size();
        bool can_deliver = delivered < s.server.size() && s.server[delivered].dep < sent;
        assert_true(can_send || can_deliver);
        bool do_send = can_send && (!can_deliver || rng() % 3 != 0);
        if (do_send) {
            t.on_request(static_cast<uint8_t>(s.client[sent]), s.client_act[sent]);
            if (owes(s.client[sent]))
                ++owed_sent;
            ++sent;
        } else {
            const Reply& r = s.server[delivered];
            ReplyAction got = t.on_reply(static_cast<uint8_t>(r.type), r.type == 'Z' ? 'I' : 0);
            if (!r.async && got != r.act) {
                fprintf(stderr, "seed %u: reply %zu '%c' action mismatch\n", seed, delivered,
                        r.type);
                fail();
            }
            popped += r.pops;
            ++delivered;
        }
        if (t.size() != owed_sent - popped) {
            fprintf(stderr, "seed %u: after %zu sent / %zu delivered: size %zu, expected %zu\n",
                    seed, sent, delivered, t.size(), owed_sent - popped);
            fail();
        }
        // Safety: a server with a reply in flight for a sent request is never idle.
        bool in_flight = false;
        for (size_t i = delivered; i < s.server.size() && !in_flight; ++i)
            in_flight = !s.server[i].async && s.server[i].dep < sent;
        if (in_flight && t.idle()) {
            fprintf(stderr, "seed %u: idle with replies in flight\n", seed);
            fail();
        }
    }
    EXPECT_STATE(t, 0, true);
}

void test_random_pipelines(void**) {
    uint32_t base = 0x5eed1234u;
    fprintf(stderr, "test_random_pipelines: seed base 0x%x (seeds base..base+1999)\n", base);
    for (uint32_t i = 0; i < 2000; ++i)
        run_random_exact(base + i);
}

// The statement that starts a COPY: a simple Query, or Parse/Bind/Execute/Sync (with the
// Parse/BindComplete replies). Returns the index of the message the COPY's replies answer;
// `sync` gets the Sync's index (SIZE_MAX for a simple Query).
size_t send_copy_statement(Script& s, bool extended, size_t& sync) {
    sync = SIZE_MAX;
    if (!extended) {
        s.send('Q', kFwd);
        return s.last();
    }
    s.send('P', kFwd);
    s.reply('1', s.last(), 1, kFwd);
    s.send('B', kFwd);
    s.reply('2', s.last(), 1, kFwd);
    s.send('E', kFwd);
    size_t start = s.last();
    s.send('S', kFwd);
    sync = s.last();
    return start;
}

// COPY IN, simple and extended, as PostgreSQL answers it: success, CopyFail, a data error
// while streaming, and a failure before the COPY starts. Checked: never idle while a reply
// for a sent message is still to come, and idle at the end.
void gen_copy_batch(std::mt19937& rng, Script& s) {
    auto pick = [&](unsigned n) { return static_cast<unsigned>(rng() % n); };
    bool extended = pick(2) == 0;
    // 0 ok, 1 CopyFail, 2 data error, 3 error before COPY, 4 error before reading any data
    // (a BEFORE STATEMENT trigger): an extended COPY's Sync then ends the skipping
    unsigned outcome = pick(5);
    unsigned ndata = 1 + pick(3);
    size_t first_sync;
    size_t start = send_copy_statement(s, extended, first_sync);
    if (outcome == 3) {
        s.reply('E', start, 0, kFwd);
        s.reply('Z', extended ? first_sync : start, 0, kFwd);
    } else {
        s.reply('G', start, 0, kFwd);
    }
    if (outcome == 4) {
        s.reply('E', start, 0, kFwd);
        s.reply('Z', extended ? first_sync : start, 0, kFwd);
        for (unsigned i = 0; i < ndata; ++i)
            s.send('d', kFwd);  // ignored: the COPY is over
        s.send('c', kFwd);
        if (extended) {
            s.send('S', kFwd);
            s.reply('Z', s.last(), 0, kFwd);
        }
        return;
    }
    size_t bad = outcome == 2 ? pick(ndata) : SIZE_MAX;
    for (unsigned i = 0; i < ndata; ++i) {
        s.send('d', kFwd);
        if (i == bad) {
            s.reply('E', s.last(), 0, kFwd);
            if (!extended)
                s.reply('Z', s.last(), 0, kFwd);
        }
    }
    s.send(outcome == 1 ? 'f' : 'c', kFwd);
    if (outcome == 0) {
        s.reply('C', s.last(), 0, kFwd);
        if (!extended)
            s.reply('Z', s.last(), 0, kFwd);
    } else if (outcome == 1) {
        s.reply('E', s.last(), 0, kFwd);
        if (!extended)
            s.reply('Z', s.last(), 0, kFwd);
    }
    if (extended) {
        s.send('S', kFwd);
        s.reply('Z', s.last(), 0, kFwd);
    }
}

void run_random_copy(uint32_t seed) {
    std::mt19937 rng(seed);
    Script s;
    unsigned batches = 1 + static_cast<unsigned>(rng() % 12);
    for (unsigned b = 0; b < batches; ++b) {
        if (rng() % 2)
            gen_copy_batch(rng, s);
        else
            gen_batch(rng, s);
    }
    // Skip/Forward checks are covered elsewhere: everything forwards here.
    for (auto& a : s.client_act)
        a = kFwd;
    for (auto& r : s.server)
        r.act = kFwd;

    RequestTracker t;
    size_t sent = 0, delivered = 0;
    while (sent < s.client.size() || delivered < s.server.size()) {
        bool can_send = sent < s.client.size();
        bool can_deliver = delivered < s.server.size() && s.server[delivered].dep < sent;
        assert_true(can_send || can_deliver);
        if (can_send && (!can_deliver || rng() % 2 == 0)) {
            t.on_request(static_cast<uint8_t>(s.client[sent]));
            ++sent;
        } else {
            const Reply& r = s.server[delivered];
            t.on_reply(static_cast<uint8_t>(r.type), r.type == 'Z' ? 'I' : 0);
            ++delivered;
        }
        if (t.wants_resync()) {
            // Server::resync_if_due(): the marker goes after everything sent so far, so its
            // replies come after the replies to that.
            t.start_resync();
            size_t at = delivered;
            while (at < s.server.size() && s.server[at].dep < sent)
                ++at;
            s.server.insert(s.server.begin() + static_cast<std::ptrdiff_t>(at),
                            {{'I', sent - 1, 0, kSkip, false}, {'Z', sent - 1, 1, kSkip, false}});
        }
        bool in_flight = false;
        for (size_t i = delivered; i < s.server.size() && !in_flight; ++i)
            in_flight = s.server[i].dep < sent;
        if (in_flight && t.idle()) {
            fprintf(stderr, "seed %u: idle with replies in flight (sent %zu, delivered %zu)\n",
                    seed, sent, delivered);
            fail();
        }
    }
    if (!t.idle() || !t.empty() || t.in_copy() || t.client_in_copy()) {
        fprintf(stderr, "seed %u: not idle at the end (size %zu, copy %d, client_copy %d)\n", seed,
                t.size(), t.in_copy(), t.client_in_copy());
        fail();
    }
}

void test_random_copy_pipelines(void**) {
    uint32_t base = 0xc0b1e5u;
    fprintf(stderr, "test_random_copy_pipelines: seed base 0x%x (seeds base..base+1999)\n", base);
    for (uint32_t i = 0; i < 2000; ++i)
        run_random_copy(base + i);
}

// The inline paths against the reference: one tracker sees every request through
// on_request() and every reply through on_reply(); the other sees requests through
// on_plain_request() and replies in runs, as a server connection does:
// take_passthrough_run() over the bytes of a few replies, on_reply() for the one it stops at,
// then the run again. After every step both must agree on everything they expose.
std::string reply_bytes(char type, std::string_view body) {
    std::string m(1, type);
    auto len = static_cast<uint32_t>(4 + body.size());
    for (int sh = 24; sh >= 0; sh -= 8)
        m.push_back(static_cast<char>((len >> sh) & 0xff));
    m.append(body);
    return m;
}

// A body for the reply: the status of a ReadyForQuery, a tag for CommandComplete (one that
// may be DISCARD ALL for the statement cache, or not), nothing for the rest.
std::string reply_body(char type, std::mt19937& rng) {
    if (type == 'Z')
        return "I";
    if (type == 'C') {
        static const char* const tags[] = {"SELECT 1", "DISCARD ALL", "INSERT 0 1", "DO"};
        return std::string(tags[rng() % 4]) + '\0';
    }
    return "";
}

void assert_same(const RequestTracker& a, const RequestTracker& b, uint32_t seed, size_t step) {
    const Expect* ha = a.head();
    const Expect* hb = b.head();
    bool same = a.size() == b.size() && a.idle() == b.idle() && a.status() == b.status() &&
                a.failed() == b.failed() && a.in_copy() == b.in_copy() &&
                a.client_in_copy() == b.client_in_copy() && (ha == nullptr) == (hb == nullptr) &&
                (!ha || (ha->type == hb->type && ha->action == hb->action));
    if (!same) {
        fprintf(stderr, "seed %u step %zu: reference size %zu head %c, inline size %zu head %c\n",
                seed, step, a.size(), ha ? ha->type : '-', b.size(), hb ? hb->type : '-');
        fail();
    }
}

// COPY TO STDOUT, simple or extended: CopyOutResponse, rows, CopyDone, the tag; or an
// error while the rows stream.
void gen_copy_out_batch(std::mt19937& rng, Script& s) {
    bool extended = rng() % 2 == 0;
    size_t sync;
    size_t start = send_copy_statement(s, extended, sync);
    s.reply('H', start, 0, kFwd);
    unsigned rows = static_cast<unsigned>(rng() % 12);
    for (unsigned i = 0; i < rows; ++i)
        s.reply('d', start, 0, kFwd);
    if (rng() % 4 == 0) {
        s.reply('E', start, 0, kFwd);
    } else {
        s.reply('c', start, 0, kFwd);
        s.reply('C', start, 1, kFwd);
    }
    s.reply('Z', extended ? sync : start, 0, kFwd);
}

void run_inline_against_reference(uint32_t seed) {
    std::mt19937 rng(seed);
    Script s;
    unsigned batches = 1 + static_cast<unsigned>(rng() % 12);
    for (unsigned i = 0; i < batches; ++i) {
        unsigned kind = static_cast<unsigned>(rng() % 4);
        if (kind == 0)
            gen_copy_batch(rng, s);
        else if (kind == 1)
            gen_copy_out_batch(rng, s);
        else
            gen_batch(rng, s);
    }
    RequestTracker ref, fast;
    size_t sent = 0, delivered = 0, step = 0;
    while (sent < s.client.size() || delivered < s.server.size()) {
        bool can_send = sent < s.client.size();
        bool can_deliver = delivered < s.server.size() && s.server[delivered].dep < sent;
        assert_true(can_send || can_deliver);
        if (can_send && (!can_deliver || rng() % 2 == 0)) {
            uint8_t t = static_cast<uint8_t>(s.client[sent]);
            ref.on_request(t);
            fast.on_plain_request(t);
            ++sent;
        } else {
            // A few replies that arrived together.
            size_t n = 1 + rng() % 6;
            std::string bytes;
            size_t end = delivered;
            while (end < s.server.size() && end - delivered < n && s.server[end].dep < sent) {
                const Reply& r = s.server[end];
                ref.on_reply(static_cast<uint8_t>(r.type), r.type == 'Z' ? 'I' : 0);
                bytes += reply_bytes(r.type, reply_body(r.type, rng));
                ++end;
            }
            bool cached = rng() % 2 == 0;
            std::span<const uint8_t> in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                        bytes.size());
            size_t off = 0;
            while (off < in.size()) {
                off += fast.take_passthrough_run(in.subspan(off), 1 << 20, cached);
                if (off == in.size())
                    break;
                uint8_t t = in[off];
                fast.on_reply(t, t == 'Z' ? in[off + 5] : 0);
                off += 1 + sluice::read_be32(in.data() + off + 1);
            }
            delivered = end;
        }
        assert_same(ref, fast, seed, step++);
    }
}

void test_inline_paths_match_reference(void**) {
    uint32_t base = 0x5eed0u;
    fprintf(stderr, "test_inline_paths_match_reference: seeds 0x%x..+2999\n", base);
    for (uint32_t i = 0; i < 3000; ++i)
        run_inline_against_reference(base + i);
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_tracker_is_idle),
        cmocka_unit_test(test_simple_query),
        cmocka_unit_test(test_simple_query_multi_statement_and_empty),
        cmocka_unit_test(test_ready_for_query_in_transaction),
        cmocka_unit_test(test_pipelined_simple_queries),
        cmocka_unit_test(test_extended_parse_bind_describe_execute_sync),
        cmocka_unit_test(test_extended_describe_portal_nodata_and_close),
        cmocka_unit_test(test_pipeline_of_n_syncs),
        cmocka_unit_test(test_status_settled),
        cmocka_unit_test(test_pipeline_interleaved_with_replies),
        cmocka_unit_test(test_execute_row_limit_portal_suspended),
        cmocka_unit_test(test_error_in_middle_of_pipeline),
        cmocka_unit_test(test_error_on_parse_skips_whole_batch),
        cmocka_unit_test(test_function_call),
        cmocka_unit_test(test_empty_query_response_for_execute),
        cmocka_unit_test(test_flush_owes_nothing),
        cmocka_unit_test(test_async_messages_change_nothing),
        cmocka_unit_test(test_notice_of_own_query_is_not_passed_on),
        cmocka_unit_test(test_ends_alone),
        cmocka_unit_test(test_replies_without_matching_request_do_not_pop),
        cmocka_unit_test(test_copy_in_extended_one_ready),
        cmocka_unit_test(test_copy_in_extended_sync_inside_copy_owes_nothing),
        cmocka_unit_test(test_copy_in_extended_fully_pipelined),
        cmocka_unit_test(test_copy_in_data_pipelined_before_response),
        cmocka_unit_test(test_copy_in_simple_step_by_step),
        cmocka_unit_test(test_copy_fail),
        cmocka_unit_test(test_copy_error_before_copy_starts),
        cmocka_unit_test(test_copy_error_before_copy_starts_extended),
        cmocka_unit_test(test_copy_late_data_after_server_error),
        cmocka_unit_test(test_copy_extended_error),
        cmocka_unit_test(test_copy_extended_error_sync_inside_data),
        cmocka_unit_test(test_copy_extended_fails_before_reading),
        cmocka_unit_test(test_uncertain_ready_for_query_before_a_query),
        cmocka_unit_test(test_query_skipped_after_extended_error),
        cmocka_unit_test(test_extended_batch_runs_after_query_error),
        cmocka_unit_test(test_simple_copy_error_then_extended),
        cmocka_unit_test(test_copy_extended_error_all_pipelined),
        cmocka_unit_test(test_stray_copy_end_after_copy),
        cmocka_unit_test(test_copy_out_simple),
        cmocka_unit_test(test_copy_out_extended_with_close),
        cmocka_unit_test(test_copy_out_error),
        cmocka_unit_test(test_parse_describe_flush_then_query),
        cmocka_unit_test(test_copy_both),
        cmocka_unit_test(test_skip_actions),
        cmocka_unit_test(test_skip_error_then_forward),
        cmocka_unit_test(test_injected_parse_fails_client_gets_its_ready_for_query),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_dropped_after_error),
        cmocka_unit_test(test_request_details_kept),
        cmocka_unit_test(test_fake_entries),
        cmocka_unit_test(test_replace_error_action),
        cmocka_unit_test(test_passthrough_leaves_cache_replies),
        cmocka_unit_test(test_random_pipelines),
        cmocka_unit_test(test_random_copy_pipelines),
        cmocka_unit_test(test_inline_paths_match_reference),
    };
    return cmocka_run_group_tests_name("tracker", tests, nullptr, nullptr);
}
