// Wire framing (parse_typed_header, parse_startup_header), PacketReader bounds and PacketWriter
// output, byte by byte. Expected encodings are written out by hand from the PostgreSQL
// protocol documentation (section 55.7, "Message Formats").
#include <csetjmp>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
extern "C" {
#include <cmocka.h>
}

#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/proto/packet.h"

namespace {

using sluice::PacketHeader;
using sluice::Parse;

std::span<const uint8_t> as_bytes(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Type byte + big-endian length field (the length as written on the wire).
std::string typed_header(char type, uint32_t len_field) {
    std::string s;
    s.push_back(type);
    s.push_back(static_cast<char>(len_field >> 24));
    s.push_back(static_cast<char>((len_field >> 16) & 0xff));
    s.push_back(static_cast<char>((len_field >> 8) & 0xff));
    s.push_back(static_cast<char>(len_field & 0xff));
    return s;
}

std::string be32(uint32_t v) {
    std::string s;
    s.push_back(static_cast<char>(v >> 24));
    s.push_back(static_cast<char>((v >> 16) & 0xff));
    s.push_back(static_cast<char>((v >> 8) & 0xff));
    s.push_back(static_cast<char>(v & 0xff));
    return s;
}

// A complete Query message for `sql`.
std::string query_msg(std::string_view sql) {
    std::string s = typed_header('Q', static_cast<uint32_t>(4 + sql.size() + 1));
    s.append(sql);
    s.push_back('\0');
    return s;
}

// ---------------------------------------------------------------- parse_typed_header

void test_typed_header_split_at_every_offset(void**) {
    const std::string m = query_msg("select 1");
    for (size_t n = 0; n < sluice::kTypedHeaderLen; ++n) {
        PacketHeader h;
        h.type = 0x7f;
        std::span<const uint8_t> part = as_bytes(m).first(n);
        assert_int_equal(sluice::parse_typed_header(part, 0x7fffffff, h), Parse::NeedMore);
        assert_int_equal(h.type, 0x7f);  // untouched
    }
    for (size_t n = sluice::kTypedHeaderLen; n <= m.size(); ++n) {
        PacketHeader h;
        assert_int_equal(sluice::parse_typed_header(as_bytes(m).first(n), 0x7fffffff, h),
                         Parse::Ok);
        assert_int_equal(h.type, 'Q');
        assert_int_equal(h.hdr_len, 5);
        assert_int_equal(h.len, m.size());  // total incl. the type byte
        assert_int_equal(h.body_len(), m.size() - 5);
    }
}

void test_typed_header_short_lengths_are_bad(void**) {
    for (uint32_t n = 0; n < 4; ++n) {
        std::string m = typed_header('Q', n);
        PacketHeader h;
        assert_int_equal(sluice::parse_typed_header(as_bytes(m), 0x7fffffff, h), Parse::Bad);
    }
    // Exactly 4 (empty body, e.g. Sync) is fine.
    std::string sync = typed_header('S', 4);
    PacketHeader h;
    assert_int_equal(sluice::parse_typed_header(as_bytes(sync), 0x7fffffff, h), Parse::Ok);
    assert_int_equal(h.type, 'S');
    assert_int_equal(h.len, 5);
    assert_int_equal(h.body_len(), 0);
}

void test_typed_header_max_len(void**) {
    // max_len bounds the total packet size (length field + 1 type byte).
    const uint32_t max_len = 1000;
    PacketHeader h;
    std::string exact = typed_header('d', max_len - 1);
    assert_int_equal(sluice::parse_typed_header(as_bytes(exact), max_len, h), Parse::Ok);
    assert_int_equal(h.len, max_len);
    std::string over = typed_header('d', max_len);
    assert_int_equal(sluice::parse_typed_header(as_bytes(over), max_len, h), Parse::Bad);
    std::string huge = typed_header('d', 0xffffffffu);
    assert_int_equal(sluice::parse_typed_header(as_bytes(huge), max_len, h), Parse::Bad);
    assert_int_equal(sluice::parse_typed_header(as_bytes(huge), 0x7fffffff, h), Parse::Bad);
    // The largest length the default limit accepts.
    std::string big = typed_header('d', 0x7ffffffe);
    assert_int_equal(sluice::parse_typed_header(as_bytes(big), 0x7fffffff, h), Parse::Ok);
    assert_int_equal(h.len, 0x7fffffffu);
}

void test_typed_header_unknown_type_passes(void**) {
    // Framing does not judge the type byte.
    std::string m = typed_header('\xff', 4);
    PacketHeader h;
    assert_int_equal(sluice::parse_typed_header(as_bytes(m), 0x7fffffff, h), Parse::Ok);
    assert_int_equal(h.type, 0xff);
    m = typed_header('\0', 4);
    assert_int_equal(sluice::parse_typed_header(as_bytes(m), 0x7fffffff, h), Parse::Ok);
    assert_int_equal(h.type, 0);
}

void test_two_packets_in_one_buffer(void**) {
    std::string buf = query_msg("select 1");
    const size_t first = buf.size();
    buf += typed_header('S', 4);
    buf += query_msg("x");  // third one cut short
    buf.resize(buf.size() - 2);

    std::span<const uint8_t> all = as_bytes(buf);
    PacketHeader h;
    size_t off = 0;
    assert_int_equal(sluice::parse_typed_header(all.subspan(off), 0x7fffffff, h), Parse::Ok);
    assert_int_equal(h.type, 'Q');
    assert_int_equal(h.len, first);
    sluice::PacketReader r{all.subspan(off + h.hdr_len, h.body_len())};
    std::string_view sql;
    assert_true(r.read_cstr(sql));
    assert_true(sql == "select 1");
    assert_int_equal(r.remaining(), 0);
    off += h.len;

    assert_int_equal(sluice::parse_typed_header(all.subspan(off), 0x7fffffff, h), Parse::Ok);
    assert_int_equal(h.type, 'S');
    assert_int_equal(h.len, 5);
    off += h.len;

    // The header of the third is complete, its body is not: framing only needs the header.
    assert_int_equal(sluice::parse_typed_header(all.subspan(off), 0x7fffffff, h), Parse::Ok);
    assert_int_equal(h.type, 'Q');
    assert_int_equal(h.len, 7);
    assert_true(all.size() - off < h.len);
}

// ---------------------------------------------------------------- parse_startup_header

void test_startup_header(void**) {
    // StartupMessage: Int32 len, Int32 protocol, params, NUL.
    std::string m = be32(0) + be32(sluice::kProtocol30) + std::string("user\0bob\0\0", 10);
    std::string len = be32(static_cast<uint32_t>(m.size()));
    m.replace(0, 4, len);
    for (size_t n = 0; n < sluice::kStartupHeaderLen; ++n) {
        PacketHeader h;
        assert_int_equal(sluice::parse_startup_header(as_bytes(m).first(n), h), Parse::NeedMore);
    }
    PacketHeader h;
    h.type = 'x';
    assert_int_equal(sluice::parse_startup_header(as_bytes(m).first(4), h), Parse::Ok);
    assert_int_equal(h.type, 0);
    assert_int_equal(h.hdr_len, 4);
    assert_int_equal(h.len, m.size());
    assert_int_equal(h.body_len(), m.size() - 4);
}

void test_startup_header_bounds(void**) {
    PacketHeader h;
    for (uint32_t n = 0; n < 8; ++n) {
        std::string m = be32(n) + be32(sluice::kSslRequestCode);
        assert_int_equal(sluice::parse_startup_header(as_bytes(m), h), Parse::Bad);
    }
    std::string ssl = be32(8) + be32(sluice::kSslRequestCode);
    assert_int_equal(sluice::parse_startup_header(as_bytes(ssl), h), Parse::Ok);
    assert_int_equal(h.len, 8);
    std::string max = be32(sluice::kMaxStartupLen);
    assert_int_equal(sluice::parse_startup_header(as_bytes(max), h), Parse::Ok);
    assert_int_equal(h.len, sluice::kMaxStartupLen);
    std::string over = be32(sluice::kMaxStartupLen + 1);
    assert_int_equal(sluice::parse_startup_header(as_bytes(over), h), Parse::Bad);
    std::string huge = be32(0xffffffffu);
    assert_int_equal(sluice::parse_startup_header(as_bytes(huge), h), Parse::Bad);
}

// ---------------------------------------------------------------- PacketReader

void test_read_cstr_rejects_missing_nul(void**) {
    const uint8_t body[] = {'a', 'b', 'c'};  // no terminator
    sluice::PacketReader r{std::span{body}};
    std::string_view s = "untouched";
    assert_false(r.read_cstr(s));
    assert_int_equal(r.remaining(), 3);  // nothing consumed on failure
    assert_true(s == "untouched");
    // The bytes are still readable.
    uint8_t c = 0;
    assert_true(r.read_u8(c));
    assert_int_equal(c, 'a');
}

void test_read_cstr_sequence(void**) {
    const uint8_t body[] = {'a', 'b', 0, 0, 'c', 0, 'd'};
    sluice::PacketReader r{std::span{body}};
    std::string_view s;
    assert_true(r.read_cstr(s));
    assert_true(s == "ab");
    assert_true(r.read_cstr(s));
    assert_true(s.empty());
    assert_true(r.read_cstr(s));
    assert_true(s == "c");
    assert_int_equal(r.remaining(), 1);
    assert_false(r.read_cstr(s));
    assert_int_equal(r.remaining(), 1);
    assert_int_equal(r.rest()[0], 'd');
}

void test_read_ints_bounds(void**) {
    const uint8_t body[] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xff, 0xff};
    sluice::PacketReader r{std::span{body}};
    uint32_t u32 = 0;
    assert_true(r.read_u32(u32));
    assert_int_equal(u32, 0x12345678u);
    // Three bytes left: a u32 does not fit and nothing is consumed.
    assert_int_equal(r.remaining(), 3);
    assert_false(r.read_u32(u32));
    assert_int_equal(u32, 0x12345678u);
    int32_t i32 = 0;
    assert_false(r.read_i32(i32));
    assert_int_equal(r.remaining(), 3);
    uint8_t u8 = 0;
    assert_true(r.read_u8(u8));
    assert_int_equal(u8, 0x9a);
    uint16_t u16 = 0;
    assert_true(r.read_u16(u16));
    assert_int_equal(u16, 0xffff);
    assert_int_equal(r.remaining(), 0);
    assert_false(r.read_u8(u8));
    assert_false(r.read_u16(u16));

    const uint8_t neg[] = {0xff, 0xff, 0xff, 0xfe};
    sluice::PacketReader rn{std::span{neg}};
    assert_true(rn.read_i32(i32));
    assert_int_equal(i32, -2);

    const uint8_t one[] = {0x01};
    sluice::PacketReader r1{std::span{one}};
    assert_false(r1.read_u16(u16));
    assert_int_equal(r1.remaining(), 1);
}

void test_read_bytes(void**) {
    const uint8_t body[] = {1, 2, 3, 4, 5};
    sluice::PacketReader r{std::span{body}};
    std::span<const uint8_t> out;
    assert_true(r.read_bytes(0, out));
    assert_int_equal(out.size(), 0);
    assert_true(r.read_bytes(2, out));
    assert_int_equal(out.size(), 2);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 2);
    assert_ptr_equal(out.data(), body);  // a view into the packet, not a copy
    assert_false(r.read_bytes(4, out));
    assert_int_equal(r.remaining(), 3);
    assert_false(r.read_bytes(SIZE_MAX, out));
    assert_int_equal(r.remaining(), 3);
    assert_true(r.read_bytes(3, out));
    assert_int_equal(out[2], 5);
    assert_int_equal(r.remaining(), 0);
    assert_int_equal(r.rest().size(), 0);
}

