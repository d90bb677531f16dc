// SCRAM-SHA-256 for both directions: ScramServer checks clients logging in to sluice,
// ScramClient logs sluice in to PostgreSQL (with a password or pass-through keys).
// RFC 5802 (SCRAM), RFC 7677 (SHA-256 variant); PostgreSQL's auth-scram.c / fe-auth-scram.c
// decide the details RFCs leave open (empty user name, no extensions, nonce lengths).
//
// SASLprep (RFC 4013) is not implemented: passwords are used as their raw UTF-8 bytes. For
// ASCII passwords SASLprep is the identity, and PostgreSQL itself falls back to the raw bytes
// whenever SASLprep fails, so only non-ASCII passwords that normalise differently (e.g.
// decomposed vs composed accents, non-ASCII spaces) can disagree with PostgreSQL.
#include "sluice/auth/scram.h"

#include <charconv>
#include <climits>
#include <cstring>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "sluice/util/log.h"

namespace sluice {
namespace {

constexpr std::string_view kSecretPrefix = "SCRAM-SHA-256$";
constexpr size_t kRawNonceLen = 18;  // PostgreSQL's SCRAM_RAW_NONCE_LEN
constexpr std::string_view kClientKeyText = "Client Key";
constexpr std::string_view kServerKeyText = "Server Key";
constexpr char kB64Chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

const uint8_t* bytes(std::string_view s) noexcept {
    return reinterpret_cast<const uint8_t*>(s.data());
}

void sha256(const uint8_t* data, size_t len, ScramKey& out) {
    unsigned int n = 0;
    if (EVP_Digest(data, len, out.data(), &n, EVP_sha256(), nullptr) != 1 || n != out.size())
        die("scram: SHA-256 failed");
}

void hmac_sha256(const uint8_t* key, size_t key_len, std::string_view data, ScramKey& out) {
    unsigned int n = 0;
    if (key_len > INT_MAX ||
        HMAC(EVP_sha256(), key, static_cast<int>(key_len), bytes(data), data.size(), out.data(),
             &n) == nullptr ||
        n != out.size())
        die("scram: HMAC-SHA-256 failed");
}

void hmac_sha256(const ScramKey& key, std::string_view data, ScramKey& out) {
    hmac_sha256(key.data(), key.size(), data, out);
}

// SaltedPassword := Hi(Normalize(password), salt, i), Hi being PBKDF2 with HMAC-SHA-256.
[[nodiscard]] bool salted_password(std::string_view password, std::string_view salt, int iterations,
                                   ScramKey& out) {
    if (password.size() > INT_MAX || salt.size() > INT_MAX || iterations < 1)
        return false;
    return PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), bytes(salt),
                             static_cast<int>(salt.size()), iterations, EVP_sha256(),
                             static_cast<int>(out.size()), out.data()) == 1;
}

// ClientKey and ServerKey from a password; false when PBKDF2 refuses the input.
[[nodiscard]] bool derive_keys(std::string_view password, std::string_view salt, int iterations,
                               ScramKey& client_key, ScramKey& server_key) {
    ScramKey salted{};
    if (!salted_password(password, salt, iterations, salted))
        return false;
    hmac_sha256(salted, kClientKeyText, client_key);
    hmac_sha256(salted, kServerKeyText, server_key);
    OPENSSL_cleanse(salted.data(), salted.size());
    return true;
}

std::string key_b64(const ScramKey& k) {
    return base64_encode({reinterpret_cast<const char*>(k.data()), k.size()});
}

// Decodes base64 that must hold exactly one key.
[[nodiscard]] bool decode_key(std::string_view text, ScramKey& out) {
    std::string raw;
    if (!base64_decode(text, raw) || raw.size() != out.size())
        return false;
    for (size_t i = 0; i < out.size(); i++)
        out[i] = static_cast<uint8_t>(raw[i]);
    return true;
}

std::string random_nonce() {
    uint8_t raw[kRawNonceLen];
    random_bytes(raw, sizeof raw);
    return base64_encode({reinterpret_cast<const char*>(raw), sizeof raw});
}

// RFC 5802: printable = %x21-2B / %x2D-7E (visible ASCII except ',').
bool is_valid_nonce(std::string_view s) noexcept {
    if (s.empty())
        return false;
    for (char c : s) {
        if (c < 0x21 || c > 0x7e || c == ',')
            return false;
    }
    return true;
}

[[nodiscard]] bool parse_int(std::string_view s, int& out) noexcept {
    if (s.empty())
        return false;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && end == s.data() + s.size();
}

