// Client login, the parts past the startup packet that need more than auth_file: the
// per-connection method (auth_type, or the first matching auth_hba_file line), cert and peer
// logins, and auth_query for users without an auth_file entry.
//
// auth_query (PgBouncer's start_auth_query / handle_auth_query_response): the client joins the
// auth pool (auth_dbname's, else its own database's; user auth_user) as an ordinary waiting
// client, its socket paused. When the pool assigns it a server, on_server_assigned() sends
// Parse/Bind/Describe/Execute/Sync with the user name as $1, tracked as Forward requests:
// Server::on_work_packet hands their replies to on_auth_query_reply() instead of the client's
// socket. At ReadyForQuery the server goes back to the pool with nothing owed, the client
// leaves the pool (Login again) and continues with the md5/SCRAM challenge against the
// secret the query returned.
#include "sluice/auth/md5.h"
#include "sluice/auth/scram.h"
#include "sluice/net/tls.h"
#include "sluice/pool/pool.h"

namespace sluice {

ConnInfo Client::conn_info() const {
    ConnInfo ci;
    ci.unix_socket = addr.is_unix();
    if (!ci.unix_socket)
        conn_info_set_addr(ci, addr.to_peer().ss);
    ci.tls = sb.is_tls();
    if (ci.tls)
        ci.cert_cn = tls_peer_common_name(sb.tls());
    ci.have_peer_uid = have_peer_uid;
    ci.peer_uid = peer_uid;
    return ci;
}

// A user without an auth_file entry is looked up with auth_query when an auth_user is set
// (the database's, else the global one). True: the client now waits for the answer, or was
// closed. False: no auth_query applies; go on with mock authentication.
bool Client::start_auth_query() {
    const Settings& st = settings();
    Database* d = find_database(db_name(), this);
    if (!d)
        return false;  // mock authentication, then "no such database"
    const DatabaseEntry& e = d->entry;
    const std::string& auth_user = !e.auth_user.empty() ? e.auth_user : st.auth_user;
    if (auth_user.empty())
        return false;
    const std::string& auth_dbname = !e.auth_dbname.empty() ? e.auth_dbname : st.auth_dbname;
    Database* adb = d;
    if (!auth_dbname.empty()) {
        adb = find_database(auth_dbname, this);
        if (!adb) {
            slog_error(this, "authentication database \"%s\" is not configured.",
                       auth_dbname.c_str());
            fatal("08P01", "bouncer config error");
            return true;
        }
    }
    if (adb->disabled) {
        fatal("08P01", "authentication database \"%s\" is disabled", adb->name.c_str());
        return true;
    }
    if (adb->admin) {
        slog_error(this, "cannot use the reserved \"%s\" database as an auth_dbname",
                   adb->name.c_str());
        fatal("08P01", "bouncer config error");
        return true;
    }
    auth = AuthStep::AuthQuery;
    login->auth_query = std::make_unique<AuthQueryReply>();
    pool = get_pool(adb, get_user(auth_user), auth_user);
    sb.pause();  // the startup packet is consumed; read nothing more until the answer is in
    pool_request_server(*this);  // assigns a server now (on_server_assigned) or queues us
    return true;
}

void Client::send_auth_query() {
    Server& s = *server;
    Database* d = find_database(db_name(), this);
    const std::string& q =
        d && !d->entry.auth_query.empty() ? d->entry.auth_query : settings().auth_query;
    slog_debug(this, "doing auth_query for user %s", user_name().c_str());
    write_auth_query(s.sb.out_for_append(), q, user_name());
    // Forward: Server::on_work_packet delivers these replies to on_auth_query_reply().
    for (uint8_t t : kAuthQueryMessages)
        s.tracker.on_request(t);
    s.request_time = mono_now();
    static_cast<void>(s.sb.flush_out());
}

PacketAction Client::on_auth_query_reply(Server& s, uint8_t type, std::span<const uint8_t> body) {
    AuthQueryReply& r = *login->auth_query;
    r.on_reply(type, body);
    if (r.state == AuthQueryReply::State::Running)
        return PacketAction::Skip;
    if (r.state == AuthQueryReply::State::Failed) {
        // As PgBouncer: the server goes, the client in login learns only this.
        std::string why = r.error;
        s.close(why.c_str());
        fatal("08P01", "bouncer config error");
        return PacketAction::Closed;
    }
    // The Sync is answered: nothing is owed, the server can go back clean.
    pool_release_server(s);
    set_state(*this, ClientState::Login);
    pool = nullptr;
    auth = AuthStep::None;
    std::unique_ptr<AuthQueryReply> done = std::move(login->auth_query);
    if (sb.paused())
        sb.resume();
    PacketAction ret = s.state == ServerState::Closing ? PacketAction::Closed : PacketAction::Skip;
    if (!done->found) {
        if (settings().log_connections)
            slog_info(this, "login failed: db=%s user=%s", db_name().c_str(), user_name().c_str());
        fatal("08P01", "no such user");
        return ret;
    }
    Database* d = find_database(db_name(), this);
    if (!d) {  // dropped by a RELOAD meanwhile
        fatal("08P01", "no such database: %s", db_name().c_str());
        return ret;
    }
    User& slot = user_in(d->auth_query_users, user_name());
    if (slot.secret != done->secret || !slot.have_secret)
        slot.have_scram_keys = false;  // keys from an older secret would not log in
    slot.secret = std::move(done->secret);
    slot.have_secret = !done->null_password;  // NULL password: no password works
    slog_debug(this, "auth_query found user %s", done->user.c_str());
    login->cred = &slot;
    log_login_attempt();
    continue_auth();
    return ret;
}

// The credentials are known (login->cred; nullptr = mock): pick the method and run it.
void Client::continue_auth() {
    const Settings& st = settings();
    const HbaRule* rule = nullptr;
    AuthMethod m;
    switch (st.auth_type) {
    case AuthType::Hba:
        rule = rt().hba.match(conn_info(), db_name(), user_name());
        if (!rule) {
            fatal("08P01", "no authentication method is found");
            return;
        }
        slog_noise(this, "HBA Line %zu is matched", rule->line);
        m = rule->method;
        break;
    case AuthType::Trust:
        m = AuthMethod::Trust;
        break;
    case AuthType::Plain:
        m = AuthMethod::Password;
        break;
    case AuthType::Md5:
        m = AuthMethod::Md5;
        break;
    case AuthType::ScramSha256:
        m = AuthMethod::ScramSha256;
        break;
    case AuthType::Cert:
        m = AuthMethod::Cert;
        break;
    case AuthType::Pam:
        m = AuthMethod::Pam;
        break;
    default:
        fatal("08P01", "authentication method not supported: %s", auth_type_name(st.auth_type));
        return;
    }
    if (m == AuthMethod::Md5 && login->cred && is_scram_secret(login->cred->secret))
        m = AuthMethod::ScramSha256;  // md5 cannot check a SCRAM secret
    login->auth_method = m;
    std::string& out = sb.out_for_append();
    switch (m) {
    case AuthMethod::Trust:
        if (!login->cred) {
            fatal("08P01", "\"trust\" authentication failed");
            return;
        }
        static_cast<void>(finish_login());
        return;
    case AuthMethod::Reject:
        fatal("08P01", "login rejected");
        return;
    case AuthMethod::Ldap:
        slog_warning(this, "ldap authentication is not supported (hba line %zu)",
                     rule ? rule->line : size_t{0});
        fatal("08P01", "login rejected");
        return;
    case AuthMethod::Cert:
        login_via_cert(rule);
        return;
    case AuthMethod::Peer:
        login_as_peer(rule);
        return;
    case AuthMethod::Password:
    case AuthMethod::Pam:
        write_auth(out, kAuthCleartext);
        auth = AuthStep::WaitPassword;
        break;
    case AuthMethod::Md5:
        random_bytes(login->md5_salt.data(), login->md5_salt.size());
        write_auth(out, kAuthMd5, login->md5_salt);
        auth = AuthStep::WaitPassword;
        break;
    case AuthMethod::ScramSha256: {
        static const char mech[] = "SCRAM-SHA-256\0";
        write_auth(out, kAuthSasl, std::span{reinterpret_cast<const uint8_t*>(mech), sizeof(mech)});
        auth = AuthStep::SaslInitial;
        break;
    }
    }
    static_cast<void>(sb.flush_out());
}

// auth_type=cert or an hba cert line: the client certificate's CN is the user name, or maps
// to it through the rule's ident map.
void Client::login_via_cert(const HbaRule* rule) {
    ConnInfo ci = conn_info();
    const char* why = nullptr;
    if (!ci.tls)
        why = "TLS connection required";
    else if (ci.cert_cn.empty())
        why = "TLS client certificate required";
    else if (!login->cred)
        why = "no such user";
    else if (rule && !rule->map.empty() && !rt().ident.allows(rule->map, ci.cert_cn, user_name()))
        why = "ident map does not have a match";
    else if ((!rule || rule->map.empty()) && ci.cert_cn != user_name())
        why = "TLS certificate name mismatch";
    if (why) {
        slog_error(this, "%s", why);
        fatal("08P01", "certificate authentication failed");
        return;
    }
    static_cast<void>(finish_login());
}

// hba peer line: over the unix socket, the peer process's OS user name is the user name, or
// maps to it through the rule's ident map.
void Client::login_as_peer(const HbaRule* rule) {
    ConnInfo ci = conn_info();
    std::string os_user;
    bool ok =
        ci.unix_socket && login->cred && ci.have_peer_uid && os_user_name(ci.peer_uid, os_user);
    std::string_view map = rule ? std::string_view(rule->map) : std::string_view();
    if (ok && !rt().ident.allows(map, os_user, user_name())) {
        if (!map.empty())
            slog_error(this, "ident map %s cannot be matched", rule->map.c_str());
        ok = false;
    }
    if (!ok) {
        slog_debug(this, "peer authentication failed: os user \"%s\"", os_user.c_str());
        fatal("08P01", "unix socket login rejected");
        return;
    }
    static_cast<void>(finish_login());
}

// auth_type=pam (PgBouncer's): any user name may try; PAM judges the cleartext password and
// the servers log in with the password it accepted. auth_file is not consulted.
void Client::start_pam_auth() {
    Database* d = admin ? nullptr : find_database(db_name(), this);
    if (d && !d->entry.auth_user.empty()) {
        slog_error(this, "PAM can't be used together with database authentication");
        fatal("08P01", "bouncer config error");
        return;
    }
    login->cred = &user_in(rt().pam_users, user_name());
    log_login_attempt();
    continue_auth();
}

PacketAction Client::check_with_pam(std::string_view password) {
    std::string rhost = addr.is_unix() ? "unix" : addr.host();
    auto done = [](void* arg, bool ok, std::vector<std::string>& warnings) {
        auto* c = static_cast<Client*>(arg);
        for (const std::string& w : warnings)
            log_warning("%s", w.c_str());  // PgBouncer logs these without the client
        c->on_pam_answer(ok);
    };
    if (!pam_check(login->pam, user_name(), std::string(password), rhost, done, this)) {
        fatal("08P01", "bouncer resources exhaustion");
        return PacketAction::Closed;
    }
    auth = AuthStep::Pam;
    login->pam_password.assign(password);
    sb.pause();  // nothing more is read until PAM answers
    return PacketAction::Skip;
}

void Client::on_pam_answer(bool ok) {
    if (state == ClientState::Closing)
        return;  // closed earlier in this loop turn, not yet freed
    if (!ok) {
        auth_failed("PAM authentication failed");  // PgBouncer 1.18's words
        return;
    }
    User& cred = *login->cred;
    if (!cred.have_secret || cred.secret != login->pam_password) {
        cred.secret = std::move(login->pam_password);
        cred.have_secret = true;
        cred.have_scram_keys = false;  // keys of an older password would not log in
    }
    if (sb.paused())
        sb.resume();
    static_cast<void>(finish_login());
}

}  // namespace sluice