// ---------------------------------------------------------------- PacketWriter

void test_writer_typed_round_trip(void**) {
    std::string out = "prefix";  // appends, never overwrites
    sluice::PacketWriter w(out);
    w.begin('B');
    w.put_cstr("portal");
    w.put_cstr("");
    w.put_u16(1);
    w.put_u16(0);
    w.put_u16(1);
    w.put_i32(-1);  // NULL parameter
    const uint8_t raw[] = {0xde, 0xad};
    w.put_bytes(std::span<const uint8_t>{raw});
    w.put_bytes(std::string_view("xy"));
    w.put_u8(7);
    w.put_u32(0xa1b2c3d4u);
    w.finish();
    assert_memory_equal(out.data(), "prefix", 6);

    std::span<const uint8_t> msg = as_bytes(out).subspan(6);
    PacketHeader h;
    assert_int_equal(sluice::parse_typed_header(msg, 0x7fffffff, h), Parse::Ok);
    assert_int_equal(h.type, 'B');
    assert_int_equal(h.len, msg.size());
    // 1 + 4 + "portal\0"(7) + "\0"(1) + 2+2+2 + 4 + 2 + 2 + 1 + 4
    assert_int_equal(msg.size(), 32);

    sluice::PacketReader r{msg.subspan(h.hdr_len, h.body_len())};
    std::string_view s;
    assert_true(r.read_cstr(s));
    assert_true(s == "portal");
    assert_true(r.read_cstr(s));
    assert_true(s.empty());
    uint16_t a = 0, b = 9, c = 0;
    assert_true(r.read_u16(a) && r.read_u16(b) && r.read_u16(c));
    assert_int_equal(a, 1);
    assert_int_equal(b, 0);
    assert_int_equal(c, 1);
    int32_t v = 0;
    assert_true(r.read_i32(v));
    assert_int_equal(v, -1);
    std::span<const uint8_t> bytes;
    assert_true(r.read_bytes(4, bytes));
    assert_int_equal(bytes[0], 0xde);
    assert_int_equal(bytes[1], 0xad);
    assert_int_equal(bytes[2], 'x');
    assert_int_equal(bytes[3], 'y');
    uint8_t u8 = 0;
    assert_true(r.read_u8(u8));
    assert_int_equal(u8, 7);
    uint32_t u32 = 0;
    assert_true(r.read_u32(u32));
    assert_int_equal(u32, 0xa1b2c3d4u);
    assert_int_equal(r.remaining(), 0);
}

