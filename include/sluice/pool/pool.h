// Pools: databases and users from the config, the (database, user) pools, server assignment
// and release, launching server connections, and the process-wide runtime state.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include <event2/event.h>

#include "sluice/auth/hba.h"
#include "sluice/auth/userlist.h"
#include "sluice/config/config.h"
#include "sluice/pool/objects.h"
#include "sluice/util/hash_table.h"

namespace sluice {

struct Runtime {
    event_base* base = nullptr;
    Config cfg;
    std::string config_path;  // the file named on the command line; RELOAD reads cfg's conffile
    UserList userlist;
    HbaFile hba;      // auth_hba_file (loaded only with auth_type=hba)
    IdentFile ident;  // auth_ident_file (likewise)
    std::unordered_map<std::string, std::unique_ptr<Database>> databases;
    UserMap users;
    // auth_type=pam: per user name, the password PAM accepted last (servers log in with it;
    // auth_file plays no part, and a RELOAD keeps them).
    UserMap pam_users;
    std::vector<std::unique_ptr<Pool>> pools;
    List<Client, &Client::node> login_clients;
    List<Client, &Client::node> free_clients;   // Closing: deleted at the end of the turn
    List<Server, &Server::node> free_servers;
    int client_count = 0;  // all clients except the admin console's
    // Logged-in clients by (cancel_pid, cancel_key): intrusive, no allocation per client.
    IntrusiveHash<Client, &Client::cancel_next, cancel_key_hash> cancel_map;
    uint64_t next_id = 1;
    bool shutting_down = false;  // stop accepting; exit when clients/servers are gone
    bool wait_for_clients = false;
};

// The one runtime (defined in pool.cpp); inline accessors, they run for every message.
extern Runtime g_runtime;
inline Runtime& rt() {
    return g_runtime;
}
inline const Settings& settings() {
    return g_runtime.cfg.settings;
}

// Loads databases and users from rt().cfg (start-up and reload).
void apply_config_objects();
// Finds a database; creates it from the "*" entry when that exists. nullptr = no such db.
// `who` (a logging-in client) prefixes the "registered new auto-database: db=x" line. An
// idle auto-database (Database::idle()) found here is in use again.
Database* find_database(const std::string& name, const LogSubject* who = nullptr);
// find_database() for a console command (PAUSE, KILL, ...): PgBouncer logs its
// find_or_register_database() line, "registered new auto-database: x", with the console
// session's prefix.
Database* find_or_register_database(const std::string& name, const LogSubject& admin);
// The auth_file entry for a user (credentials), or nullptr.
User* find_user(const std::string& name);
// The user called `name` in m, created (without a secret) if needed.
User& user_in(UserMap& m, const std::string& name);
// Creates the user object if needed (forced users may lack an auth_file line).
User* get_user(const std::string& name);
Pool* get_pool(Database* db, User* login_user, const std::string& client_user);
// The pool a client of `user` uses on db: the database's forced user's, else its own.
Pool* client_pool(Database* db, User& user);

// A client needs a server: link one now or queue the client (its sbuf stays paused).
void pool_request_server(Client& c);
// The client is done with its server (transaction end in txn/stmt mode, or disconnect).
void pool_release_server(Server& s);
// A server finished login, reset or check: hand it to a waiting client or make it idle.
void pool_server_ready(Server& s);
// Within server_login_retry after a failed login with no server left: refuses the client
// with PgBouncer's cached-error text and returns true. Inline: asked whenever a client
// queues, and a pool with servers is never refusing.
bool pool_refuse_with_login_error(Client& c);
inline bool pool_refuse_if_login_failing(Client& c) {
    return c.pool->server_count() == 0 && pool_refuse_with_login_error(c);
}
// Opens new server connections while clients wait and limits allow.
void pool_launch_if_needed(Pool& p);
// Keeps min_pool_size servers open (janitor).
void pool_ensure_min(Pool& p);
// min_pool_size of a database: its [databases] entry's, else the global one.
int database_min_pool_size(const Database& db) noexcept;
// Janitor: a forced-user database with a min_pool_size gets its pool before any client
// comes (as later PgBouncer releases), so pool_ensure_min opens its servers at start-up.
void pool_create_forced_min();
// An unused server older than its pool's server_lifetime is closed ("server lifetime over"),
// at most one per lifetime / pool_size per pool, as PgBouncer spaces them: servers opened
// together (a burst of clients, a restart) do not all reconnect at the same moment. True =
// closed.
bool pool_close_if_life_over(Server& s, usec_t now);
// Janitor: a pool holding more servers than pool_size + reserve_pool_size (the size was
// lowered by RELOAD or SET) closes unused ones ("too many servers in the pool").
void pool_trim(Pool& p);
// A server is gone; maybe launch a replacement.
void pool_server_gone(Pool& p);
// Janitor: an auto-database without clients or servers becomes idle (Database::idle());
// one idle for autodb_idle_timeout is dropped with its pools unless paused (as PgBouncer);
// the next client of the name registers it anew.
void pool_drop_idle_autodbs(usec_t now);
// KILL, and a RELOAD that drops db: its pools leave the pool list now, their SHOW POOLS
// rows and SHOW STATS counters with them, as PgBouncer frees them; the next client of db
// gets a new pool, which learns the welcome parameters from a new server login. The
// objects are freed at the end of the turn. Requires: every client and server of those
// pools is closing.
void pool_drop_pools_of(const Database& db);
// Janitor: pool_idle_timeout frees a pool (database + user) that has had no client and no
// server that long, with its SHOW STATS counters (as PgBouncer 1.26).
void pool_drop_idle_pools(usec_t now);

// At exit: closes every connection and frees every object.
void pool_free_all();

// Objects are deleted at the end of the loop turn, never inside their own callback.
void schedule_free();
// Gives a logged-in client a fresh random (cancel_pid, cancel_key) and indexes it.
void register_cancel_key(Client& c);
// The same with a given key (online restart: clients keep theirs); false when it is 0 or
// taken.
bool register_cancel_key_as(Client& c, uint32_t pid, uint32_t key);
void unregister_cancel_key(Client& c);
// The client a CancelRequest's (pid, key) names, or nullptr.
Client* find_cancel_key(uint32_t pid, uint32_t key);

}  // namespace sluice
