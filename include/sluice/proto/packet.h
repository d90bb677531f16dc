// Wire framing of the PostgreSQL v3 protocol: message type bytes, header parsing,
// PacketReader (bounds-checked body reads) and PacketWriter (builds messages into a string).
// Nothing here touches sockets.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace sluice {

namespace msg {
// frontend
inline constexpr uint8_t kQuery = 'Q';
inline constexpr uint8_t kParse = 'P';
inline constexpr uint8_t kBind = 'B';
inline constexpr uint8_t kDescribe = 'D';
inline constexpr uint8_t kExecute = 'E';
inline constexpr uint8_t kClose = 'C';
inline constexpr uint8_t kSync = 'S';
inline constexpr uint8_t kFlush = 'H';
inline constexpr uint8_t kFunctionCall = 'F';
inline constexpr uint8_t kCopyData = 'd';
inline constexpr uint8_t kCopyDone = 'c';
inline constexpr uint8_t kCopyFail = 'f';
inline constexpr uint8_t kPassword = 'p';
inline constexpr uint8_t kTerminate = 'X';
// backend
inline constexpr uint8_t kAuth = 'R';
inline constexpr uint8_t kBackendKeyData = 'K';
inline constexpr uint8_t kParameterStatus = 'S';
inline constexpr uint8_t kReadyForQuery = 'Z';
inline constexpr uint8_t kNegotiateProtocol = 'v';
inline constexpr uint8_t kRowDescription = 'T';
inline constexpr uint8_t kDataRow = 'D';
inline constexpr uint8_t kCommandComplete = 'C';
inline constexpr uint8_t kEmptyQuery = 'I';
inline constexpr uint8_t kParseComplete = '1';
inline constexpr uint8_t kBindComplete = '2';
inline constexpr uint8_t kCloseComplete = '3';
inline constexpr uint8_t kParameterDescription = 't';
inline constexpr uint8_t kNoData = 'n';
inline constexpr uint8_t kPortalSuspended = 's';
inline constexpr uint8_t kCopyInResponse = 'G';
inline constexpr uint8_t kCopyOutResponse = 'H';
inline constexpr uint8_t kCopyBothResponse = 'W';
inline constexpr uint8_t kFunctionCallResponse = 'V';
inline constexpr uint8_t kErrorResponse = 'E';
inline constexpr uint8_t kNoticeResponse = 'N';
inline constexpr uint8_t kNotification = 'A';
}  // namespace msg

// Startup-phase request codes (the Int32 after the length of an untyped packet).
inline constexpr uint32_t kProtocol30 = 196608;  // 3.0
inline constexpr uint32_t kCancelRequestCode = 80877102;
inline constexpr uint32_t kSslRequestCode = 80877103;
inline constexpr uint32_t kGssEncRequestCode = 80877104;

// Authentication request subtypes ('R').
inline constexpr uint32_t kAuthOk = 0;
inline constexpr uint32_t kAuthCleartext = 3;
inline constexpr uint32_t kAuthMd5 = 5;
inline constexpr uint32_t kAuthSasl = 10;
inline constexpr uint32_t kAuthSaslContinue = 11;
inline constexpr uint32_t kAuthSaslFinal = 12;

inline constexpr size_t kTypedHeaderLen = 5;
inline constexpr size_t kStartupHeaderLen = 4;
inline constexpr uint32_t kMaxStartupLen = 10000;
// A user name this long or longer is refused at login ("username too long", as PgBouncer).
inline constexpr size_t kMaxUserNameLen = 128;
// The longest message a client may send before it is logged in (password, SASL): as
// PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH, plus the header. Nothing bigger is buffered for a
// client nobody has authenticated yet.
inline constexpr uint32_t kMaxLoginMessageLen = 65535 + 5;

// A parsed message header. `len` counts the whole packet, header included, so a packet
// occupies exactly `len` bytes of the stream.
struct PacketHeader {
    uint8_t type = 0;      // 0 for untyped startup-phase packets
    uint8_t hdr_len = 0;   // 5 typed, 4 untyped
    uint32_t len = 0;      // total bytes incl. header
    uint32_t body_len() const noexcept { return len - hdr_len; }
};

enum class Parse : uint8_t {
    Ok,
    NeedMore,  // not enough bytes for the header yet
    Bad,       // impossible length
};

