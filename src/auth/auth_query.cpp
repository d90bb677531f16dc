// auth_query messages: building the extended-protocol batch and reading its two-column answer
// (PgBouncer's pktbuf_write_ExtQuery and handle_auth_query_response).
#include "sluice/auth/auth_query.h"

#include "sluice/proto/packet.h"

namespace sluice {

void write_auth_query(std::string& out, std::string_view query, std::string_view user) {
    PacketWriter w(out);
    w.begin(msg::kParse);
    w.put_cstr("");  // unnamed statement
    w.put_cstr(query);
    w.put_u16(0);  // no parameter types: the server infers $1
    w.finish();
    w.begin(msg::kBind);
    w.put_cstr("");  // unnamed portal
    w.put_cstr("");
    w.put_u16(0);  // all parameters in text format
    w.put_u16(1);
    w.put_u32(static_cast<uint32_t>(user.size()));
    w.put_bytes(user);
    w.put_u16(0);  // all result columns in text format
    w.finish();
    w.begin(msg::kDescribe);
    w.put_u8('P');
    w.put_cstr("");
    w.finish();
    w.begin(msg::kExecute);
    w.put_cstr("");
    w.put_u32(0);  // no row limit
    w.finish();
    w.begin(msg::kSync);
    w.finish();
}

void AuthQueryReply::on_reply(uint8_t type, std::span<const uint8_t> body) {
    if (state != State::Running)
        return;
    auto fail = [this](std::string why) {
        state = State::Failed;
        error = std::move(why);
    };
    PacketReader r(body);
    switch (type) {
    case msg::kRowDescription: {
        uint16_t cols;
        if (!r.read_u16(cols))
            return fail("bad packet");
        if (cols != 2)
            return fail("expected 2 columns from auth_query, not " + std::to_string(cols));
        return;
    }
    case msg::kDataRow: {
        uint16_t cols;
        uint32_t len;
        std::span<const uint8_t> v;
        if (!r.read_u16(cols))
            return fail("bad packet");
        if (cols != 2)
            return fail("expected 2 columns from auth_query, not " + std::to_string(cols));
        if (!r.read_u32(len))
            return fail("bad packet");
        // A NULL user name reports "no such user", like an empty result (PgBouncer docs).
        bool null_user = len == 0xffffffffu;
        if (!null_user && !r.read_bytes(len, v))
            return fail("bad packet");
        std::string name(reinterpret_cast<const char*>(v.data()), v.size());
        if (!r.read_u32(len))
            return fail("bad packet");
        bool null_pw = len == 0xffffffffu;
        if (!null_pw && !r.read_bytes(len, v))
            return fail("bad packet");
        found = !null_user;
        user = std::move(name);
        null_password = null_pw;
        secret.assign(
            null_pw ? "" : std::string_view(reinterpret_cast<const char*>(v.data()), v.size()));
        return;
    }
    case msg::kErrorResponse: {
        ErrorFields f;
        if (parse_error_fields(body, f))
            return fail("error response from auth_query: " + std::string(f.message));
        return fail("error response from auth_query");
    }
    case msg::kReadyForQuery:
        state = State::Done;
        return;
    case msg::kParseComplete:
    case msg::kBindComplete:
    case msg::kNoData:
    case msg::kCommandComplete:
    case msg::kEmptyQuery:
    case msg::kNoticeResponse:
    case msg::kParameterStatus:
        return;
    default:
        return fail(std::string("unexpected response from auth_query: '") +
                    static_cast<char>(type) + "'");
    }
}

}  // namespace sluice