void test_writer_empty_body_and_sequence(void**) {
    std::string out;
    sluice::PacketWriter w(out);
    w.begin('S');
    w.finish();
    w.begin('H');
    w.finish();
    const char expect[] = {'S', 0, 0, 0, 4, 'H', 0, 0, 0, 4};
    assert_int_equal(out.size(), sizeof expect);
    assert_memory_equal(out.data(), expect, sizeof expect);
}

void test_writer_untyped(void**) {
    std::string out;
    sluice::PacketWriter w(out);
    w.begin_untyped();
    w.put_u32(sluice::kProtocol30);
    w.put_cstr("user");
    w.put_cstr("bob");
    w.put_u8(0);
    w.finish();
    // 4 + 4 + "user\0" + "bob\0" + "\0"
    assert_int_equal(out.size(), 18);
    PacketHeader h;
    assert_int_equal(sluice::parse_startup_header(as_bytes(out), h), Parse::Ok);
    assert_int_equal(h.len, 18);
    assert_int_equal(sluice::read_be32(as_bytes(out).data() + 4), sluice::kProtocol30);

    // A CancelRequest written untyped is 16 bytes.
    std::string cancel;
    sluice::PacketWriter wc(cancel);
    wc.begin_untyped();
    wc.put_u32(sluice::kCancelRequestCode);
    wc.put_u32(1234);
    wc.put_u32(0xdeadbeefu);
    wc.finish();
    // 16, 80877102 (0x04d2162e), pid 1234 (0x04d2), key 0xdeadbeef
    const std::string expect("\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x04\xd2\xde\xad\xbe\xef",
                             16);
    assert_int_equal(cancel.size(), expect.size());
    assert_memory_equal(cancel.data(), expect.data(), expect.size());
}

