// Operator control of pools: PAUSE / RESUME / SUSPEND, KILL, RECONNECT, KILL_CLIENT and the
// checks the admin console polls before it answers a waiting command. Used by the console
// (src/admin) and by the signal handlers (SIGUSR1 / SIGUSR2) in main.
//
// Pausing works through Database::paused, which pool_request_server() and
// pool_server_ready() already honour (no new assignments, clients queue). This module owns
// that flag: it is the OR of the global pause mode and the per-database pause, re-applied by
// control_tick() so that databases created later from the "*" entry are paused too.
#pragma once

#include <cstdint>
#include <string>

#include "sluice/pool/objects.h"

namespace sluice {

enum class PauseMode : uint8_t {
    None,
    Pause,    // PAUSE without a database, SIGUSR1, SHUTDOWN WAIT_FOR_SERVERS
    Suspend,  // SUSPEND: every non-console socket stops being read
};

namespace detail {
extern PauseMode g_pause_mode;  // control.cpp owns it; read through pause_mode()
}
inline PauseMode pause_mode() noexcept {
    return detail::g_pause_mode;
}
// The global mode keeps databases from getting servers: PAUSE, and a SUSPEND whose session
// carries the queue (see control_suspend). A database created meanwhile starts so.
bool control_pools_stopped() noexcept;

// Global PAUSE: every database stops getting servers; idle servers are closed by
// control_tick() and busy ones when they are released. No-op unless the mode is None.
void control_pause_all();
// Undoes the global PAUSE / SUSPEND (RESUME, SIGUSR2). As PgBouncer, the pauses of single
// databases (PAUSE db, KILL) stay until RESUME db. Queued clients get idle servers or new
// connections. False = the pooler was not paused or suspended.
bool control_resume_all();

// SUSPEND: stop accepting connections and stop reading from every client and server socket
// (console sessions excepted), each once it is quiet. Requires: pause_mode() == None and no
// database paused.
//
// carry_queued: the session asking takes the sockets over and serves what queued clients
// hold (a new sluice: SHOW FDS's pending_input), so every database pauses and queued clients
// stop where they are. Otherwise (an operator, or PgBouncer taking over, which reads no
// pending_input) the queue is served first: databases go on giving servers to queued clients,
// and a client stops being read once it is quiet and holds no server the queue waits for.
void control_suspend(bool carry_queued);
// While suspended: a client's request went out, or its server was released. It stops being
// read now if it may (rather than at the next check), before it sends another request.
void control_client_quiet(Client& c);
// True once no suspended socket has unsent output (the point where SUSPEND answers).
// Sockets still flushing after suspend_timeout are closed with "suspend_timeout".
bool control_suspend_done();

// PAUSE db / RESUME db. Requires: !db.admin. resume returns false when db was not paused.
void control_pause_db(Database& db);
bool control_resume_db(Database& db);
// The per-database pause (SHOW DATABASES "paused"), not counting the global mode.
bool control_db_paused(const Database& db) noexcept;
int control_paused_db_count() noexcept;

// Servers of db (nullptr = every database) that a PAUSE still waits for: linked to a client,
// or in the middle of something. 0 = the pause is complete.
int control_busy_servers(const Database* db) noexcept;
// Servers of db (nullptr = all) that RECONNECT or a config change marked close_needed.
int control_close_needed_servers(const Database* db) noexcept;

// KILL db: pause it (until RESUME), then control_drop_db(). Requires: !db.admin.
void control_kill_db(Database& db);
// KILL, or a RELOAD dropped db's [databases] entry: close its clients with FATAL "database
// removed" and every server connection of it, and free its pools (pool_drop_pools_of; the
// name may live on as an auto-database). Requires: !db.admin.
void control_drop_db(Database& db);
// RECONNECT db: every server of db is closed when next released; idle ones at once.
void control_reconnect_db(Database& db);
// A server host name no longer resolves to gone (net/dns.h, dns_on_address_gone): in every
// pool whose database names that host, server connections to that address are closed when
// next released, idle ones at once (PgBouncer's behaviour on a DNS failover).
void control_retire_address(const std::string& host, const PeerAddr& gone);
// KILL_CLIENT: the client with this id (SHOW CLIENTS id), console sessions included.
// Closes it with FATAL "admin forced disconnect". False = no such client.
bool control_kill_client(uint64_t id);

// Periodic upkeep (the console's 100 ms timer): re-applies pause flags, closes idle servers
// of paused databases, ends a SUSPEND whose last console session left.
void control_tick();

}  // namespace sluice
