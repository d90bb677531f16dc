// MD5 as PostgreSQL's password protocol uses it.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace sluice {

// Lower-case hex digest of data (our own MD5, not OpenSSL's: see md5.cpp).
std::string md5_hex(std::span<const uint8_t> data);
inline std::string md5_hex(std::string_view s) {
    return md5_hex(std::span{reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

// The stored form: "md5" + md5_hex(password + user).
std::string pg_md5_secret(std::string_view password, std::string_view user);

// True when s looks like a stored md5 secret ("md5" + 32 lower-case hex digits).
bool is_md5_secret(std::string_view s) noexcept;

// What a client sends for AuthenticationMD5Password: "md5" + md5_hex(md5_hex(pw+user) + salt).
// `secret` may be the plain password or an md5 secret (then the inner hash is taken from it).
std::string pg_md5_response(std::string_view secret, std::string_view user,
                            std::array<uint8_t, 4> salt);

}  // namespace sluice