void test_writer_large_length(void**) {
    // The length field is patched with all four bytes.
    std::string out;
    sluice::PacketWriter w(out);
    w.begin('d');
    w.put_bytes(std::string(70000, 'z'));
    w.finish();
    assert_int_equal(sluice::read_be32(as_bytes(out).data() + 1), 70004u);
    PacketHeader h;
    assert_int_equal(sluice::parse_typed_header(as_bytes(out), 0x7fffffff, h), Parse::Ok);
    assert_int_equal(h.len, out.size());
}

// ---------------------------------------------------------------- builders

void test_write_ready_bytes(void**) {
    std::string out;
    sluice::write_ready(out, 'I');
    sluice::write_ready(out, 'T');
    sluice::write_ready(out, 'E');
    const char expect[] = {'Z', 0, 0, 0, 5, 'I', 'Z', 0, 0, 0, 5, 'T', 'Z', 0, 0, 0, 5, 'E'};
    assert_int_equal(out.size(), sizeof expect);
    assert_memory_equal(out.data(), expect, sizeof expect);
}

void test_write_parameter_status_bytes(void**) {
    std::string out;
    sluice::write_parameter_status(out, "client_encoding", "UTF8");
    std::string expect = typed_header('S', 4 + 16 + 5);
    expect.append("client_encoding\0UTF8\0", 21);
    assert_int_equal(out.size(), expect.size());
    assert_memory_equal(out.data(), expect.data(), expect.size());

    std::string empty;
    sluice::write_parameter_status(empty, "application_name", "");
    std::string expect2 = typed_header('S', 4 + 17 + 1);
    expect2.append("application_name\0\0", 18);
    assert_int_equal(empty.size(), expect2.size());
    assert_memory_equal(empty.data(), expect2.data(), expect2.size());
}

