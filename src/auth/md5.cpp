// MD5 password hashing for auth_type=md5 (client side check) and md5 server logins.
// PostgreSQL protocol docs, "AuthenticationMD5Password": concat('md5', md5(concat(md5(
// concat(password, username)), random-salt))).
#include "sluice/auth/md5.h"

#include <openssl/evp.h>

#include "sluice/util/log.h"

namespace sluice {
namespace {

constexpr size_t kMd5Len = 16;
constexpr size_t kMd5HexLen = 2 * kMd5Len;
constexpr std::string_view kMd5Prefix = "md5";

bool is_lower_hex(char c) noexcept {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

std::string hex_encode(const uint8_t* p, size_t n) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 * n);
    for (size_t i = 0; i < n; i++) {
        out.push_back(kDigits[p[i] >> 4]);
        out.push_back(kDigits[p[i] & 0x0f]);
    }
    return out;
}

}  // namespace

// Returns "" when MD5 is unavailable (an OpenSSL FIPS provider refuses it); callers compare
// against what a client sent, so an empty result can never match.
std::string md5_hex(std::span<const uint8_t> data) {
    // OpenSSL 3 looks EVP_md5() up in the provider on every use; fetch it once (it lives for
    // the process; a null fetch falls back to the implicit one).
    static EVP_MD* fetched = EVP_MD_fetch(nullptr, "MD5", nullptr);
    const EVP_MD* md = fetched ? fetched : EVP_md5();
    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), digest, &len, md, nullptr) != 1 ||
        len != kMd5Len) {
        log_error("md5: digest failed (MD5 disabled in OpenSSL?)");
        return {};
    }
    return hex_encode(digest, len);
}

std::string pg_md5_secret(std::string_view password, std::string_view user) {
    std::string buf;
    buf.reserve(password.size() + user.size());
    buf.append(password).append(user);
    std::string hex = md5_hex(buf);
    if (hex.empty())
        return {};
    return std::string(kMd5Prefix) + hex;
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
    std::string inner;
    if (is_md5_secret(secret)) {
        inner.assign(secret.substr(kMd5Prefix.size()));
    } else {
        std::string buf;
        buf.reserve(secret.size() + user.size());
        buf.append(secret).append(user);
        inner = md5_hex(buf);
        if (inner.empty())
            return {};
    }
    inner.append(reinterpret_cast<const char*>(salt.data()), salt.size());
    std::string hex = md5_hex(inner);
    if (hex.empty())
        return {};
    return std::string(kMd5Prefix) + hex;
}

}  // namespace sluice
