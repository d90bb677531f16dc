// Framing and message building for the PostgreSQL v3 protocol.
#include "sluice/proto/packet.h"

#include <cstring>

namespace sluice {

Parse parse_startup_header(std::span<const uint8_t> data, PacketHeader& out) noexcept {
    if (data.size() < kStartupHeaderLen)
        return Parse::NeedMore;
    uint32_t n = read_be32(data.data());
    if (n < 8 || n > kMaxStartupLen)
        return Parse::Bad;
    out.type = 0;
    out.hdr_len = kStartupHeaderLen;
    out.len = n;
    return Parse::Ok;
}

bool PacketReader::read_u8(uint8_t& out) noexcept {
    if (remaining() < 1)
        return false;
    out = body_[pos_++];
    return true;
}

bool PacketReader::read_u16(uint16_t& out) noexcept {
    if (remaining() < 2)
        return false;
    out = read_be16(body_.data() + pos_);
    pos_ += 2;
    return true;
}

bool PacketReader::read_u32(uint32_t& out) noexcept {
    if (remaining() < 4)
        return false;
    out = read_be32(body_.data() + pos_);
    pos_ += 4;
    return true;
}

bool PacketReader::read_i32(int32_t& out) noexcept {
    uint32_t v;
    if (!read_u32(v))
        return false;
    out = static_cast<int32_t>(v);
    return true;
}

bool PacketReader::read_cstr(std::string_view& out) noexcept {
    if (pos_ >= body_.size())
        return false;
    // memchr: query texts pass here with every Parse, a byte loop costs several times more.
    const uint8_t* start = body_.data() + pos_;
    const void* nul = memchr(start, 0, body_.size() - pos_);
    if (!nul)
        return false;
    size_t n = static_cast<size_t>(static_cast<const uint8_t*>(nul) - start);
    out = std::string_view(reinterpret_cast<const char*>(start), n);
    pos_ += n + 1;
    return true;
}

bool PacketReader::read_bytes(size_t n, std::span<const uint8_t>& out) noexcept {
    if (remaining() < n)
        return false;
    out = body_.subspan(pos_, n);
    pos_ += n;
    return true;
}

void PacketWriter::begin(uint8_t type) {
    out_.push_back(static_cast<char>(type));
    start_ = out_.size();
    out_.append(4, '\0');
}

void PacketWriter::begin_untyped() {
    start_ = out_.size();
    out_.append(4, '\0');
}

void PacketWriter::put_u16(uint16_t v) {
    out_.push_back(static_cast<char>(v >> 8));
    out_.push_back(static_cast<char>(v & 0xff));
}

void PacketWriter::put_u32(uint32_t v) {
    out_.push_back(static_cast<char>(v >> 24));
    out_.push_back(static_cast<char>((v >> 16) & 0xff));
    out_.push_back(static_cast<char>((v >> 8) & 0xff));
    out_.push_back(static_cast<char>(v & 0xff));
}

void PacketWriter::put_cstr(std::string_view s) {
    out_.append(s);
    out_.push_back('\0');
}

void PacketWriter::finish() {
    write_be32(reinterpret_cast<uint8_t*>(out_.data() + start_),
               static_cast<uint32_t>(out_.size() - start_));
}

namespace {
void write_fields(std::string& out, uint8_t type, const char* severity, const char* sqlstate,
                  std::string_view message, std::string_view detail, std::string_view hint) {
    PacketWriter w(out);
    w.begin(type);
    w.put_u8('S');
    w.put_cstr(severity);
    w.put_u8('V');
    w.put_cstr(severity);
    w.put_u8('C');
    w.put_cstr(sqlstate);
    w.put_u8('M');
    w.put_cstr(message);
    if (!detail.empty()) {
        w.put_u8('D');
        w.put_cstr(detail);
    }
    if (!hint.empty()) {
        w.put_u8('H');
        w.put_cstr(hint);
    }
    w.put_u8(0);
    w.finish();
}
}  // namespace

void write_error(std::string& out, const char* severity, const char* sqlstate,
                 std::string_view message, std::string_view detail, std::string_view hint) {
    write_fields(out, msg::kErrorResponse, severity, sqlstate, message, detail, hint);
}

void write_notice(std::string& out, const char* sqlstate, std::string_view message,
                  std::string_view detail) {
    write_fields(out, msg::kNoticeResponse, "NOTICE", sqlstate, message, detail, {});
}

void write_auth(std::string& out, uint32_t code, std::span<const uint8_t> extra) {
    PacketWriter w(out);
    w.begin(msg::kAuth);
    w.put_u32(code);
    w.put_bytes(extra);
    w.finish();
}

void write_parameter_status(std::string& out, std::string_view name, std::string_view value) {
    PacketWriter w(out);
    w.begin(msg::kParameterStatus);
    w.put_cstr(name);
    w.put_cstr(value);
    w.finish();
}

void write_ready(std::string& out, char status) {
    PacketWriter w(out);
    w.begin(msg::kReadyForQuery);
    w.put_u8(static_cast<uint8_t>(status));
    w.finish();
}

void write_query(std::string& out, std::string_view sql) {
    PacketWriter w(out);
    w.begin(msg::kQuery);
    w.put_cstr(sql);
    w.finish();
}

void write_backend_key(std::string& out, uint32_t pid, uint32_t key) {
    PacketWriter w(out);
    w.begin(msg::kBackendKeyData);
    w.put_u32(pid);
    w.put_u32(key);
    w.finish();
}

namespace {
// Calls f(code, value) for each field of an ErrorResponse/NoticeResponse body, in order;
// false when the body is malformed.
template <typename F> bool each_error_field(std::span<const uint8_t> body, F&& f) {
    PacketReader r(body);
    for (;;) {
        uint8_t code;
        if (!r.read_u8(code))
            return false;
        if (code == 0)
            return true;
        std::string_view v;
        if (!r.read_cstr(v))
            return false;
        f(code, v);
    }
}

bool name_char(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '$';
}

// `text` with whole-name occurrences of `from` replaced; false when there are none.
bool replace_name(std::string_view text, std::string_view from, std::string_view to,
                  std::string& out) {
    bool any = false;
    size_t at = 0;
    for (size_t i = text.find(from); i != std::string_view::npos; i = text.find(from, i + 1)) {
        size_t end = i + from.size();
        if ((i > 0 && name_char(text[i - 1])) || (end < text.size() && name_char(text[end])))
            continue;
        out.append(text.substr(at, i - at));
        out.append(to);
        at = end;
        any = true;
    }
    out.append(text.substr(at));
    return any;
}
}  // namespace

bool rename_in_error(uint8_t type, std::span<const uint8_t> body, std::string_view from,
                     std::string_view to, std::string& out) {
    std::string fields;
    bool any = false;
    bool ok = each_error_field(body, [&](uint8_t code, std::string_view v) {
        fields.push_back(static_cast<char>(code));
        if (code == 'M' || code == 'D' || code == 'H')
            any |= replace_name(v, from, to, fields);
        else
            fields.append(v);
        fields.push_back('\0');
    });
    if (!ok || !any)
        return false;
    PacketWriter w(out);
    w.begin(type);
    w.put_bytes(std::string_view(fields));
    w.put_u8(0);
    w.finish();
    return true;
}

bool parse_error_fields(std::span<const uint8_t> body, ErrorFields& out) noexcept {
    return each_error_field(body, [&](uint8_t code, std::string_view v) {
        switch (code) {
        case 'S':
            if (out.severity.empty())
                out.severity = v;
            break;
        case 'V':
            out.severity = v;
            break;
        case 'C':
            out.sqlstate = v;
            break;
        case 'M':
            out.message = v;
            break;
        case 'D':
            out.detail = v;
            break;
        case 'H':
            out.hint = v;
            break;
        case 'R':
            out.routine = v;
            break;
        default:
            break;
        }
    });
}

}  // namespace sluice
