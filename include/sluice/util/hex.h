// Lower-case hexadecimal text of bytes, and back.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace sluice {

// The two digits of every byte value, "000102...ff" (one load and one store per byte).
inline constexpr std::array<char, 512> kHexPairs = [] {
    constexpr char kDigits[] = "0123456789abcdef";
    std::array<char, 512> t{};
    for (size_t i = 0; i < 256; i++) {
        t[2 * i] = kDigits[i >> 4];
        t[2 * i + 1] = kDigits[i & 0x0f];
    }
    return t;
}();

// Writes 2 * n digits to out (no terminator).
inline void hex_encode(const uint8_t* p, size_t n, char* out) noexcept {
    for (size_t i = 0; i < n; i++)
        memcpy(out + 2 * i, &kHexPairs[2 * size_t{p[i]}], 2);
}

inline void append_hex(std::string& out, const void* data, size_t n) {
    size_t at = out.size();
    out.resize(at + 2 * n);
    hex_encode(static_cast<const uint8_t*>(data), n, out.data() + at);
}

inline void append_hex(std::string& out, std::string_view bytes) {
    append_hex(out, bytes.data(), bytes.size());
}

// Replaces out with the bytes of lower-case hex text; false when it is not such text.
inline bool decode_hex(std::string_view hex, std::string& out) {
    auto digit = [](char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    };
    if (hex.size() % 2 != 0)
        return false;
    out.clear();
    for (size_t i = 0; i < hex.size(); i += 2) {
        int hi = digit(hex[i]), lo = digit(hex[i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out += static_cast<char>(static_cast<unsigned>(hi << 4 | lo));
    }
    return true;
}

}  // namespace sluice
