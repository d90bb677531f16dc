// The pooler's objects: databases, users, pools and the client/server connections they hold.
// A connection's state is the list that holds it; set_state() is the only way to change it.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "sluice/auth/auth_query.h"
#include "sluice/auth/hba.h"
#include "sluice/auth/pam.h"
#include "sluice/auth/scram.h"
#include "sluice/config/config.h"
#include "sluice/net/dns.h"
#include "sluice/net/sbuf.h"
#include "sluice/net/sockets.h"
#include "sluice/proto/tracker.h"
#include "sluice/ps_cache.h"
#include "sluice/stats.h"
#include "sluice/util/list.h"
#include "sluice/util/log.h"
#include "sluice/util/time.h"
#include "sluice/varcache.h"

namespace sluice {

struct Pool;
struct User;
class Client;
class Server;

// User objects by name: auth_file users, a database's auth_query users, PAM users.
using UserMap = std::unordered_map<std::string, std::unique_ptr<User>>;

struct Database {
    std::string name;
    DatabaseEntry entry;
    bool from_fallback = false;  // auto-created from "*"
    bool admin = false;          // the virtual "pgbouncer" console database
    bool paused = false;
    bool disabled = false;
    bool dirty = false;  // a reload found no entry for it: being dropped (or dropped)
    // Credentials auth_query returned for users of this database, by user name (PgBouncer's
    // per-database dynamic users): refreshed at each such login, used by the pools' servers.
    UserMap auth_query_users;
    int client_count = 0;
    int server_count = 0;
    usec_t inactive_since = 0;  // auto-databases: no client or server since then (0 = in use)
    // Host lists: the host the next server connection goes to (load_balance_hosts:
    // round-robin moves on at every connection, disable only when a login fails).
    size_t next_host = 0;
    const std::string& target_dbname() const { return entry.dbname.empty() ? name : entry.dbname; }
    // An auto-database the janitor found without clients or servers (PgBouncer's
    // autodatabase_idle_list): SHOW DATABASES and the SHOW LISTS count leave it out until
    // find_database() or a new connection puts it back in use.
    bool idle() const { return from_fallback && inactive_since != 0; }
    // Found by a login or a console command: no longer idle.
    void put_in_use() {
        if (from_fallback)
            inactive_since = 0;
    }
};

struct User {
    std::string name;
    std::string secret;       // from auth_file ("" = unknown)
    bool have_secret = false;
    const UserEntry* entry = nullptr;  // [users] overrides, or nullptr
    int client_count = 0;
    int server_count = 0;
    // SCRAM keys recovered from a client's proof, for logging in to servers (pass-through).
    bool have_scram_keys = false;
    ScramKey scram_client_key{};
    ScramKey scram_server_key{};
    // SCRAM secret derived from a plain auth_file password (PBKDF2 once, not per login).
    std::string scram_cache_src;
    ScramSecret scram_cache;
};

enum class ClientState : uint8_t {
    Login,    // startup/auth in progress        -> g_login_clients
    Waiting,  // authenticated, queued for server -> pool.waiting
    Active,   // linked to a server, or idle     -> pool.active
    Closing,  // freed after this loop turn      -> g_free_clients
};

enum class ServerState : uint8_t {
    Login,    // connecting / logging in          -> pool.login
    Idle,     // ready for a client               -> pool.idle
    Active,   // linked to a client               -> pool.active
    Used,     // running reset/check, no client   -> pool.used
    Closing,  // freed after this loop turn       -> g_free_servers
};


// Authentication progress of a client.
enum class AuthStep : uint8_t {
    None,
    WaitPassword,   // cleartext or md5 requested
    SaslInitial,    // AuthenticationSASL sent
    SaslContinue,   // server-first sent
    AuthQuery,      // waiting for auth_query's answer (the client sits in the auth pool)
    Pam,            // the password is with PAM (socket paused until the answer)
    Done,
};

// What a client needs only while it logs in. Allocated with the client, freed when the login
// succeeds: an idle client carries none of it.
struct ClientLogin {
    std::string user_name;  // from the startup packet
    std::string db_name;    // from the startup packet ("" = the user name)
    // Whose secret the login checks: the client's User, or the auth_query result (owned by
    // the database), or with auth_type=pam the user's PAM credentials (rt().pam_users, the
    // password PAM accepted last). nullptr = unknown user: mock authentication.
    User* cred = nullptr;
    AuthMethod auth_method = AuthMethod::Md5;  // chosen by continue_auth (auth_type or hba)
    std::array<uint8_t, 4> md5_salt{};
    std::unique_ptr<ScramServer> scram;          // only while a SCRAM exchange runs
    std::unique_ptr<AuthQueryReply> auth_query;  // answer being read (AuthStep::AuthQuery)
    PamTicket pam;  // the PAM check of the password (AuthStep::Pam); dropped with the login
    std::string pam_password;  // the password being checked: the servers' once PAM accepts it
    // A NoticeResponse PostgreSQL would send at this login (an application_name cut to 63
    // bytes): the welcome carries it after AuthenticationOk, and the login state is kept
    // until then.
    std::string welcome_notice;
    // What the log prefix names, as PgBouncer's does: "(nodb)/(nouser)" until the client has
    // its pool (the "login attempt" line), the user alone once it is known to be the
    // console's own (same-UID "pgbouncer" over the unix socket).
    enum class Named : uint8_t {
        None,
        User,
        Both,
    } named = Named::None;
};

class Client final : public SBufOwner, public LogSubject {
public:
    // Members are ordered by size so that an idle client, of which there may be tens of
    // thousands, wastes no padding (doc/bench.md figure 4).
    ListNode node;
    SBuf sb;
    Pool* pool = nullptr;
    Server* server = nullptr;  // linked server, or nullptr
    // Login state; nullptr once logged in (then user and db are set).
    std::unique_ptr<ClientLogin> login = std::make_unique<ClientLogin>();
    User* user = nullptr;  // the auth_file user (nullptr: unknown; always set once logged in)
    Database* db = nullptr;
    VarCache vars;  // the client's own values of tracked parameters
    // What RESET gives this client on a direct connection: its startup values, else the
    // pool's (unset after an online restart: then RESET follows the server).
    VarCache reset_vars;
    ClientPs ps;    // the client's prepared statement names, Parses and Closes in flight
    Client* cancel_next = nullptr;  // chain link of the cancel-key index (rt().cancel_map)
    usec_t connect_time = 0;
    usec_t request_time = 0;  // last query start or state change
    usec_t wait_start = 0;
    usec_t xact_start = 0;
    // PgBouncer's query_start, shown as SHOW CLIENTS wait: the first message of a request
    // (queueing for a server included), cleared by the ReadyForQuery that leaves nothing
    // owed or when the server is released. A console session sets it at its first query
    // and never clears it, as PgBouncer does.
    usec_t query_start = 0;
    uint64_t id = 0;
    uint32_t cancel_pid = 0;  // 0: not in the cancel-key index
    uint32_t cancel_key = 0;
    int peer_pid = 0;  // unix socket peer pid, for log lines
    uint32_t peer_uid = 0;
    ClientAddr addr;  // the peer (family only for unix sockets)
    ClientState state = ClientState::Login;
    AuthStep auth = AuthStep::None;
    bool waiting_confirm : 1 = false;   // paused until an earlier Parse of the name is answered
    bool wait_notified : 1 = false;     // query_wait_notify NOTICE sent for this wait
    bool wait_for_welcome : 1 = false;  // queued only to learn the pool's parameters
    bool admin : 1 = false;             // console session
    bool admin_full : 1 = false;        // admin_users (else stats_users)
    bool counted : 1 = false;           // included in rt().client_count
    bool peer_is_self : 1 = false;      // unix socket peer has our uid (SO_PEERCRED)
    bool tls_direct : 1 = false;     // TLS began with a ClientHello, no SSLRequest (PostgreSQL 17)
    bool have_peer_uid : 1 = false;  // unix socket and SO_PEERCRED answered (hba peer)

