// SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL uses it: no channel binding,
// user name in client-first is ignored (empty), passwords taken as given (ASCII SASLprep is
// the identity; see the .cpp for what is not normalised).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace sluice {

using ScramKey = std::array<uint8_t, 32>;

// "SCRAM-SHA-256$<iter>:<salt_b64>$<StoredKey_b64>:<ServerKey_b64>"
struct ScramSecret {
    int iterations = 0;
    std::string salt;  // raw bytes
    ScramKey stored_key{};
    ScramKey server_key{};
};

[[nodiscard]] bool parse_scram_secret(std::string_view text, ScramSecret& out);
bool is_scram_secret(std::string_view text) noexcept;
// Derives a secret from a plain password with the given raw salt and iteration count.
ScramSecret make_scram_secret(std::string_view password, std::string_view salt, int iterations);
std::string format_scram_secret(const ScramSecret& s);

// Server side of the exchange: sluice authenticating a client.
class ScramServer {
public:
    // `secret` is the user's stored secret (derive one from a plain password first).
    // mock = true for unknown users: the exchange runs and always fails.
    void init(const ScramSecret& secret, bool mock) {
        secret_ = secret;
        mock_ = mock;
    }
    // Handles client-first-message; fills server-first-message. False = malformed input.
    [[nodiscard]] bool handle_client_first(std::string_view client_first, std::string& server_first);
    // Handles client-final-message; on success fills server-final-message ("v=...").
    // False = malformed input or wrong proof.
    [[nodiscard]] bool handle_client_final(std::string_view client_final, std::string& server_final);
    // After a successful exchange: the ClientKey recovered from the proof (for pass-through).
    const ScramKey& client_key() const noexcept { return client_key_; }
    const ScramSecret& secret() const noexcept { return secret_; }

private:
    ScramSecret secret_;
    bool mock_ = false;
    std::string client_nonce_;
    std::string server_nonce_;  // full combined nonce
    std::string client_first_bare_;
    std::string server_first_;
    ScramKey client_key_{};
};

// Client side of the exchange: sluice logging in to PostgreSQL.
class ScramClient {
public:
    // Either a plain password, or recovered keys (pass-through).
    void init_password(std::string_view password);
    void init_keys(const ScramKey& client_key, const ScramKey& server_key);
    // client-first-message ("n,,n=,r=<nonce>").
    std::string client_first();
    // Handles server-first; fills client-final. False = malformed / unusable (e.g. iterations).
    [[nodiscard]] bool handle_server_first(std::string_view server_first, std::string& client_final);
    // Checks the server signature in server-final ("v=...").
    [[nodiscard]] bool verify_server_final(std::string_view server_final) const;

private:
    std::string password_;
    bool have_keys_ = false;
    ScramKey client_key_{};
    ScramKey server_key_{};
    std::string client_nonce_;
    std::string client_first_bare_;
    std::string auth_message_;
};

// Base64 (standard alphabet, padded).
std::string base64_encode(std::string_view raw);
[[nodiscard]] bool base64_decode(std::string_view text, std::string& raw);

// Cryptographically random bytes (OpenSSL RAND_bytes); aborts if the RNG fails.
void random_bytes(uint8_t* out, size_t n);

}  // namespace sluice
