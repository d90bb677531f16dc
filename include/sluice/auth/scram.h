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

// PostgreSQL's defaults for new secrets (scram_iterations, SCRAM_DEFAULT_SALT_LEN).
constexpr int kScramDefaultIterations = 4096;
constexpr size_t kScramSaltLen = 16;
// ScramClient refuses a server asking for more PBKDF2 rounds than this: the derivation runs
// on the event loop (about 0.1 s per 250k rounds). Pass-through logins derive nothing.
constexpr int kScramMaxIterations = 1000000;

// "SCRAM-SHA-256$<iter>:<salt_b64>$<StoredKey_b64>:<ServerKey_b64>"
struct ScramSecret {
    int iterations = 0;
    std::string salt;  // raw bytes
    ScramKey stored_key{};
    ScramKey server_key{};
};

// Strict parse: iterations >= 1, salt valid base64, both keys exactly 32 bytes. `out` is
// untouched on failure.
[[nodiscard]] bool parse_scram_secret(std::string_view text, ScramSecret& out);
bool is_scram_secret(std::string_view text) noexcept;
// Derives a secret from a plain password with the given raw salt and iteration count.
// If OpenSSL refuses (iterations < 1, FIPS limits) it logs an error and returns a secret with
// iterations == 0, which ScramServer treats like a mock secret (every exchange fails).
ScramSecret make_scram_secret(std::string_view password, std::string_view salt, int iterations);
// Same with a fresh random kScramSaltLen-byte salt (ad-hoc secrets for plain passwords).
ScramSecret make_scram_secret(std::string_view password, int iterations);
std::string format_scram_secret(const ScramSecret& s);

// How a client-final-message was judged; the caller logs PgBouncer's words for each.
enum class ScramVerdict : uint8_t {
    Ok,
    Malformed,      // bad syntax, wrong channel-binding echo, or out of order
    NonceMismatch,  // "invalid SCRAM response (nonce does not match)"
    WrongProof,     // wrong password, or mock mode: "password authentication failed"
};

// Server side of the exchange: sluice authenticating a client.
class ScramServer {
public:
    // `secret` is the user's stored secret (derive one from a plain password first).
    // mock = true for unknown users: the exchange runs and always fails.
    // A mock secret without salt/iterations gets a random salt per exchange and 4096
    // iterations; prefer init_mock(), whose salt does not change between attempts.
    void init(const ScramSecret& secret, bool mock) {
        secret_ = secret;
        mock_ = mock;
    }
    // Mock exchange for an unknown user: salt derived from the user name and a per-process
    // random key (stable across attempts, like a real user's), 4096 iterations.
    void init_mock(std::string_view user);
    // Tests only: use this server nonce suffix instead of 18 random bytes in base64.
    void set_nonce_for_test(std::string_view server_nonce) { test_nonce_.assign(server_nonce); }
    // Handles client-first-message; fills server-first-message. False = malformed input:
    // channel binding requested ("p=..."), an authzid ("a=..."), "m=" extension, bad nonce.
    // Starts a new exchange each time (earlier state is dropped).
    [[nodiscard]] bool handle_client_first(std::string_view client_first,
                                           std::string& server_first);
    // Handles client-final-message; on Ok fills server-final-message ("v=..."). One attempt
    // per exchange: anything after the first final (or a final without a first) is Malformed.
    [[nodiscard]] ScramVerdict handle_client_final(std::string_view client_final,
                                                   std::string& server_final);
    // After a successful exchange: the ClientKey recovered from the proof (for pass-through).
    const ScramKey& client_key() const noexcept { return client_key_; }
    const ScramSecret& secret() const noexcept { return secret_; }
    // Why the last client message was refused as malformed, in PgBouncer's words ("client
    // uses authorization identity, but it is not supported", ...), or "" when PgBouncer
    // writes no line for that fault.
    const std::string& failure() const noexcept { return failure_; }

private:
    ScramSecret secret_;
    std::string failure_;
    bool mock_ = false;
    std::string client_nonce_;
    std::string server_nonce_;  // full combined nonce
    std::string client_first_bare_;
    std::string server_first_;
    std::string gs2_header_;  // "n,," or "y,,": what c= must echo
    std::string test_nonce_;
    ScramKey client_key_{};
};

// Client side of the exchange: sluice logging in to PostgreSQL.
class ScramClient {
public:
    // Either a plain password, or recovered keys (pass-through).
    void init_password(std::string_view password);
    void init_keys(const ScramKey& client_key, const ScramKey& server_key);
    // client-first-message ("n,,n=,r=<nonce>"). Starts a new exchange with a fresh nonce.
    std::string client_first();
    // Handles server-first; fills client-final. False = malformed / unusable: nonce not
    // extending ours, bad salt, iterations outside [1, kScramMaxIterations], trailing fields.
    // In pass-through mode the server's salt and iterations are not used (a server with a
    // different secret rejects the proof).
    [[nodiscard]] bool handle_server_first(std::string_view server_first,
                                           std::string& client_final);
    // Checks the server signature in server-final ("v=..."), constant time. An error reply
    // ("e=<reason>") is a failure; the caller may log the text itself.
    [[nodiscard]] bool verify_server_final(std::string_view server_final) const;
    // Tests only: use this nonce (and user name in client-first) instead of random bytes.
    void set_nonce_for_test(std::string_view nonce, std::string_view user = {}) {
        test_nonce_.assign(nonce);
        test_user_.assign(user);
    }

private:
    std::string password_;
    bool have_keys_ = false;
    ScramKey client_key_{};
    ScramKey server_key_{};
    std::string client_nonce_;
    std::string client_first_bare_;
    std::string auth_message_;
    std::string test_nonce_;
    std::string test_user_;
};

// Base64 (standard alphabet, padded). Decoding is strict: length a multiple of 4, no
// whitespace, '=' only as trailing padding; `raw` is cleared on failure.
std::string base64_encode(std::string_view raw);
[[nodiscard]] bool base64_decode(std::string_view text, std::string& raw);

// Cryptographically random bytes (OpenSSL RAND_bytes); aborts if the RNG fails.
void random_bytes(uint8_t* out, size_t n);

}  // namespace sluice