    // The names the client gave: from `login` while logging in, then those of user and db
    // (equal by construction), so a logged-in client keeps no copy. "" before the startup.
    const std::string& user_name() const noexcept;
    const std::string& db_name() const noexcept;
    // The local address of the client socket: getsockname() when asked (SHOW), not kept per
    // client; only the family for unix sockets or when the socket is gone.
    PeerAddr local_addr() const;
    // SCRAM exchange state, created when one starts. Requires: logging in.
    ScramServer& scram_state() {
        if (!login->scram)
            login->scram = std::make_unique<ScramServer>();
        return *login->scram;
    }
    // The oldest unanswered client Parse got its answer: drop it from the list, resume.
    std::string confirm_oldest_parse();

    // SBufOwner
    PacketAction on_packet(SBuf& sb, const PacketHeader& hdr,
                           std::span<const uint8_t> data) override;
    uint32_t take_plain_run(SBuf& sb, std::span<const uint8_t> data) override;
    void on_sbuf_event(SBuf& sb, SBufEvent ev) override;
    void on_sbuf_drained(SBuf& sb) override;
    // LogSubject
    size_t log_prefix(char* buf, size_t size) const noexcept override;

    // Sends an ErrorResponse (FATAL, 08P01 unless given) and closes the client.
    [[gnu::format(printf, 3, 4)]] void fatal(const char* sqlstate, const char* fmt, ...);
    // The same with an ErrorResponse made elsewhere (a server's login failure): sends it,
    // closes, logs "closing because: <reason>" and "pooler error: <reason>" as fatal() does.
    void fail_with(std::string_view error_packet, const char* reason);
    // Closes without sending anything; logs "closing because: <reason>" (nothing when
    // reason is nullptr).
    void close(const char* reason);
    // The pool gave this client a server (or could not): continue.
    void on_server_assigned();
    // The pool's parameters are known now: send AuthenticationOk + parameters + key + ready.
    void send_welcome();
    // What authentication knows of this connection (transport, address, TLS, peer uid).
    ConnInfo conn_info() const;
    // One complete reply of the auth_query running for this client on `s` (client_auth.cpp;
    // called by Server::on_work_packet while auth == AuthStep::AuthQuery). May release or
    // close `s` and close the client; Closed when `s` was closed.
    PacketAction on_auth_query_reply(Server& s, uint8_t type, std::span<const uint8_t> body);

private:
    // close() and fail_with(): logs "closing because: <reason>" (none without a reason),
    // closes a linked server that is not idle, then with pooler_error logs "pooler error:
    // <reason>", sends error_packet (when given and the stream is not cut), and only then
    // closes the socket.
    void close_logged(const char* reason, bool pooler_error, std::string_view error_packet);
    PacketAction on_login_packet(const PacketHeader& hdr, std::span<const uint8_t> data);
    PacketAction on_startup(std::span<const uint8_t> pkt);
    std::string address_details() const;  // "host:port" as application_name_add_host adds
    // Applies "-c name=value" items of `options` to v; values not viewing into the packet are
    // kept in `keep`. False: refused (the client was closed).
    bool apply_startup_options(const std::string& opts, VarValues& v,
                               std::vector<std::string>& keep);
    PacketAction on_password(std::span<const uint8_t> body);
    PacketAction on_cancel(std::span<const uint8_t> pkt);
    PacketAction on_work_packet(const PacketHeader& hdr, std::span<const uint8_t> data);
    PacketAction on_admin_packet(const PacketHeader& hdr, std::span<const uint8_t> data);
    PacketAction on_ps_packet(const PacketHeader& hdr, std::span<const uint8_t> data, Server& s);
    // The whole request `msg` (of type `type`) needs nothing on the way to s beyond what
    // take_plain_run() does: the tracker entry, the counters, a Sync counted.
    bool plain_request(uint8_t type, std::span<const uint8_t> msg, const Server& s) const;
    void note_request_start(Server& s) noexcept;
    bool caching_statements() const noexcept;
    PacketAction answer_without_server(const PacketHeader& hdr, std::span<const uint8_t> data);
    PacketAction answer_deallocate(const PacketHeader& hdr, std::span<const uint8_t> data,
                                   uint8_t status);
    bool may_deallocate(std::span<const uint8_t> body) const noexcept;
    bool parse_deallocate_of_name(std::span<const uint8_t> body, Server& s);
    // True when the Query is DEALLOCATE ALL / DISCARD ALL (the names are forgotten now).
    bool forget_names_if_discard(const PacketHeader& hdr, std::span<const uint8_t> data);
    PacketAction finish_login();
    void start_auth();
    void log_login_attempt(bool mock = false);
    void auth_failed(const char* msg);
    // The login checks an md5 secret, which cannot serve a SCRAM exchange. Requires: logging in.
    bool has_md5_secret() const noexcept;
    // client_auth.cpp: auth_query, the method per auth_type/hba, cert and peer logins.
    bool start_auth_query();
    void send_auth_query();
    void continue_auth();
    // auth_type=pam: the PAM user's credentials, then the cleartext request; the password
    // goes to the PAM worker (auth/pam.h) and on_pam_answer() finishes or refuses the login.
    void start_pam_auth();
    PacketAction check_with_pam(std::string_view password);
    void on_pam_answer(bool ok);
    void login_via_cert(const HbaRule* rule);
    void login_as_peer(const HbaRule* rule);
    // TLS during login (tls_login.cpp).
    bool tls_offered() const noexcept;   // answer SSLRequest with 'S' / accept direct TLS
    bool tls_required() const noexcept;  // a plain startup packet gets "SSL required"
    PacketAction on_ssl_request(const PacketHeader& hdr);
    void on_tls_event(SBufEvent ev);
};

class Server final : public SBufOwner, public LogSubject {
public:
    ListNode node;
    ServerState state = ServerState::Login;
    SBuf sb;
    Pool* pool = nullptr;
    Client* client = nullptr;
    PeerAddr addr;
    PeerAddr local;
    DnsWaiter dns_wait;  // while the host name is being resolved (connect())
    RequestTracker tracker;
    VarCache vars;  // the server's current values of tracked parameters
    VarCache reset_vars;  // the values of its login: what RESET gives on it
    ServerPs ps;    // statements prepared on this connection
    PsPins ps_pins;  // entries named by requests in `tracker` (pin_ps())
    std::vector<std::string> pending_errors;  // ErrorResponses replacing ReplaceError replies
    bool replaced_error_in_batch = false;     // the failing request was a ReplaceError one
    // ParameterStatus name/value pairs of the login (become the pool's welcome set).
    std::vector<std::pair<std::string, std::string>> login_params;
    uint32_t backend_pid = 0;
    uint32_t backend_key = 0;
    ScramClient scram;
    bool ready_to_release = false;  // set at ReadyForQuery; release once flushed
    // A RESET or DISCARD ALL of the client's ran in the cycle under way (until its
    // ReadyForQuery: restore_client_defaults()).
    bool reset_in_cycle = false;
    bool close_needed = false;
    bool resetting = false;
    bool pinned = false;  // COPY BOTH / replication: stays with its client
    int cancels_in_flight = 0;    // CancelRequests forwarded to this backend, not yet done
    bool waiting_cancel = false;  // released, but held back until those cancels finish
    bool checking = false;        // running server_check_query before reuse
    bool connect_query_sent = false;  // the database's connect_query runs (still in Login)
    bool orphaned = false;  // its client left; it answers what the client sent (run_orphaned())
    usec_t orphan_heard = 0;  // while orphaned: when a reply last came
    usec_t connect_time = 0;
    usec_t request_time = 0;
    usec_t idle_since = 0;
    uint64_t id = 0;

