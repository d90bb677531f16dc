// MD5 password hashing for auth_type=md5 (client side check) and md5 server logins.
// PostgreSQL protocol docs, "AuthenticationMD5Password": concat('md5', md5(concat(md5(
// concat(password, username)), random-salt))).
#include "sluice/auth/md5.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <initializer_list>
#include <utility>

#include "sluice/util/hex.h"

namespace sluice {
namespace {

constexpr size_t kMd5Len = 16;
constexpr size_t kMd5HexLen = 2 * kMd5Len;
constexpr std::string_view kMd5Prefix = "md5";

bool is_lower_hex(char c) noexcept {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

// MD5 itself (RFC 1321), our own: every md5 login hashes once or twice, and OpenSSL's EVP
// route (provider dispatch, context reset, cleanse) cost about 1,800 instructions per digest;
// this one about 900, most of it the 64 steps over the one block a login hashes. PgBouncer also
// carries its own MD5; and a FIPS-mode OpenSSL, which refuses MD5, no longer breaks md5 auth.
class Md5 {
public:
    void update(std::string_view data) noexcept {
        if (data.empty())
            return;  // (its data() may be null, which memcpy must not see)
        const auto* p = reinterpret_cast<const uint8_t*>(data.data());
        size_t n = data.size();
        total_ += n;
        if (used_ > 0) {
            size_t take = std::min(n, sizeof(block_) - used_);
            memcpy(block_ + used_, p, take);
            used_ += take;
            p += take;
            n -= take;
            if (used_ < sizeof(block_))
                return;
            compress(block_);
            used_ = 0;
        }
        for (; n >= sizeof(block_); p += sizeof(block_), n -= sizeof(block_))
            compress(p);
        memcpy(block_, p, n);
        used_ = n;
    }

    void finish(uint8_t out[kMd5Len]) noexcept {
        // 0x80, zeros up to 56 bytes into a block, then the length in bits (little-endian).
        uint64_t bits = total_ * 8;
        block_[used_++] = 0x80;
        if (used_ > 56) {
            memset(block_ + used_, 0, sizeof(block_) - used_);
            compress(block_);
            used_ = 0;
        }
        memset(block_ + used_, 0, 56 - used_);
        if constexpr (kLittleEndian) {
            memcpy(block_ + 56, &bits, 8);
        } else {
            for (int i = 0; i < 8; ++i)
                block_[56 + i] = static_cast<uint8_t>(bits >> (8 * i));
        }
        compress(block_);
        if constexpr (kLittleEndian) {
            memcpy(out, h_, kMd5Len);
        } else {
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j)
                    out[4 * i + j] = static_cast<uint8_t>(h_[i] >> (8 * j));
        }
    }

private:
    // MD5 reads and writes its words little-endian: on such a machine, as they lie in memory.
    static constexpr bool kLittleEndian = std::endian::native == std::endian::little;
    // floor(abs(sin(i + 1)) * 2^32), RFC 1321 section 3.4.
    static constexpr uint32_t kSine[64] = {
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
        0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
        0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
        0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
        0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
        0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
        0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
        0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
        0xeb86d391,
    };
    // Left-rotation per step; each round repeats its four.
    static constexpr int kShift[4][4] = {{7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23},
                                         {6, 10, 15, 21}};

    // Step I of the 64, all of it known at compile time (the rounds below unroll into
    // straight-line code: about 10 instructions a step, 630 a block under callgrind). v holds
    // A B C D; each step's a, b, c, d are those rotated right by I places.
    template <size_t I>
    [[gnu::always_inline]] static void step(uint32_t (&v)[4], const uint32_t (&m)[16]) noexcept {
        constexpr size_t kRound = I / 16;
        uint32_t& a = v[(4 - I % 4) % 4];
        const uint32_t b = v[(5 - I % 4) % 4], c = v[(6 - I % 4) % 4], d = v[(7 - I % 4) % 4];
        uint32_t f;
        size_t g;
        if constexpr (kRound == 0) {
            f = d ^ (b & (c ^ d));  // (b & c) | (~b & d)
            g = I;
        } else if constexpr (kRound == 1) {
            f = c ^ (d & (b ^ c));  // (b & d) | (c & ~d)
            g = (5 * I + 1) % 16;
        } else if constexpr (kRound == 2) {
            f = b ^ c ^ d;
            g = (3 * I + 5) % 16;
        } else {
            f = c ^ (b | ~d);
            g = (7 * I) % 16;
        }
        a = b + std::rotl(a + f + kSine[I] + m[g], kShift[kRound][I % 4]);
    }

    template <size_t... I>
    static void steps(uint32_t (&v)[4], const uint32_t (&m)[16],
                      std::index_sequence<I...>) noexcept {
        (step<I>(v, m), ...);
    }

    void compress(const uint8_t* p) noexcept {
        uint32_t m[16];
        if constexpr (kLittleEndian) {
            memcpy(m, p, sizeof(m));
        } else {
            for (size_t i = 0; i < 16; ++i)
                m[i] = static_cast<uint32_t>(p[4 * i]) |
                       static_cast<uint32_t>(p[4 * i + 1]) << 8 |
                       static_cast<uint32_t>(p[4 * i + 2]) << 16 |
                       static_cast<uint32_t>(p[4 * i + 3]) << 24;
        }
        uint32_t v[4] = {h_[0], h_[1], h_[2], h_[3]};
        steps(v, m, std::make_index_sequence<64>());
        for (size_t i = 0; i < 4; ++i)
            h_[i] += v[i];
    }

    uint32_t h_[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
    uint64_t total_ = 0;
    uint8_t block_[64];
    size_t used_ = 0;
};

// MD5 of the concatenated parts as 32 lower-case hex digits into out.
void md5_hex_into(std::initializer_list<std::string_view> parts, char* out) noexcept {
    Md5 md5;
    for (std::string_view part : parts)
        md5.update(part);
    uint8_t digest[kMd5Len];
    md5.finish(digest);
    hex_encode(digest, kMd5Len, out);
}

// "md5" + the hex digits of the concatenated parts.
std::string md5_secret_of(std::initializer_list<std::string_view> parts) {
    char buf[kMd5Prefix.size() + kMd5HexLen];
    memcpy(buf, kMd5Prefix.data(), kMd5Prefix.size());
    md5_hex_into(parts, buf + kMd5Prefix.size());
    return std::string(buf, sizeof(buf));
}

}  // namespace

std::string md5_hex(std::span<const uint8_t> data) {
    char hex[kMd5HexLen];
    md5_hex_into({std::string_view(reinterpret_cast<const char*>(data.data()), data.size())},
                 hex);
    return std::string(hex, sizeof(hex));
}

std::string pg_md5_secret(std::string_view password, std::string_view user) {
    return md5_secret_of({password, user});
}

bool is_md5_secret(std::string_view s) noexcept {
    if (s.size() != kMd5Prefix.size() + kMd5HexLen || !s.starts_with(kMd5Prefix))
        return false;
    for (char c : s.substr(kMd5Prefix.size())) {
        if (!is_lower_hex(c))
            return false;
    }
    return true;
}

std::string pg_md5_response(std::string_view secret, std::string_view user,
                            std::array<uint8_t, 4> salt) {
    char inner[kMd5HexLen];
    if (is_md5_secret(secret))
        memcpy(inner, secret.data() + kMd5Prefix.size(), kMd5HexLen);
    else
        md5_hex_into({secret, user}, inner);
    return md5_secret_of({std::string_view(inner, sizeof(inner)),
                          std::string_view(reinterpret_cast<const char*>(salt.data()), 4)});
}

}  // namespace sluice
