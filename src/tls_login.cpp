// TLS during login, both sides. Clients: SSLRequest answered 'S' (then the handshake) or a
// direct-TLS ClientHello (PostgreSQL 17, ALPN "postgresql"). Servers: SSLRequest before the
// startup packet, then the handshake. Contexts and SSL objects come from net/tls.cpp; the
// handshake itself runs inside the sbuf (SBuf::start_tls), which reports TlsReady/TlsFailed.
#include <openssl/ssl.h>

#include "sluice/net/tls.h"
#include "sluice/pool/pool.h"

namespace sluice {

bool Client::tls_offered() const noexcept {
    return tls_client_mode() != SslMode::Disable && !addr.is_unix();  // never on unix sockets
}

bool Client::tls_required() const noexcept {
    return tls_client_mode() >= SslMode::Require && !sb.is_tls() && !addr.is_unix();
}

PacketAction Client::on_ssl_request(const PacketHeader& hdr) {
    if (sb.is_tls()) {
        close("SSL req inside SSL");
        return PacketAction::Closed;
    }
    // Bytes behind the SSLRequest were sent before our answer, in clear: they may come from a
    // man in the middle (buffer stuffing, CVE-2021-23222). PgBouncer refuses them in clear.
    if (sb.input_after(hdr.len) > 0) {
        fatal("08P01", "received unencrypted data after SSL request");
        return PacketAction::Closed;
    }
    SSL* ssl = tls_new_accept();
    if (!ssl) {
        close("failed to accept SSL");
        return PacketAction::Closed;
    }
    sb.queue("S");
    if (!sb.flush_out()) {  // the socket error was reported: we are closed
        SSL_free(ssl);
        return PacketAction::Closed;
    }
    if (sb.has_output()) {  // one byte on a fresh socket: cannot happen, but never mix
        SSL_free(ssl);
        close("failed to ack SSL");
        return PacketAction::Closed;
    }
    if (!sb.start_tls(ssl, false)) {
        close("failed to accept SSL");
        return PacketAction::Closed;
    }
    return PacketAction::Skip;
}

void Client::on_tls_event(SBufEvent ev) {
    switch (ev) {
    case SBufEvent::TlsHello: {
        // Direct TLS: the first bytes are a ClientHello. Without client TLS we do nothing and
        // the sbuf reports a bad startup packet.
        if (!tls_offered() || sb.is_tls())
            return;
        SSL* ssl = tls_new_accept();
        if (!ssl || !sb.start_tls(ssl, true)) {
            close("failed to accept SSL");
            return;
        }
        tls_direct = true;
        return;
    }
    case SBufEvent::TlsReady:
        // PostgreSQL 17 insists on ALPN for direct TLS (a wrong ALPN already failed the
        // handshake in tls.cpp's selection callback).
        if (tls_direct && !tls_alpn_postgresql(sb.tls())) {
            fatal("08P01", "received direct SSL connection request without ALPN protocol "
                           "negotiation extension");
            return;
        }
        if (log_enabled(LogLevel::Debug)) {
            char info[128];
            sb.tls_describe(info, sizeof(info));
            slog_debug(this, "TLS established: %s", info);
        }
        return;
    case SBufEvent::TlsFailed:
        // PgBouncer's line has no connection prefix; ours for the close names the client.
        log_warning("TLS handshake error: %s", tls_last_error());
        close("TLS handshake failed");
        return;
    default:
        return;
    }
}

bool Server::send_ssl_request() {
    if (addr.is_unix() || tls_server_mode() == SslMode::Disable)
        return false;
    std::string& out = sb.out_for_append();
    PacketWriter w(out);
    w.begin_untyped();
    w.put_u32(kSslRequestCode);
    w.finish();
    sb.expect_byte();
    return true;
}

PacketAction Server::on_ssl_answer(uint8_t answer) {
    if (sb.input_after(1) > 0) {
        login_failed("received unencrypted data after SSL response", {});
        return PacketAction::Closed;
    }
    if (answer == 'S') {
        const std::string& hosts = pool->db->entry.host;
        SSL* ssl = tls_new_connect(hosts.substr(0, hosts.find(',')));  // the host connected to
        if (!ssl || !sb.start_tls(ssl, false)) {
            login_failed("sslreq processing failed", {});  // PgBouncer's words
            return PacketAction::Closed;
        }
        return PacketAction::Skip;
    }
    if (answer == 'N' && tls_server_mode() < SslMode::Require) {
        send_startup();  // prefer/allow: go on in clear
        if (!sb.flush_out())
            return PacketAction::Closed;
        return PacketAction::Skip;
    }
    login_failed(answer == 'N' ? "server refused SSL" : "bad sslreq answer", {});
    return PacketAction::Closed;
}

void Server::on_tls_event(SBufEvent ev) {
    switch (ev) {
    case SBufEvent::TlsReady: {
        char info[128];
        sb.tls_describe(info, sizeof(info));
        if (settings().log_connections)
            slog_info(this, "SSL established: %s", info);
        else
            slog_debug(this, "SSL established: %s", info);
        send_startup();
        return;  // the sbuf flushes out_ after this event
    }
    case SBufEvent::TlsFailed: {
        std::string m = std::string("TLS handshake failed: ") + tls_last_error();
        log_warning("TLS handshake error: %s", tls_last_error());  // as PgBouncer: no prefix
        login_failed(m, {});
        return;
    }
    default:
        return;
    }
}

}  // namespace sluice