    PacketAction on_packet(SBuf& sb, const PacketHeader& hdr,
                           std::span<const uint8_t> data) override;
    uint32_t take_plain_run(SBuf& sb, std::span<const uint8_t> data) override;
    void on_sbuf_event(SBuf& sb, SBufEvent ev) override;
    void on_sbuf_drained(SBuf& sb) override;
    size_t log_prefix(char* buf, size_t size) const noexcept override;

    // Nothing of the connection is held here and every reply it owes goes to its client as
    // it is (SUSPEND stops it then; an online restart can hand it over).
    bool quiet() const noexcept {
        return sb.at_rest() && tracker.owes_only_forwarded() && pending_errors.empty();
    }
    // The sbuf settings of a server connection (a new one, or one taken over at -R).
    void configure_sbuf();
    // Starts connecting (state Login): resolves the host (maybe later, without blocking),
    // then connects. False = could not even start (logged; object closed).
    bool connect();
    void close(const char* reason);
    // The connection broke (or timed out) under its client: closes, then ends the client
    // with FATAL client_msg (nullptr: the same words as reason).
    void close_and_fail_client(const char* reason, const char* client_msg = nullptr);
    // Sends SET for tracked parameters where the client's value differs (replies swallowed).
    // Inline: runs at every assignment and the sets are nearly always the same (interned).
    void sync_vars_from(const Client& c) {
        if (!vars.same(c.vars))
            send_sets_for(c);
    }
    // server_fast_close (session mode): marked close_needed, or its database changed.
    bool fast_close_due() const noexcept;
    // Ends the session: the client gets "database configuration changed", both close.
    void fast_close();
    // The client is leaving with requests unanswered. When the server can answer them all on
    // its own, it goes on without the client (true: unlinked); false: it must close.
    bool run_orphaned();
    // Runs server_reset_query (no client linked) and goes idle when it finishes.
    void start_reset(const std::string& query);
    // Runs server_check_query (an idle server about to be reused) and becomes ready after.
    void start_check();
    // The tracker's count of ReadyForQuery owed became uncertain (a COPY IN failed with Syncs
    // inside its data): once it wants_resync(), send the marker query that settles it.
    void resync_if_due() {
        if (tracker.wants_resync()) [[unlikely]]
            send_resync_marker();
    }
    void send_resync_marker();
    // Statement cache: sends the Parse of e (evicting the least recently used statement if
    // the set is full) with the given reply action.
    void send_parse(PsEntry* e, ReplyAction action, bool client_parse);
    // Whether this server has e prepared as it is now (and marks it used). A copy from before
    // e's result type changed (PsEntry::generation) is closed here: false, the caller's
    // send_parse() makes it anew under the same name.
    bool has_current(PsEntry* e);
    // Closes this server's copy of e (a Parse of it follows).
    void drop_copy(PsEntry* e);
    // Keeps e alive while the request about to be queued with Expect::ps = e is owed (adopt:
    // with the reference the caller holds); the pins of batches already answered go first.
    void pin_ps(PsEntry* e, bool adopt = false) {
        if (tracker.empty() && tracker.dropped().empty())
            ps_pins.release();
        if (adopt)
            ps_pins.adopt(e);
        else
            ps_pins.pin(e);
    }
    // Sends a Close of statement e, whose reference the caller passes (it left ps); the
    // reply is dropped. Discarded after an error, e goes back into ps (undo_dropped()).
    void close_statement(PsEntry* e);
    void note_statement_error(PsEntry& e, std::span<const uint8_t> body);
    // Emits the replies of Fake requests that are due, into the client's output.
    void emit_fakes();
    void undo_dropped();

private:
    // The address is known: opens the socket (the rest of connect()).
    bool start_connect();
    static void on_resolved(DnsWaiter* w, const PeerAddr* a, const std::string& err);
    // The TCP connect failed: the pool tries the name's next address, or has a login failure
    // once each address has failed in a row.
    void connect_failed(const char* why);
    PacketAction on_login_packet(const PacketHeader& hdr, std::span<const uint8_t> data);
    PacketAction on_work_packet(const PacketHeader& hdr, std::span<const uint8_t> data);
    void send_startup();
    // TLS during login (tls_login.cpp): SSLRequest first when server TLS is on and the
    // target is TCP (false: nothing sent), then the one-byte answer, then the handshake.
    bool send_ssl_request();
    PacketAction on_ssl_answer(uint8_t answer);
    void on_tls_event(SBufEvent ev);
    // close_reason: the log's "closing because" when it should differ from message (the
    // text clients are told later, with the cached error).
    void login_failed(std::string_view message, std::span<const uint8_t> error_packet,
                      const char* close_reason = nullptr);
    void dns_failed(const std::string& err);
    bool plain_replies_possible() const noexcept;
    bool statements_cached() const noexcept;
    void after_reply();
    // sync_vars_from's work when the sets differ.
    void send_sets_for(const Client& c);
    PacketAction refuse_client_value(const ErrorFields& f);
    static bool resets_parameters(std::span<const uint8_t> body) noexcept;
    void restore_client_defaults(std::string_view z);
    std::string_view reported_name(size_t idx) const noexcept;
};

// Bumped whenever settings or database/user entries may have changed (config_changed()):
// values derived from them and cached carry the generation they were computed in.
extern uint64_t g_config_gen;
inline void config_changed() noexcept {
    ++g_config_gen;
}

struct Pool {
    Database* db = nullptr;
    User* user = nullptr;  // login user towards the server (forced user or the client user)
    // auth_query credentials of that user (owned by db) that servers log in with; nullptr:
    // user's own auth_file secret. Set by each client login to a non-forced pool.
    User* auth_cred = nullptr;
    std::string client_user;  // key part: the client-side user name
    ListNode node;          // in the global pool list

