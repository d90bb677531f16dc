// auth_query on the wire: the Parse/Bind/Describe/Execute/Sync batch byte by byte, and the
// answer reader (two columns, NULL user = no such user, NULL password, errors).
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
extern "C" {
#include <cmocka.h>
}

#include <string>

#include "sluice/auth/auth_query.h"
#include "sluice/proto/packet.h"

namespace {

using sluice::AuthQueryReply;
using sluice::PacketWriter;

std::span<const uint8_t> bytes(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Body (no header) of a DataRow; nullptr = NULL column.
std::string data_row(std::initializer_list<const char*> cols) {
    std::string out;
    PacketWriter w(out);
    w.begin(sluice::msg::kDataRow);
    w.put_u16(static_cast<uint16_t>(cols.size()));
    for (const char* c : cols) {
        if (!c) {
            w.put_u32(0xffffffffu);
            continue;
        }
        std::string_view v(c);
        w.put_u32(static_cast<uint32_t>(v.size()));
        w.put_bytes(v);
    }
    w.finish();
    return out.substr(5);
}

std::string row_description(uint16_t cols) {
    std::string out;
    out.push_back(static_cast<char>(cols >> 8));
    out.push_back(static_cast<char>(cols & 0xff));
    return out;  // the reader only looks at the count
}

void feed(AuthQueryReply& r, uint8_t type, const std::string& body = {}) {
    r.on_reply(type, bytes(body));
}

void test_write_auth_query(void**) {
    std::string out;
    sluice::write_auth_query(out, "SELECT $1", "bob");
    const std::string expect = std::string("P\0\0\0\x11\0SELECT $1\0\0\0", 18) +
                               std::string("B\0\0\0\x13\0\0\0\0\0\x01\0\0\0\x03"
                                           "bob\0\0",
                                           20) +
                               std::string("D\0\0\0\x06P\0", 7) +
                               std::string("E\0\0\0\x09\0\0\0\0\0", 10) +
                               std::string("S\0\0\0\x04", 5);
    assert_int_equal(out.size(), expect.size());
    assert_memory_equal(out.data(), expect.data(), expect.size());
    // the message types, in the order the tracker is told
    size_t pos = 0;
    for (uint8_t t : sluice::kAuthQueryMessages) {
        assert_int_equal(static_cast<uint8_t>(out[pos]), t);
        uint32_t len = sluice::read_be32(reinterpret_cast<const uint8_t*>(out.data()) + pos + 1);
        pos += 1 + len;
    }
    assert_int_equal(pos, out.size());
}

void test_found(void**) {
    AuthQueryReply r;
    feed(r, '1');
    feed(r, '2');
    feed(r, 'T', row_description(2));
    feed(r, 'D', data_row({"bob", "md5abc"}));
    feed(r, 'C', std::string("SELECT 1\0", 9));
    assert_int_equal(static_cast<int>(r.state), static_cast<int>(AuthQueryReply::State::Running));
    feed(r, 'Z', "I");
    assert_int_equal(static_cast<int>(r.state), static_cast<int>(AuthQueryReply::State::Done));
    assert_true(r.found);
    assert_false(r.null_password);
    assert_string_equal(r.user.c_str(), "bob");
    assert_string_equal(r.secret.c_str(), "md5abc");
}

void test_no_rows_and_null_user(void**) {
    AuthQueryReply r;
    feed(r, 'T', row_description(2));
    feed(r, 'C', std::string("SELECT 0\0", 9));
    feed(r, 'Z', "I");
    assert_int_equal(static_cast<int>(r.state), static_cast<int>(AuthQueryReply::State::Done));
    assert_false(r.found);

    AuthQueryReply n;
    feed(n, 'D', data_row({nullptr, nullptr}));
    feed(n, 'Z', "I");
    assert_false(n.found);
}

void test_null_password(void**) {
    AuthQueryReply r;
    feed(r, 'D', data_row({"bob", nullptr}));
    feed(r, 'Z', "I");
    assert_true(r.found);
    assert_true(r.null_password);
    assert_string_equal(r.secret.c_str(), "");
}

void test_last_row_counts(void**) {
    AuthQueryReply r;
    feed(r, 'D', data_row({"a", "1"}));
    feed(r, 'D', data_row({"b", "2"}));
    feed(r, 'Z', "I");
    assert_string_equal(r.user.c_str(), "b");
    assert_string_equal(r.secret.c_str(), "2");
}

void test_failures(void**) {
    AuthQueryReply r1;
    feed(r1, 'T', row_description(3));
    assert_int_equal(static_cast<int>(r1.state), static_cast<int>(AuthQueryReply::State::Failed));
    assert_string_equal(r1.error.c_str(), "expected 2 columns from auth_query, not 3");
    feed(r1, 'Z', "I");  // stays failed
    assert_int_equal(static_cast<int>(r1.state), static_cast<int>(AuthQueryReply::State::Failed));

    AuthQueryReply r2;
    feed(r2, 'D', data_row({"only one"}));
    assert_string_equal(r2.error.c_str(), "expected 2 columns from auth_query, not 1");

    AuthQueryReply r3;
    std::string err;
    sluice::write_error(err, "ERROR", "42P01", "relation \"x\" does not exist");
    feed(r3, 'E', err.substr(5));
    assert_string_equal(r3.error.c_str(),
                        "error response from auth_query: relation \"x\" does not exist");

    AuthQueryReply r4;
    std::string truncated = data_row({"bob", "secret"});
    truncated.resize(truncated.size() - 2);
    feed(r4, 'D', truncated);
    assert_string_equal(r4.error.c_str(), "bad packet");

    AuthQueryReply r5;
    feed(r5, 'G');
    assert_string_equal(r5.error.c_str(), "unexpected response from auth_query: 'G'");
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_write_auth_query),      cmocka_unit_test(test_found),
        cmocka_unit_test(test_no_rows_and_null_user), cmocka_unit_test(test_null_password),
        cmocka_unit_test(test_last_row_counts),       cmocka_unit_test(test_failures),
    };
    return cmocka_run_group_tests_name("auth_query", tests, nullptr, nullptr);
}