// Splits a SCRAM message on ','; no SCRAM attribute value may contain a raw comma.
class Fields {
public:
    explicit Fields(std::string_view s) noexcept : rest_(s) {}
    // Next field; false when none is left ("a," has two fields, "a" and "").
    [[nodiscard]] bool next(std::string_view& field) noexcept {
        if (done_)
            return false;
        size_t comma = rest_.find(',');
        if (comma == std::string_view::npos) {
            field = rest_;
            rest_ = {};
            done_ = true;
        } else {
            field = rest_.substr(0, comma);
            rest_.remove_prefix(comma + 1);
        }
        return true;
    }
    bool at_end() const noexcept { return done_; }
    // Everything after the last field returned (only meaningful while !at_end()).
    std::string_view rest() const noexcept { return rest_; }

private:
    std::string_view rest_;
    bool done_ = false;
};

// A character in a log line as PgBouncer's sanitize_char shows it: 'c' or 0x1f.
std::string shown_char(char c) {
    char buf[8];
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x21 && u <= 0x7e)
        snprintf(buf, sizeof(buf), "'%c'", c);
    else
        snprintf(buf, sizeof(buf), "0x%02x", u);
    return buf;
}

// "<name>=<value>" with a letter as name.
bool is_attr(std::string_view field) noexcept {
    if (field.size() < 2 || field[1] != '=')
        return false;
    char c = field[0];
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

[[nodiscard]] bool attr_value(std::string_view field, char name, std::string_view& value) noexcept {
    if (!is_attr(field) || field[0] != name)
        return false;
    value = field.substr(2);
    return true;
}

[[nodiscard]] bool next_attr(Fields& f, char name, std::string_view& value) noexcept {
    std::string_view field;
    return f.next(field) && attr_value(field, name, value);
}

// saslname (RFC 5802 5.1): ',' and '=' are escaped as =2C and =3D.
std::string escape_saslname(std::string_view name) {
    std::string out;
    for (char c : name) {
        if (c == ',')
            out += "=2C";
        else if (c == '=')
            out += "=3D";
        else
            out.push_back(c);
    }
    return out;
}

// A secret key only this process knows, so mock salts are stable per user name but reveal
// nothing (PostgreSQL does the same with its mock_auth_nonce).
const ScramKey& mock_key() {
    static const ScramKey key = [] {
        ScramKey k{};
        random_bytes(k.data(), k.size());
        return k;
    }();
    return key;
}

}  // namespace

// ---- base64 ----

std::string base64_encode(std::string_view raw) {
    std::string out;
    out.reserve((raw.size() + 2) / 3 * 4);
    const uint8_t* p = bytes(raw);
    size_t i = 0;
    for (; i + 3 <= raw.size(); i += 3) {
        uint32_t v = uint32_t{p[i]} << 16 | uint32_t{p[i + 1]} << 8 | p[i + 2];
        out.push_back(kB64Chars[(v >> 18) & 63]);
        out.push_back(kB64Chars[(v >> 12) & 63]);
        out.push_back(kB64Chars[(v >> 6) & 63]);
        out.push_back(kB64Chars[v & 63]);
    }
    size_t left = raw.size() - i;
    if (left > 0) {
        uint32_t v = uint32_t{p[i]} << 16;
        if (left == 2)
            v |= uint32_t{p[i + 1]} << 8;
        out.push_back(kB64Chars[(v >> 18) & 63]);
        out.push_back(kB64Chars[(v >> 12) & 63]);
        out.push_back(left == 2 ? kB64Chars[(v >> 6) & 63] : '=');
        out.push_back('=');
    }
    return out;
}

// Strict: whole quads only, no whitespace, '=' only as final padding. Unused low bits of the
// last symbol are not checked (PostgreSQL does not check them either).
bool base64_decode(std::string_view text, std::string& raw) {
    raw.clear();
    if (text.size() % 4 != 0)
        return false;
    raw.reserve(text.size() / 4 * 3);
    for (size_t i = 0; i < text.size(); i += 4) {
        bool last = i + 4 == text.size();
        uint32_t v = 0;
        int pad = 0;
        for (size_t j = 0; j < 4; j++) {
            char c = text[i + j];
            uint32_t d;
            if (c >= 'A' && c <= 'Z')
                d = static_cast<uint32_t>(c - 'A');
            else if (c >= 'a' && c <= 'z')
                d = static_cast<uint32_t>(c - 'a' + 26);
            else if (c >= '0' && c <= '9')
                d = static_cast<uint32_t>(c - '0' + 52);
            else if (c == '+')
                d = 62;
            else if (c == '/')
                d = 63;
            else if (c == '=' && last && j >= 2) {
                d = 0;
                pad++;
            } else {
                raw.clear();
                return false;
            }
            if (pad > 0 && c != '=') {  // data after padding ("ab=c")
                raw.clear();
                return false;
            }
            v = v << 6 | d;
        }
        raw.push_back(static_cast<char>((v >> 16) & 0xff));
        if (pad < 2)
            raw.push_back(static_cast<char>((v >> 8) & 0xff));
        if (pad < 1)
            raw.push_back(static_cast<char>(v & 0xff));
    }
    return true;
}