    List<Client, &Client::node> waiting;
    List<Client, &Client::node> active;
    List<Server, &Server::node> login;
    List<Server, &Server::node> idle;
    List<Server, &Server::node> active_servers;
    List<Server, &Server::node> used;

    bool have_params = false;
    bool welcome_pending = false;  // some queued client waits only for the welcome
    // ParameterStatus name/value pairs from the first server login, for the welcome.
    std::vector<std::pair<std::string, std::string>> params;
    // The welcome's ParameterStatus messages for clients whose own values are welcome_in,
    // and the values such a client has afterwards. Built at the first welcome and reused
    // while clients come with the same values (the common case: a pool's clients send the
    // same startup parameters, and equal values are the same interned set).
    VarCache welcome_in;
    VarCache welcome_out;
    std::string welcome_status;
    bool have_welcome = false;
    std::string last_login_error;  // ErrorResponse packet of the last failed login
    usec_t last_login_failure = 0;
    uint16_t connect_failures = 0;  // TCP connects refused in a row (reset by one that works)
    usec_t last_lifetime_close = 0;  // when server_lifetime last closed one of its servers
    usec_t inactive_since = 0;       // no client and no server since then (0 = in use)

    // stats
    uint64_t xact_count = 0;
    uint64_t query_count = 0;
    uint64_t server_assignments = 0;
    uint64_t bytes_in = 0;
    uint64_t bytes_out = 0;
    uint64_t xact_time = 0;
    uint64_t query_time = 0;
    uint64_t wait_time = 0;
    uint64_t client_parse_count = 0;  // named Parse messages from clients (statement cache)
    uint64_t server_parse_count = 0;  // Parse messages sluice sent to servers for them
    uint64_t bind_count = 0;          // Bind messages of cached statements
    uint64_t client_login_count = 0;  // client logins completed (Client::finish_login)
    // Counters at the last two stats_period ticks, for averages (src/stats.cpp).
    PoolStats stats_newer;
    PoolStats stats_older;
    // Latency distributions for the metrics endpoint, fed by stats_observe_*().
    LatencyHistogram xact_hist;
    LatencyHistogram query_hist;
    LatencyHistogram wait_hist;