void test_write_query_and_backend_key_bytes(void**) {
    std::string out;
    sluice::write_query(out, "select 1");
    std::string expect = query_msg("select 1");
    assert_int_equal(out.size(), expect.size());
    assert_memory_equal(out.data(), expect.data(), expect.size());

    std::string key;
    sluice::write_backend_key(key, 42, 0x01020304u);
    const char kexp[] = {'K', 0, 0, 0, 12, 0, 0, 0, 42, 1, 2, 3, 4};
    assert_int_equal(key.size(), sizeof kexp);
    assert_memory_equal(key.data(), kexp, sizeof kexp);

    std::string auth;
    const uint8_t salt[] = {9, 8, 7, 6};
    sluice::write_auth(auth, sluice::kAuthMd5, std::span<const uint8_t>{salt});
    const char aexp[] = {'R', 0, 0, 0, 12, 0, 0, 0, 5, 9, 8, 7, 6};
    assert_int_equal(auth.size(), sizeof aexp);
    assert_memory_equal(auth.data(), aexp, sizeof aexp);

    std::string ok;
    sluice::write_auth(ok, sluice::kAuthOk);
    const char okexp[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0};
    assert_int_equal(ok.size(), sizeof okexp);
    assert_memory_equal(ok.data(), okexp, sizeof okexp);
}