void random_bytes(uint8_t* out, size_t n) {
    // Small requests (salts, nonces, cancel keys: one or two per login) come from a block
    // drawn from RAND_bytes 4 KiB at a time; each call into OpenSSL's DRBG costs several
    // thousand instructions. Bytes handed out are wiped from the block.
    static uint8_t pool[4096];
    static size_t avail = 0;
    if (n > sizeof(pool) / 4) {
        if (n > INT_MAX || RAND_bytes(out, static_cast<int>(n)) != 1)
            die("random number generator failed");
        return;
    }
    if (avail < n) {
        if (RAND_bytes(pool, sizeof(pool)) != 1)
            die("random number generator failed");
        avail = sizeof(pool);
    }
    uint8_t* src = pool + (avail - n);
    memcpy(out, src, n);
    OPENSSL_cleanse(src, n);
    avail -= n;
}

// ---- secrets ----

bool parse_scram_secret(std::string_view text, ScramSecret& out) {
    if (!text.starts_with(kSecretPrefix))
        return false;
    text.remove_prefix(kSecretPrefix.size());
    size_t dollar = text.find('$');
    if (dollar == std::string_view::npos)
        return false;
    std::string_view params = text.substr(0, dollar);
    std::string_view keys = text.substr(dollar + 1);
    size_t c1 = params.find(':');
    size_t c2 = keys.find(':');
    if (c1 == std::string_view::npos || c2 == std::string_view::npos)
        return false;

    ScramSecret s;
    if (!parse_int(params.substr(0, c1), s.iterations) || s.iterations < 1)
        return false;
    if (!base64_decode(params.substr(c1 + 1), s.salt))
        return false;
    if (!decode_key(keys.substr(0, c2), s.stored_key) ||
        !decode_key(keys.substr(c2 + 1), s.server_key))
        return false;
    out = std::move(s);
    return true;
}

bool is_scram_secret(std::string_view text) noexcept {
    ScramSecret s;
    return parse_scram_secret(text, s);
}

ScramSecret make_scram_secret(std::string_view password, std::string_view salt, int iterations) {
    ScramSecret s;
    ScramKey client_key{};
    if (!derive_keys(password, salt, iterations, client_key, s.server_key)) {
        log_error("scram: cannot derive secret (iterations=%d)", iterations);
        return ScramSecret{};
    }
    sha256(client_key.data(), client_key.size(), s.stored_key);
    OPENSSL_cleanse(client_key.data(), client_key.size());
    s.iterations = iterations;
    s.salt.assign(salt);
    return s;
}

ScramSecret make_scram_secret(std::string_view password, int iterations) {
    uint8_t salt[kScramSaltLen];
    random_bytes(salt, sizeof salt);
    return make_scram_secret(password, {reinterpret_cast<const char*>(salt), sizeof salt},
                             iterations);
}

std::string format_scram_secret(const ScramSecret& s) {
    std::string out(kSecretPrefix);
    out += std::to_string(s.iterations);
    out += ':';
    out += base64_encode(s.salt);
    out += '$';
    out += key_b64(s.stored_key);
    out += ':';
    out += key_b64(s.server_key);
    return out;
}

// ---- server side ----

void ScramServer::init_mock(std::string_view user) {
    ScramKey digest{};
    hmac_sha256(mock_key(), user, digest);
    ScramSecret s;
    s.iterations = kScramDefaultIterations;
    s.salt.assign(reinterpret_cast<const char*>(digest.data()), kScramSaltLen);
    init(s, true);
}