    // Calls f(Server&) for every server connection of the pool, those still logging in too
    // (f may close the server).
    template <typename F> void for_each_server(F&& f) {
        active_servers.for_each(f);
        idle.for_each(f);
        used.for_each(f);
        login.for_each(f);
    }
    size_t server_count() const noexcept {
        return login.size() + idle.size() + active_servers.size() + used.size();
    }
    // Anyone in it: a client (logging-in auth_query ones too) or a server connection.
    bool in_use() const noexcept {
        return !waiting.empty() || !active.empty() || server_count() > 0;
    }
    // Effective pool_mode and pool_size (the user's, else the database's, else the global
    // setting): asked several times per transaction, so cached until the configuration
    // changes (config_changed()).
    PoolMode mode() const noexcept { return limits().mode; }
    int pool_size() const noexcept { return limits().size; }
    int reserve_size() const noexcept;
    int min_size() const noexcept;  // min_pool_size: the database's, else the global one
    // server_lifetime: the database's when set (> 0), else the global one (0 = use once).
    usec_t server_lifetime() const noexcept;

private:
    struct Limits {
        uint64_t gen = 0;  // g_config_gen when computed; 0 = never
        PoolMode mode = PoolMode::Session;
        int size = 0;
    };
    mutable Limits limits_;
    const Limits& limits() const noexcept {
        return limits_.gen == g_config_gen ? limits_ : compute_limits();
    }
    const Limits& compute_limits() const noexcept;
};

// Hash of a client's (cancel_pid, cancel_key) for the cancel-key index. Both are random, so
// folding them is enough.
inline size_t cancel_key_hash(uint32_t pid, uint32_t key) noexcept {
    return static_cast<size_t>(key ^ (uint64_t{pid} << 32 | pid));
}
inline size_t cancel_key_hash(const Client& c) noexcept {
    return cancel_key_hash(c.cancel_pid, c.cancel_key);
}

// State changes: unlink from the old list, link into the new one, update counters.
void set_state(Client& c, ClientState next);
void set_state(Server& s, ServerState next);
// Links a client and a server (both sbufs) / undoes it.
void link(Client& c, Server& s);
void unlink(Client& c, Server& s);
// Opens a new connection to the server's address and sends it a CancelRequest for its backend.
void send_cancel_request(Server& s);
// Drops the links of in-flight cancels to a server that is closing.
void forget_cancels_for(Server& s);
// At exit: closes and frees every in-flight cancel connection.
void cancel_free_all();
// The admin console lives above the client layer; the client reaches it only through these
// hooks, installed at start-up (nullptr = console unavailable).
struct AdminHooks {
    // May this authenticated client use the console? Sets c.admin_full.
    bool (*check_access)(Client& c) = nullptr;
    // Writes AuthenticationOk, ParameterStatus, BackendKeyData and ReadyForQuery.
    void (*send_welcome)(Client& c) = nullptr;
    // One complete simple Query (the SQL text without its NUL). Writes the replies.
    void (*handle_query)(Client& c, std::string_view sql) = nullptr;
    // A message the console does not take (anything but Query and Terminate): as PgBouncer,
    // an ERROR and ReadyForQuery, then FATAL "bad packet".
    void (*refuse_message)(Client& c, uint8_t type) = nullptr;
};
extern AdminHooks g_admin_hooks;

// Socket options from the [pgbouncer] tcp_* settings.
TcpOptions tcp_options_from(const Settings& s);

}  // namespace sluice