void test_write_error_round_trip(void**) {
    std::string out;
    sluice::write_error(out, "FATAL", "28P01", "password authentication failed for user \"bob\"",
                        "some detail");
    PacketHeader h;
    assert_int_equal(sluice::parse_typed_header(as_bytes(out), 0x7fffffff, h), Parse::Ok);
    assert_int_equal(h.type, 'E');
    assert_int_equal(h.len, out.size());
    std::span<const uint8_t> body = as_bytes(out).subspan(h.hdr_len, h.body_len());
    assert_int_equal(body[body.size() - 1], 0);  // field list terminator

    sluice::ErrorFields f;
    assert_true(sluice::parse_error_fields(body, f));
    assert_true(f.severity == "FATAL");
    assert_true(f.sqlstate == "28P01");
    assert_true(f.message == "password authentication failed for user \"bob\"");

    // Byte-exact: S, V, C, M, D fields then the terminator.
    std::string expect = typed_header('E', 0);
    expect.append("SFATAL\0VFATAL\0C28P01\0M", 22);
    expect.append("password authentication failed for user \"bob\"");
    expect.push_back('\0');
    expect.append("Dsome detail\0\0", 14);
    std::string len = be32(static_cast<uint32_t>(expect.size() - 1));
    expect.replace(1, 4, len);
    assert_int_equal(out.size(), expect.size());
    assert_memory_equal(out.data(), expect.data(), expect.size());
}

void test_write_error_no_detail_and_notice(void**) {
    std::string out;
    sluice::write_error(out, "ERROR", "08P01", "bad");
    std::string expect = typed_header('E', 4 + 7 + 7 + 7 + 5 + 1);
    expect.append("SERROR\0VERROR\0C08P01\0Mbad\0\0", 27);
    assert_int_equal(out.size(), expect.size());
    assert_memory_equal(out.data(), expect.data(), expect.size());

    std::string n;
    sluice::write_notice(n, "01000", "hello");
    PacketHeader h;
    assert_int_equal(sluice::parse_typed_header(as_bytes(n), 0x7fffffff, h), Parse::Ok);
    assert_int_equal(h.type, 'N');
    sluice::ErrorFields f;
    assert_true(sluice::parse_error_fields(as_bytes(n).subspan(5), f));
    assert_true(f.severity == "NOTICE");
    assert_true(f.sqlstate == "01000");
    assert_true(f.message == "hello");
}

// The statement cache's name for a client's statement, replaced by the client's where it
// stands as a whole name in the message, detail or hint; other fields as they were.
void test_rename_in_error(void**) {
    using namespace std::string_literals;
    std::string body = "SERROR\0VERROR\0C08P01\0Mbind message supplies 1 parameters, but "
                       "prepared statement \"sluice_1\" requires 0\0Dsluice_12 and sluice_1\0"
                       "Fpostgres.c\0Rexec_bind_message\0\0"s;
    std::string out;
    assert_true(sluice::rename_in_error('E', as_bytes(body), "sluice_1", "S_7", out));
    sluice::ErrorFields f;
    assert_int_equal(out[0], 'E');
    assert_true(sluice::parse_error_fields(as_bytes(out).subspan(5), f));
    assert_true(f.message ==
                "bind message supplies 1 parameters, but prepared statement \"S_7\" requires 0");
    assert_true(f.sqlstate == "08P01");
    assert_true(f.routine == "exec_bind_message");
    assert_true(out.find("Dsluice_12 and S_7") != std::string::npos);
    assert_int_equal(out.size(), body.size() + 5 - 2 * (8 - 3));
    // Absent (or only inside a longer name, or in another field): nothing appended.
    std::string other = "SERROR\0C42P01\0Msluice_12 is not it\0Fsluice_1.c\0\0"s;
    std::string none;
    assert_false(sluice::rename_in_error('E', as_bytes(other), "sluice_1", "S_7", none));
    assert_true(none.empty());
    std::string cut = "SERROR\0Msluice_1"s;
    assert_false(sluice::rename_in_error('E', as_bytes(cut), "sluice_1", "S_7", none));
    assert_true(none.empty());
}