// client-first-message = gs2-header client-first-message-bare
//   gs2-header = gs2-cbind-flag "," [ authzid ] ","
//   client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
bool ScramServer::handle_client_first(std::string_view client_first, std::string& server_first) {
    // A fresh exchange: nothing from an earlier one may leak into this one.
    failure_.clear();
    client_nonce_.clear();
    server_nonce_.clear();
    client_first_bare_.clear();
    server_first_.clear();
    gs2_header_.clear();
    client_key_ = {};

    Fields f(client_first);
    std::string_view cbind, authzid, field, nonce;
    bool whole = f.next(cbind) && f.next(authzid) && !f.at_end();
    // "p=..." asks for channel binding, which we never advertise (no SCRAM-SHA-256-PLUS);
    // "y" means "client supports it but thinks the server does not", which is true.
    if (!cbind.empty() && cbind[0] == 'p') {
        failure_ = "client requires SCRAM channel binding, but it is not supported";
        return false;
    }
    if (cbind.empty() || (cbind[0] != 'n' && cbind[0] != 'y')) {
        failure_ = "malformed SCRAM message (unexpected channel-binding flag \"" +
                   shown_char(cbind.empty() ? '\0' : cbind[0]) + "\")";
        return false;
    }
    if (cbind.size() > 1) {
        failure_ = "malformed SCRAM message (comma expected, but found character \"" +
                   shown_char(cbind[1]) + "\")";
        return false;
    }
    if (!authzid.empty()) {  // PostgreSQL rejects authorization identities too
        failure_ = authzid[0] == 'a' ? "client uses authorization identity, but it is not supported"
                                     : "malformed SCRAM message (unexpected attribute \"" +
                                           shown_char(authzid[0]) + "\" in client-first-message)";
        return false;
    }
    if (!whole)
        return false;
    std::string_view bare = f.rest();
    if (!bare.empty() && bare[0] == 'm') {  // a mandatory extension we do not know
        failure_ = "client requires an unsupported SCRAM extension";
        return false;
    }

    // user name (ignored: PostgreSQL uses the startup packet's)
    if (!f.next(field) || !attr_value(field, 'n', field))
        return false;
    if (!next_attr(f, 'r', nonce))
        return false;
    if (!is_valid_nonce(nonce)) {
        failure_ = "non-printable characters in SCRAM nonce";
        return false;
    }
    while (f.next(field)) {  // optional extensions, ignored
        if (!is_attr(field))
            return false;
    }

    const bool fake_secret = secret_.iterations < 1;
    std::string salt = secret_.salt;
    if (fake_secret && salt.empty()) {
        uint8_t raw[kScramSaltLen];
        random_bytes(raw, sizeof raw);
        salt.assign(reinterpret_cast<const char*>(raw), sizeof raw);
    }
    int iterations = fake_secret ? kScramDefaultIterations : secret_.iterations;

    gs2_header_.assign(client_first.substr(0, client_first.size() - bare.size()));
    client_first_bare_.assign(bare);
    client_nonce_.assign(nonce);
    server_nonce_ = client_nonce_;
    server_nonce_ += test_nonce_.empty() ? random_nonce() : test_nonce_;

    server_first_ = "r=";
    server_first_ += server_nonce_;
    server_first_ += ",s=";
    server_first_ += base64_encode(salt);
    server_first_ += ",i=";
    server_first_ += std::to_string(iterations);
    server_first = server_first_;
    return true;
}

// client-final-message = channel-binding "," nonce ["," extensions] "," proof
ScramVerdict ScramServer::handle_client_final(std::string_view client_final,
                                              std::string& server_final) {
    failure_.clear();
    if (server_first_.empty())  // no client-first seen, or this exchange already finished
        return ScramVerdict::Malformed;
    std::string server_first;
    server_first.swap(server_first_);  // one attempt per exchange

    Fields f(client_final);
    std::string_view cbind_b64, nonce, field, proof_b64;
    std::string cbind;
    if (!next_attr(f, 'c', cbind_b64))
        return ScramVerdict::Malformed;
    if (!base64_decode(cbind_b64, cbind) || cbind != gs2_header_) {
        failure_ = "unexpected SCRAM channel-binding attribute in client-final-message";
        return ScramVerdict::Malformed;
    }
    if (!next_attr(f, 'r', nonce))
        return ScramVerdict::Malformed;
    if (nonce != server_nonce_)
        return ScramVerdict::NonceMismatch;
    for (;;) {
        if (!f.next(field) || !is_attr(field)) {
            failure_ = "could not read proof";
            return ScramVerdict::Malformed;
        }
        if (field[0] == 'p')
            break;
    }
    proof_b64 = field.substr(2);
    ScramKey proof{};
    if (!decode_key(proof_b64, proof)) {
        failure_ = "malformed SCRAM message (malformed proof in client-final-message)";
        return ScramVerdict::Malformed;
    }
    if (!f.at_end()) {
        failure_ = "malformed SCRAM message (garbage at the end of client-final-message)";
        return ScramVerdict::Malformed;
    }

    // client-final-message-without-proof ends at the ',' before "p=".
    size_t proof_at = static_cast<size_t>(field.data() - client_final.data());
    std::string auth_message = client_first_bare_;
    auth_message += ',';
    auth_message += server_first;
    auth_message += ',';
    auth_message.append(client_final.substr(0, proof_at - 1));

    if (mock_ || secret_.iterations < 1)
        return ScramVerdict::WrongProof;

    // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); it is genuine when its hash is
    // the StoredKey.
    ScramKey signature{}, client_key{}, stored{};
    hmac_sha256(secret_.stored_key, auth_message, signature);
    for (size_t i = 0; i < proof.size(); i++)
        client_key[i] = proof[i] ^ signature[i];
    sha256(client_key.data(), client_key.size(), stored);
    if (CRYPTO_memcmp(stored.data(), secret_.stored_key.data(), stored.size()) != 0) {
        OPENSSL_cleanse(client_key.data(), client_key.size());
        return ScramVerdict::WrongProof;
    }
    client_key_ = client_key;
    OPENSSL_cleanse(client_key.data(), client_key.size());

    ScramKey server_signature{};
    hmac_sha256(secret_.server_key, auth_message, server_signature);
    server_final = "v=";
    server_final += key_b64(server_signature);
    return ScramVerdict::Ok;
}