inline uint32_t read_be32(const uint8_t* p) noexcept {
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
inline void write_be32(uint8_t* p, uint32_t v) noexcept {
    p[0] = static_cast<uint8_t>(v >> 24);
    p[1] = static_cast<uint8_t>(v >> 16);
    p[2] = static_cast<uint8_t>(v >> 8);
    p[3] = static_cast<uint8_t>(v);
}

// Parses a typed header from the front of `data`. The length field must be >= 4 and the
// total must not exceed max_len. (Inline: it runs for every message that passes.)
[[nodiscard]] inline Parse parse_typed_header(std::span<const uint8_t> data, uint32_t max_len,
                                              PacketHeader& out) noexcept {
    if (data.size() < kTypedHeaderLen)
        return Parse::NeedMore;
    uint32_t n = read_be32(data.data() + 1);
    // The length counts itself: anything below 4 is impossible. Total = n + 1 type byte.
    if (n < 4 || n > max_len - 1)
        return Parse::Bad;
    out.type = data[0];
    out.hdr_len = kTypedHeaderLen;
    out.len = n + 1;
    return Parse::Ok;
}
// The typed message at data[off..] when it is whole and its header valid (the rules of
// parse_typed_header()), for walks over runs of messages (SBufOwner::take_plain_run()).
inline bool whole_message_at(std::span<const uint8_t> data, size_t off, uint32_t max_len,
                             uint8_t& type, uint32_t& len) noexcept {
    if (data.size() - off < kTypedHeaderLen)
        return false;
    uint32_t n = read_be32(data.data() + off + 1);
    if (n < 4 || n > max_len - 1 || n >= data.size() - off)
        return false;
    type = data[off];
    len = n + 1;
    return true;
}

// Parses an untyped (startup-phase) header: Int32 length >= 8 and <= kMaxStartupLen.
[[nodiscard]] Parse parse_startup_header(std::span<const uint8_t> data, PacketHeader& out) noexcept;
inline uint16_t read_be16(const uint8_t* p) noexcept {
    return static_cast<uint16_t>((p[0] << 8) | p[1]);
}

// Reads a packet body front to back. Never reads past the end; on failure nothing is consumed.
class PacketReader {
public:
    explicit PacketReader(std::span<const uint8_t> body) noexcept : body_(body) {}
    [[nodiscard]] bool read_u8(uint8_t& out) noexcept;
    [[nodiscard]] bool read_u16(uint16_t& out) noexcept;
    [[nodiscard]] bool read_u32(uint32_t& out) noexcept;
    [[nodiscard]] bool read_i32(int32_t& out) noexcept;
    // A NUL-terminated string; the view points into the packet.
    [[nodiscard]] bool read_cstr(std::string_view& out) noexcept;
    [[nodiscard]] bool read_bytes(size_t n, std::span<const uint8_t>& out) noexcept;
    size_t remaining() const noexcept { return body_.size() - pos_; }
    std::span<const uint8_t> rest() const noexcept { return body_.subspan(pos_); }

private:
    std::span<const uint8_t> body_;
    size_t pos_ = 0;
};

// Appends messages to a string. begin() writes the type and a length placeholder; finish()
// patches the length. Messages may be nested only sequentially.
class PacketWriter {
public:
    explicit PacketWriter(std::string& out) noexcept : out_(out) {}
    void begin(uint8_t type);
    void begin_untyped();
    void put_u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
    void put_u16(uint16_t v);
    void put_u32(uint32_t v);
    void put_i32(int32_t v) { put_u32(static_cast<uint32_t>(v)); }
    void put_cstr(std::string_view s);  // bytes + NUL
    void put_bytes(std::string_view s) { out_.append(s); }
    void put_bytes(std::span<const uint8_t> s) {
        out_.append(reinterpret_cast<const char*>(s.data()), s.size());
    }
    void finish();

private:
    std::string& out_;
    size_t start_ = 0;
};

// Message builders used across modules (all append to `out`).
void write_error(std::string& out, const char* severity, const char* sqlstate,
                 std::string_view message, std::string_view detail = {},
                 std::string_view hint = {});
void write_notice(std::string& out, const char* sqlstate, std::string_view message,
                  std::string_view detail = {});
void write_auth(std::string& out, uint32_t code, std::span<const uint8_t> extra = {});
void write_parameter_status(std::string& out, std::string_view name, std::string_view value);
void write_ready(std::string& out, char status);
void write_query(std::string& out, std::string_view sql);
void write_backend_key(std::string& out, uint32_t pid, uint32_t key);

// Fields of an ErrorResponse/NoticeResponse body.
struct ErrorFields {
    std::string_view severity;  // 'V' (or 'S')
    std::string_view sqlstate;  // 'C'
    std::string_view message;   // 'M'
    std::string_view detail;    // 'D'
    std::string_view hint;      // 'H'
    std::string_view routine;   // 'R': the server's source function (never translated)
};
[[nodiscard]] bool parse_error_fields(std::span<const uint8_t> body, ErrorFields& out) noexcept;
// Appends to `out` an ErrorResponse/NoticeResponse (`type`) like `body` but with `from`, where
// it stands as a whole name in the message, detail or hint, replaced by `to` (the statement
// cache's name for a client's). False, `out` untouched, when it stands nowhere or the body is
// malformed.
[[nodiscard]] bool rename_in_error(uint8_t type, std::span<const uint8_t> body,
                                   std::string_view from, std::string_view to, std::string& out);

}  // namespace sluice