void test_parse_error_fields_variants(void**) {
    // Pre-9.6 servers send only 'S' (localized); 'V' wins when present, whatever the order.
    {
        std::string body("SFEHLER\0C42P01\0Mnope\0\0", 22);
        sluice::ErrorFields f;
        assert_true(sluice::parse_error_fields(as_bytes(body), f));
        assert_true(f.severity == "FEHLER");
        assert_true(f.sqlstate == "42P01");
        assert_true(f.message == "nope");
        assert_true(f.routine.empty());
    }
    {
        // The routine ('R') is the server's function name, the same in every language.
        std::string body("SERREUR\0VERROR\0C0A000\0Mle plan\0Fplancache.c\0L731\0"
                         "RRevalidateCachedQuery\0\0", 73);
        sluice::ErrorFields f;
        assert_true(sluice::parse_error_fields(as_bytes(body), f));
        assert_true(f.sqlstate == "0A000");
        assert_true(f.routine == "RevalidateCachedQuery");
    }
    {
        std::string body("VERROR\0SFEHLER\0Xunknown\0\0", 25);
        sluice::ErrorFields f;
        assert_true(sluice::parse_error_fields(as_bytes(body), f));
        assert_true(f.severity == "ERROR");
        assert_true(f.sqlstate.empty());
        assert_true(f.message.empty());
    }
    {
        // Missing final terminator / truncated field value.
        std::string body("SERROR\0C42", 10);
        sluice::ErrorFields f;
        assert_false(sluice::parse_error_fields(as_bytes(body), f));
        std::string body2("SERROR\0", 7);
        sluice::ErrorFields f2;
        assert_false(sluice::parse_error_fields(as_bytes(body2), f2));
        sluice::ErrorFields f3;
        assert_false(sluice::parse_error_fields({}, f3));
        std::string only_term(1, '\0');
        sluice::ErrorFields f4;
        assert_true(sluice::parse_error_fields(as_bytes(only_term), f4));
    }
}

void test_read_be_helpers(void**) {
    const uint8_t b[] = {0x80, 0x00, 0x00, 0x01};
    assert_int_equal(sluice::read_be32(b), 0x80000001u);
    assert_int_equal(sluice::read_be16(b), 0x8000);
    assert_int_equal(sluice::read_be16(b + 2), 1);
}

}  // namespace

int main() {
    const CMUnitTest tests[] = {
        cmocka_unit_test(test_typed_header_split_at_every_offset),
        cmocka_unit_test(test_typed_header_short_lengths_are_bad),
        cmocka_unit_test(test_typed_header_max_len),
        cmocka_unit_test(test_typed_header_unknown_type_passes),
        cmocka_unit_test(test_two_packets_in_one_buffer),
        cmocka_unit_test(test_startup_header),
        cmocka_unit_test(test_startup_header_bounds),
        cmocka_unit_test(test_read_cstr_rejects_missing_nul),
        cmocka_unit_test(test_read_cstr_sequence),
        cmocka_unit_test(test_read_ints_bounds),
        cmocka_unit_test(test_read_bytes),
        cmocka_unit_test(test_writer_typed_round_trip),
        cmocka_unit_test(test_writer_empty_body_and_sequence),
        cmocka_unit_test(test_writer_untyped),
        cmocka_unit_test(test_writer_large_length),
        cmocka_unit_test(test_write_ready_bytes),
        cmocka_unit_test(test_write_parameter_status_bytes),
        cmocka_unit_test(test_write_query_and_backend_key_bytes),
        cmocka_unit_test(test_write_error_round_trip),
        cmocka_unit_test(test_write_error_no_detail_and_notice),
        cmocka_unit_test(test_rename_in_error),
        cmocka_unit_test(test_parse_error_fields_variants),
        cmocka_unit_test(test_read_be_helpers),
    };
    return cmocka_run_group_tests_name("packet", tests, nullptr, nullptr);
}