// ---- client side ----

void ScramClient::init_password(std::string_view password) {
    password_.assign(password);
    have_keys_ = false;
    client_key_ = {};
    server_key_ = {};
}

void ScramClient::init_keys(const ScramKey& client_key, const ScramKey& server_key) {
    password_.clear();
    have_keys_ = true;
    client_key_ = client_key;
    server_key_ = server_key;
}

std::string ScramClient::client_first() {
    client_nonce_ = test_nonce_.empty() ? random_nonce() : test_nonce_;
    auth_message_.clear();
    client_first_bare_ = "n=";
    client_first_bare_ += escape_saslname(test_user_);
    client_first_bare_ += ",r=";
    client_first_bare_ += client_nonce_;
    return "n,," + client_first_bare_;
}

// server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count
bool ScramClient::handle_server_first(std::string_view server_first, std::string& client_final) {
    if (client_nonce_.empty() || !auth_message_.empty())
        return false;  // client_first() not called, or this exchange is past this step
    Fields f(server_first);
    std::string_view nonce, salt_b64, iter_text;
    if (!next_attr(f, 'r', nonce) || !is_valid_nonce(nonce) ||
        nonce.size() <= client_nonce_.size() || !nonce.starts_with(client_nonce_))
        return false;
    std::string salt;
    if (!next_attr(f, 's', salt_b64) || !base64_decode(salt_b64, salt))
        return false;
    int iterations = 0;
    if (!next_attr(f, 'i', iter_text) || !parse_int(iter_text, iterations) || iterations < 1 ||
        iterations > kScramMaxIterations)
        return false;
    if (!f.at_end())  // PostgreSQL sends no extensions here; libpq rejects them too
        return false;

    ScramKey client_key{}, stored_key{};
    if (have_keys_) {
        client_key = client_key_;
    } else if (!derive_keys(password_, salt, iterations, client_key, server_key_)) {
        log_error("scram: cannot derive keys from password (iterations=%d)", iterations);
        return false;
    }
    sha256(client_key.data(), client_key.size(), stored_key);

    client_final = "c=biws,r=";  // biws = base64("n,,")
    client_final += nonce;
    auth_message_ = client_first_bare_;
    auth_message_ += ',';
    auth_message_ += server_first;
    auth_message_ += ',';
    auth_message_ += client_final;

    ScramKey signature{}, proof{};
    hmac_sha256(stored_key, auth_message_, signature);
    for (size_t i = 0; i < proof.size(); i++)
        proof[i] = client_key[i] ^ signature[i];
    OPENSSL_cleanse(client_key.data(), client_key.size());
    client_final += ",p=";
    client_final += key_b64(proof);
    return true;
}

// server-final-message = (server-error / verifier) ["," extensions]
bool ScramClient::verify_server_final(std::string_view server_final) const {
    if (auth_message_.empty())
        return false;
    Fields f(server_final);
    std::string_view v;
    ScramKey got{}, want{};
    // "e=<error>" fails here: it is not "v=".
    if (!next_attr(f, 'v', v) || !f.at_end() || !decode_key(v, got))
        return false;
    hmac_sha256(server_key_, auth_message_, want);
    return CRYPTO_memcmp(got.data(), want.data(), want.size()) == 0;
}

}  // namespace sluice
