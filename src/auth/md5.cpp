// MD5 password hashing for auth_type=md5 (client side check) and md5 server logins.
// PostgreSQL protocol docs, "AuthenticationMD5Password": concat('md5', md5(concat(md5(
// concat(password, username)), random-salt))).
#include "sluice/auth/md5.h"

#include <cstring>
#include <initializer_list>

#include <openssl/evp.h>

#include "sluice/util/hex.h"
#include "sluice/util/log.h"

namespace sluice {
namespace {

constexpr size_t kMd5Len = 16;
constexpr size_t kMd5HexLen = 2 * kMd5Len;
constexpr std::string_view kMd5Prefix = "md5";

bool is_lower_hex(char c) noexcept {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}


// MD5 of the concatenated parts as 32 lower-case hex digits into out. False (logged) when
// OpenSSL refuses MD5 (FIPS).
bool md5_hex_into(std::initializer_list<std::string_view> parts, char* out) {
    // OpenSSL 3 looks EVP_md5() up in the provider on every use, and EVP_Digest allocates a
    // context per call: fetch the digest and make the context once (they live for the
    // process; a null fetch falls back to the implicit one).
    static EVP_MD* fetched = EVP_MD_fetch(nullptr, "MD5", nullptr);
    static EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    const EVP_MD* md = fetched ? fetched : EVP_md5();
    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    bool ok = ctx && EVP_DigestInit_ex(ctx, md, nullptr) == 1;
    for (std::string_view part : parts)
        ok = ok && EVP_DigestUpdate(ctx, part.data(), part.size()) == 1;
    ok = ok && EVP_DigestFinal_ex(ctx, digest, &len) == 1 && len == kMd5Len;
    if (!ok) {
        log_error("md5: digest failed (MD5 disabled in OpenSSL?)");
        return false;
    }
    hex_encode(digest, len, out);
    return true;
}

// "md5" + the hex digits of the concatenated parts, or "".
std::string md5_secret_of(std::initializer_list<std::string_view> parts) {
    char buf[kMd5Prefix.size() + kMd5HexLen];
    memcpy(buf, kMd5Prefix.data(), kMd5Prefix.size());
    if (!md5_hex_into(parts, buf + kMd5Prefix.size()))
        return {};
    return std::string(buf, sizeof(buf));
}

}  // namespace

// Returns "" when MD5 is unavailable (an OpenSSL FIPS provider refuses it); callers compare
// against what a client sent, so an empty result can never match.
std::string md5_hex(std::span<const uint8_t> data) {
    char hex[kMd5HexLen];
    if (!md5_hex_into({std::string_view(reinterpret_cast<const char*>(data.data()), data.size())},
                      hex))
        return {};
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
    else if (!md5_hex_into({secret, user}, inner))
        return {};
    return md5_secret_of({std::string_view(inner, sizeof(inner)),
                          std::string_view(reinterpret_cast<const char*>(salt.data()), 4)});
}

}  // namespace sluice
