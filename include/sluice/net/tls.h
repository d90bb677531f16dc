// TLS for both sides of the pooler: the OpenSSL contexts built from the client_tls_* settings
// (sluice as the TLS server its clients talk to) and the server_tls_* settings (sluice as a TLS
// client of PostgreSQL), the per-connection SSL objects, and the text log lines show.
// Moving bytes through an SSL (non-blocking handshake, SSL_read/SSL_write on edge-triggered
// events) is SBuf's job: see SBuf::start_tls() in sbuf.h.
//
// The contexts are process-wide and replaced only as a whole: an SSL keeps a reference to the
// context it was made from, so connections opened before a RELOAD keep working unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <openssl/types.h>

#include "sluice/config/config.h"

namespace sluice {

// First byte of a TLS handshake record: a ClientHello sent without SSLRequest (direct TLS,
// PostgreSQL 17). A startup packet can never start with it (its length would be > 300 MB).
inline constexpr uint8_t kTlsHandshakeByte = 0x16;

// Builds the contexts from the settings at start-up. False: `err` names the bad setting or
// file ("client_tls_key_file: ...: No such file or directory"); the caller exits.
[[nodiscard]] bool tls_init(const Settings& s, std::string& err);

enum class TlsReload : uint8_t {
    Unchanged,  // no TLS setting and no cert/key/CA file content changed: nothing was done
    Rebuilt,    // new connections use contexts built from the new settings
    Failed,     // the new settings do not work (`err` says why): the previous contexts and
                // sslmodes stay in force
};
// RELOAD (and admin SET of a *_tls_* key): rebuilds the contexts when a TLS setting or the
// content of a cert/key/CA file changed. `server_changed` is set when the server-side
// configuration changed, so that the caller can recycle server connections.
[[nodiscard]] TlsReload tls_reload(const Settings& s, std::string& err, bool& server_changed);
// Frees the contexts (at exit).
void tls_free_all() noexcept;

// The sslmodes in force. They differ from the settings while a failed reload is pending
// (PgBouncer's client_accept_sslmode / server_connect_sslmode).
SslMode tls_client_mode() noexcept;
SslMode tls_server_mode() noexcept;

// A new SSL in accept state for a client connection, or nullptr (client TLS disabled or
// OpenSSL failed; logged). The caller owns it until SBuf::start_tls() takes it.
SSL* tls_new_accept() noexcept;
// A new SSL in connect state for a server connection, or nullptr. `host` is the [databases]
// host (name or address): sent as SNI when it is a name and, with verify-full, checked
// against the certificate's subjectAltName/CN.
SSL* tls_new_connect(const std::string& host) noexcept;

// Writes "TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519" (PgBouncer's tls= format in login lines
// and SHOW CLIENTS) into buf; returns the length (buf is always NUL-terminated, size > 0).
size_t tls_describe(const SSL* ssl, char* buf, size_t size) noexcept;
// True when ALPN "postgresql" was negotiated (direct TLS insists on it).
bool tls_alpn_postgresql(const SSL* ssl) noexcept;
// The CN of the peer's verified certificate, "" when there is none (auth_type=cert, hba cert).
std::string tls_peer_common_name(const SSL* ssl);

// Records why the last TLS operation on `ssl` failed (`ssl_error` from SSL_get_error) and
// empties OpenSSL's error queue. Called by SBuf; read with tls_last_error().
void tls_note_error(const SSL* ssl, int ssl_error) noexcept;
// Text of the last recorded failure ("certificate verify failed: self-signed certificate").
// Valid until the next failure.
const char* tls_last_error() noexcept;

}  // namespace sluice
