// Databases, users and pools; which server a client gets and what happens to a released one.
#include "sluice/pool/pool.h"

#include "sluice/net/loop.h"
#include "sluice/pool/control.h"

#include <algorithm>
#include <cstring>
#include <unordered_set>

namespace sluice {

Runtime g_runtime;
uint64_t g_config_gen = 1;

namespace {

Runtime& g_rt = g_runtime;
std::unordered_map<std::string, Pool*> g_pool_index;  // "db\0client_user" -> pool
// Pools a KILL or a RELOAD took out of the list: freed after the closed clients and servers that still
// point at them.
std::vector<std::unique_ptr<Pool>> g_dropped_pools;

void free_closed() {
    while (Client* c = g_rt.free_clients.pop_front())
        delete c;
    while (Server* s = g_rt.free_servers.pop_front())
        delete s;
    g_dropped_pools.clear();
}

bool login_failing(const Pool& p) {
    return p.last_login_failure != 0 &&
           mono_now() - p.last_login_failure < settings().server_login_retry;
}

// Limits on opening one more server connection for this pool.
bool can_open_server(const Pool& p, bool use_reserve) {
    int size = p.pool_size();
    if (use_reserve)
        size += p.reserve_size();
    if (size > 0 && static_cast<int>(p.server_count()) >= size)
        return false;
    int max_db = p.db->entry.max_db_connections >= 0 ? p.db->entry.max_db_connections
                                                     : settings().max_db_connections;
    if (max_db > 0 && p.db->server_count >= max_db)
        return false;
    int max_user = settings().max_user_connections;
    if (p.user->entry && p.user->entry->max_user_connections >= 0)
        max_user = p.user->entry->max_user_connections;
    if (max_user > 0 && p.user->server_count >= max_user)
        return false;
    return true;
}

// The first queued client has waited reserve_pool_timeout: the reserve pool may open.
bool first_waited_out(Pool& p) {
    const Client* first = p.waiting.front();
    return first && first->wait_start &&
           mono_now() - first->wait_start >= settings().reserve_pool_timeout;
}

// server_check_delay: a server idle longer than this runs server_check_query before reuse.
bool needs_check(const Server& s) {
    const Settings& st = settings();
    if (st.server_check_query.empty())
        return false;
    return mono_now() - s.idle_since >= st.server_check_delay;
}

void launch_server(Pool& p) {
    auto* s = new Server();
    s->pool = &p;
    s->id = rt().next_id++;
    set_state(*s, ServerState::Login);
    p.db->server_count++;
    p.user->server_count++;
    s->connect();
}

// Gives server s to client c (both already in their pools).
void assign(Client& c, Server& s) {
    if (s.sb.suspended()) [[unlikely]]  // SUSPEND serving its queue first (control_suspend)
        s.sb.unsuspend(settings().sbuf_loopcnt);
    if (s.state != ServerState::Active)  // else released by one client, handed to the next
        set_state(s, ServerState::Active);
    set_state(c, ClientState::Active);
    link(c, s);
    usec_t now = mono_now();
    s.request_time = now;
    c.pool->server_assignments++;
    if (c.wait_start) {
        c.pool->wait_time += static_cast<uint64_t>(now - c.wait_start);
        stats_observe_wait(*c.pool, now - c.wait_start);
        c.wait_start = 0;
    }
    s.sync_vars_from(c);
    c.on_server_assigned();
}

}  // namespace

const Pool::Limits& Pool::compute_limits() const noexcept {
    const UserEntry* u = user ? user->entry : nullptr;
    if (u && u->pool_mode)
        limits_.mode = *u->pool_mode;
    else if (db->entry.pool_mode)
        limits_.mode = *db->entry.pool_mode;
    else
        limits_.mode = settings().pool_mode;
    if (u && u->pool_size >= 0)
        limits_.size = u->pool_size;
    else if (db->entry.pool_size >= 0)
        limits_.size = db->entry.pool_size;
    else
        limits_.size = settings().default_pool_size;
    limits_.gen = g_config_gen;
    return limits_;
}

int database_min_pool_size(const Database& db) noexcept {
    return db.entry.min_pool_size >= 0 ? db.entry.min_pool_size : settings().min_pool_size;
}

int Pool::min_size() const noexcept {
    return database_min_pool_size(*db);
}

void pool_create_forced_min() {
    for (auto& [name, db] : g_rt.databases)
        if (!db->admin && !db->dirty && !db->entry.user.empty() &&
            database_min_pool_size(*db) > 0)
            static_cast<void>(get_pool(db.get(), get_user(db->entry.user), db->entry.user));
}

usec_t Pool::server_lifetime() const noexcept {
    return db->entry.server_lifetime > 0 ? usec_t{db->entry.server_lifetime} * 1000000
                                         : settings().server_lifetime;
}

int Pool::reserve_size() const noexcept {
    if (user && user->entry && user->entry->reserve_pool_size >= 0)
        return user->entry->reserve_pool_size;
    if (db->entry.reserve_pool_size >= 0)
        return db->entry.reserve_pool_size;
    return settings().reserve_pool_size;
}

void schedule_free() {
    loop_defer(free_closed);
}

// PgBouncer's line for a database that goes (RELOAD, autodb_idle_timeout).
static void log_dropping(const std::string& name) {
    log_warning("dropping database '%s' as it does not exist anymore or inactive auto-database",
                name.c_str());
}

// A database's entry becomes e. When the connection target changes, its servers are marked
// close_needed: busy ones close when released, idle ones when the janitor or the next
// request for a server finds them (pool_request_server), those still logging in to the old
// target once their login is done (pool_server_ready).
static void set_entry(Database& db, const DatabaseEntry& e) {
    const DatabaseEntry& o = db.entry;
    if (o.host != e.host || o.port != e.port || o.dbname != e.dbname || o.user != e.user ||
        o.password != e.password) {
        for (auto& p : g_rt.pools) {
            if (p->db != &db)
                continue;
            p->for_each_server([](Server& s) { s.close_needed = true; });
        }
    }
    std::string name = db.name;
    db.entry = e;
    db.entry.name = std::move(name);
    db.dirty = false;
}

void apply_config_objects() {
    config_changed();
    Runtime& r = g_rt;
    // Databases: update entries in place so pools keep their pointers.
    for (auto& [name, db] : r.databases)
        if (!db->admin && !db->from_fallback)
            db->dirty = true;
    const DatabaseEntry* fallback = nullptr;
    for (const DatabaseEntry& e : r.cfg.databases) {
        if (e.name == "*") {
            fallback = &e;
            continue;
        }
        auto& slot = r.databases[e.name];
        if (!slot) {
            slot = std::make_unique<Database>();
            slot->name = e.name;
            slot->entry = e;
        }
        set_entry(*slot, e);
        slot->from_fallback = false;
    }
    // Auto-databases follow the "*" line (as in PgBouncer, a changed target replaces their
    // servers); entries the file no longer has, and auto-databases once "*" is gone, are
    // dropped with PgBouncer's WARNING and "database removed" for their clients and servers.
    // With a "*" line a dropped name lives on as an auto-database: the same object, so
    // pools keep their pointers.
    for (auto& [name, db] : r.databases) {
        if (db->admin)
            continue;
        if (db->from_fallback && fallback) {
            set_entry(*db, *fallback);
            continue;
        }
        if (db->from_fallback) {
            if (db->dirty)
                continue;  // dropped at an earlier reload
            db->dirty = true;
        } else if (!db->dirty) {
            continue;
        }
        log_dropping(name);
        control_drop_db(*db);
        db->from_fallback = true;  // from now on it is what "*" makes of the name, if anything
        if (fallback)
            set_entry(*db, *fallback);
    }
    auto& admin = r.databases["pgbouncer"];
    if (!admin) {
        admin = std::make_unique<Database>();
        admin->name = "pgbouncer";
    }
    admin->admin = true;
    admin->dirty = false;

    // Users: credentials from auth_file, overrides from [users].
    for (auto& [name, u] : r.users) {
        u->have_secret = false;
        u->secret.clear();
        u->entry = nullptr;
    }
    for (const auto& [name, secret] : r.userlist) {
        User* u = get_user(name);
        u->secret = secret;
        u->have_secret = true;
    }
    for (const UserEntry& ue : r.cfg.users)
        get_user(ue.name)->entry = &ue;
}

namespace {

// The database called name, else one made now from the "*" entry (created is set then).
// Finding an idle auto-database puts it back in use, as PgBouncer's find_database() takes
// it back from its autodatabase_idle_list.
Database* find_or_create(const std::string& name, bool& created) {
    created = false;
    auto it = g_rt.databases.find(name);
    if (it != g_rt.databases.end()) {
        if (it->second->dirty)
            return nullptr;
        it->second->put_in_use();
        return it->second.get();
    }
    for (const DatabaseEntry& e : g_rt.cfg.databases) {
        if (e.name != "*")
            continue;
        auto db = std::make_unique<Database>();
        db->name = name;
        db->entry = e;
        db->entry.name = name;
        db->from_fallback = true;
        db->paused = control_pools_stopped();  // born during a global PAUSE or SUSPEND
        Database* out = db.get();
        g_rt.databases[name] = std::move(db);
        created = true;
        return out;
    }
    return nullptr;
}

}  // namespace

Database* find_database(const std::string& name, const LogSubject* who) {
    bool created = false;
    Database* db = find_or_create(name, created);
    if (created)
        slog_info(who, "registered new auto-database: db=%s", name.c_str());  // PgBouncer's
    return db;
}

Database* find_or_register_database(const std::string& name, const LogSubject& admin) {
    bool created = false;
    Database* db = find_or_create(name, created);
    if (created)  // PgBouncer's admin.c words it without "db="
        slog_info(&admin, "registered new auto-database: %s", name.c_str());
    return db;
}

User* find_user(const std::string& name) {
    auto it = g_rt.users.find(name);
    if (it == g_rt.users.end() || !it->second->have_secret)
        return nullptr;
    return it->second.get();
}

User& user_in(UserMap& m, const std::string& name) {
    std::unique_ptr<User>& slot = m[name];
    if (!slot) {
        slot = std::make_unique<User>();
        slot->name = name;
    }
    return *slot;
}

User* get_user(const std::string& name) {
    return &user_in(g_rt.users, name);
}

Pool* get_pool(Database* db, User* login_user, const std::string& client_user) {
    std::string key = db->name;
    key.push_back('\0');
    key += client_user;
    auto it = g_pool_index.find(key);
    if (it != g_pool_index.end())
        return it->second;
    auto p = std::make_unique<Pool>();
    p->db = db;
    p->user = login_user;
    p->client_user = client_user;
    Pool* out = p.get();
    g_rt.pools.push_back(std::move(p));
    g_pool_index[key] = out;
    return out;
}

Pool* client_pool(Database* db, User& user) {
    if (!db->entry.user.empty())
        return get_pool(db, get_user(db->entry.user), db->entry.user);
    return get_pool(db, &user, user.name);
}

void pool_drop_idle_autodbs(usec_t now) {
    usec_t limit = settings().autodb_idle_timeout;
    if (std::none_of(g_rt.databases.begin(), g_rt.databases.end(),
                     [](const auto& kv) { return kv.second->from_fallback; }))
        return;
    // In use: a pool with anyone in it (logging-in clients of an auth_query too, which the
    // database's counts do not include). One walk over the pools, not one per database.
    std::unordered_set<const Database*> in_use;
    for (const auto& p : g_rt.pools)
        if (p->in_use())
            in_use.insert(p->db);
    // An auto-database found unused becomes idle at once, whatever autodb_idle_timeout (a
    // paused one too), as PgBouncer's janitor moves it to its idle list: SHOW DATABASES
    // leaves it out. It is dropped after the timeout unless paused.
    std::vector<Database*> gone;
    for (auto& [name, db] : g_rt.databases) {
        if (!db->from_fallback || db->admin || db->dirty)
            continue;
        if (db->client_count > 0 || db->server_count > 0 || in_use.contains(db.get())) {
            db->inactive_since = 0;
        } else if (db->inactive_since == 0) {
            // Noted now, dropped at a later pass at the earliest: objects closed during this
            // turn (which may still point at the pools) are freed by then.
            db->inactive_since = now;
        } else if (limit > 0 && !db->paused && now - db->inactive_since >= limit) {
            gone.push_back(db.get());
        }
    }
    for (Database* db : gone) {
        log_dropping(db->name);
        std::erase_if(g_pool_index, [&](const auto& kv) { return kv.second->db == db; });
        std::erase_if(g_rt.pools, [&](const std::unique_ptr<Pool>& p) { return p->db == db; });
        std::string name = db->name;  // the map owns db
        g_rt.databases.erase(name);
    }
}

void pool_drop_idle_pools(usec_t now) {
    usec_t limit = settings().pool_idle_timeout;
    if (limit <= 0)
        return;
    bool any = false;
    for (auto& p : g_rt.pools) {
        if (p->db->admin || p->in_use())
            p->inactive_since = 0;
        else if (p->inactive_since == 0)
            p->inactive_since = now;  // freed at a later pass: see pool_drop_idle_autodbs
        else if (now - p->inactive_since >= limit)
            any = true;
    }
    if (!any)
        return;
    auto due = [&](const Pool* p) {
        return p->inactive_since != 0 && now - p->inactive_since >= limit;
    };
    std::erase_if(g_pool_index, [&](const auto& kv) { return due(kv.second); });
    std::erase_if(g_rt.pools, [&](const std::unique_ptr<Pool>& p) {
        if (!due(p.get()))
            return false;
        log_info("cleaning up idle pool for user %s on db %s because: pool idle timeout",
                 p->user->name.c_str(), p->db->name.c_str());
        return true;
    });
}

void pool_drop_pools_of(const Database& db) {
    std::erase_if(g_pool_index, [&](const auto& kv) { return kv.second->db == &db; });
    for (auto& p : g_rt.pools)
        if (p->db == &db)
            g_dropped_pools.push_back(std::move(p));
    std::erase_if(g_rt.pools, [](const std::unique_ptr<Pool>& p) { return !p; });
    schedule_free();
}

void pool_request_server(Client& c) {
    Pool& p = *c.pool;
    c.wait_for_welcome = false;
    if (!p.db->paused) {
        while (Server* s = p.idle.front()) {
            if (s->close_needed) {  // retired while idle (a RELOAD changed the target)
                s->close("obsolete connection");  // PgBouncer's words
                continue;
            }
            if (needs_check(*s)) {
                s->start_check();  // it serves the queue once the check query returns
                continue;
            }
            assign(c, *s);
            return;
        }
        if (pool_refuse_if_login_failing(c))
            return;
    }
    if (c.state != ClientState::Waiting) {
        c.wait_start = mono_now();
        c.wait_notified = false;
        set_state(c, ClientState::Waiting);
    }
    pool_launch_if_needed(p);
}

bool pool_refuse_with_login_error(Client& c) {
    Pool& p = *c.pool;
    if (!login_failing(p) || p.last_login_error.empty())
        return false;
    ErrorFields f;
    auto* raw = reinterpret_cast<const uint8_t*>(p.last_login_error.data());
    std::string msg = "unknown error";
    if (p.last_login_error.size() > 5 &&
        parse_error_fields(std::span{raw + 5, p.last_login_error.size() - 5}, f))
        msg.assign(f.message);
    c.fatal("08P01", "server login has been failing, cached error: %s (server_login_retry)",
            msg.c_str());
    return true;
}

namespace {
// Nothing stops the pool opening connections but its limits: not paused, not shutting down,
// logins not failing.
bool can_launch(const Pool& p) {
    return !p.db->paused && !rt().shutting_down && !login_failing(p);
}

// max_db_connections / max_user_connections: close an idle server of another pool of the
// same database or user so that this pool can open one (PgBouncer evicts the same way).
bool evict_for(const Pool& p) {
    int max_db = p.db->entry.max_db_connections >= 0 ? p.db->entry.max_db_connections
                                                     : settings().max_db_connections;
    int max_user = settings().max_user_connections;
    if (p.user->entry && p.user->entry->max_user_connections >= 0)
        max_user = p.user->entry->max_user_connections;
    bool db_full = max_db > 0 && p.db->server_count >= max_db;
    bool user_full = max_user > 0 && p.user->server_count >= max_user;
    if (!db_full && !user_full)
        return false;
    Server* victim = nullptr;
    for (auto& other : g_rt.pools) {
        if (other.get() == &p)
            continue;
        if ((db_full && other->db != p.db) || (user_full && other->user != p.user))
            continue;
        Server* s = other->idle.back();  // the least recently used idle server
        if (s && (!victim || s->idle_since < victim->idle_since))
            victim = s;
    }
    if (!victim)
        return false;
    victim->close("evicted");
    return true;
}
}  // namespace

void pool_launch_if_needed(Pool& p) {
    // Servers still logging in, resetting or being checked will serve waiting clients.
    size_t want = p.waiting.size();
    if (want <= p.login.size() + p.used.size())
        return;
    // Under load the pool is full and the queue waits for its servers: no settings walk for
    // the reserve pool or the database and user caps before the first reserve_pool_timeout.
    if (int size = p.pool_size();
        size > 0 && static_cast<int>(p.server_count()) >= size && !first_waited_out(p)) {
        // After an online restart the pool has servers but not the parameters a new client's
        // welcome needs, which only a login brings: one idle server makes room for it (as
        // PgBouncer; closing it launches the replacement, so not while none could launch).
        if (p.welcome_pending && !p.have_params && p.login.empty() && can_launch(p))
            if (Server* s = p.idle.front())
                s->close("db not fully initialized after reboot");  // PgBouncer's words
        return;
    }
    if (!can_launch(p))
        return;
    while (want > p.login.size() + p.used.size()) {
        if (!can_open_server(p, false)) {
            if (p.reserve_size() > 0 && first_waited_out(p) && can_open_server(p, true)) {
                slog_warning(p.waiting.front(), "taking connection from reserve_pool");
            } else {
                // Blocked by a database or user cap rather than the pool size: free an idle
                // server elsewhere and try once more.
                int size = p.pool_size();
                bool size_ok = size <= 0 || static_cast<int>(p.server_count()) < size;
                if (!size_ok || !evict_for(p) || !can_open_server(p, false))
                    return;
            }
        }
        launch_server(p);
        if (login_failing(p))
            return;  // the connect failed at once (a remembered DNS failure): wait for retry
    }
}

void pool_release_server(Server& s) {
    Pool& p = *s.pool;
    if (Client* c = s.client) {
        unlink(*c, s);
        c->query_start = 0;  // nothing is owed any more
        if (c->state == ClientState::Active && c->sb.paused())
            c->sb.resume();
        if (pause_mode() == PauseMode::Suspend) [[unlikely]]
            control_client_quiet(*c);
    }
    s.ready_to_release = false;
    if (s.cancels_in_flight > 0) {
        // A cancel aimed at the previous client's query may still land: wait for it.
        set_state(s, ServerState::Used);
        s.waiting_cancel = true;
        return;
    }
    if (s.close_needed) {  // RECONNECT, a name that moved: PgBouncer's words
        s.close("close_needed");
        return;
    }
    if (p.db->dirty) {  // a RELOAD dropped the database: its clients are being closed
        s.close("database removed");  // PgBouncer's kill_pool() reason for every server
        return;
    }
    if (pool_close_if_life_over(s, mono_now()))
        return;
    const std::string& q = settings().server_reset_query;
    if (!q.empty() && (p.mode() == PoolMode::Session || settings().server_reset_query_always)) {
        s.start_reset(q);
        return;
    }
    pool_server_ready(s);
}

void pool_server_ready(Server& s) {
    Pool& p = *s.pool;
    s.resetting = false;
    s.checking = false;
    if (s.close_needed) {
        s.close("close_needed");
        return;
    }
    // Clients that only waited for the pool's parameters can be welcomed now (a walk of the
    // queue only while such clients exist, not at every release).
    if (p.have_params && p.welcome_pending) {
        p.welcome_pending = false;
        p.waiting.for_each([](Client& c) {
            if (c.wait_for_welcome) {
                c.wait_for_welcome = false;
                c.send_welcome();
            }
        });
    }
    if (!p.db->paused) {
        Client* c = p.waiting.front();
        if (c && c->wait_for_welcome && !p.have_params) {
            // Only after an online restart (servers taken over, no login seen yet): the
            // client needs parameters only a login brings; this server makes room for one.
            s.close("db not fully initialized after reboot");  // PgBouncer's words
            return;
        }
        if (c) {
            assign(*c, s);
            return;
        }
    }
    set_state(s, ServerState::Idle);
    s.idle_since = mono_now();
}

namespace {

// The rare part of pool_close_if_life_over, out of line: inlined, the close made the check
// that runs at every release save and restore registers it does not need.
[[gnu::noinline, gnu::cold]] bool close_if_spaced(Server& s, usec_t now, usec_t lifetime) {
    Pool& p = *s.pool;
    usec_t gap = p.pool_size() > 0 ? lifetime / static_cast<usec_t>(p.pool_size()) : 0;
    if (p.last_lifetime_close != 0 && now - p.last_lifetime_close < gap)
        return false;
    p.last_lifetime_close = now;
    s.close("server lifetime over");
    return true;
}

}  // namespace

bool pool_close_if_life_over(Server& s, usec_t now) {
    usec_t lifetime = s.pool->server_lifetime();
    if (now - s.connect_time < lifetime)
        return false;
    return close_if_spaced(s, now, lifetime);
}

void pool_trim(Pool& p) {
    if (p.pool_size() <= 0)
        return;
    size_t allowed = static_cast<size_t>(p.pool_size() + p.reserve_size());
    while (p.server_count() > allowed) {
        Server* s = p.used.front();
        if (!s)
            s = p.idle.front();
        if (!s)
            return;
        s->close("too many servers in the pool");
    }
}

void pool_ensure_min(Pool& p) {
    int min = p.min_size();
    if (min <= 0 || p.db->paused || rt().shutting_down || login_failing(p))
        return;
    // Like PgBouncer: only for forced-user databases or pools that have clients.
    if (p.db->entry.user.empty() && p.active.empty() && p.waiting.empty())
        return;
    while (static_cast<int>(p.server_count()) < min && can_open_server(p, false) &&
           !login_failing(p))
        launch_server(p);
}

void pool_server_gone(Pool& p) {
    pool_launch_if_needed(p);
}

void pool_free_all() {
    Runtime& r = g_rt;
    auto drop_client = [](Client& c) {
        c.server = nullptr;
        c.sb.close();
        set_state(c, ClientState::Closing);
    };
    auto drop_server = [](Server& s) {
        s.client = nullptr;
        s.sb.close();
        set_state(s, ServerState::Closing);
    };
    r.login_clients.for_each(drop_client);
    for (auto& p : r.pools) {
        p->waiting.for_each(drop_client);
        p->active.for_each(drop_client);
        p->login.for_each(drop_server);
        p->idle.for_each(drop_server);
        p->active_servers.for_each(drop_server);
        p->used.for_each(drop_server);
    }
    cancel_free_all();
    free_closed();
    g_pool_index.clear();
    r.pools.clear();
    r.databases.clear();
    r.users.clear();
    r.cancel_map.clear();
}

void register_cancel_key(Client& c) {
    for (;;) {
        uint8_t b[8];
        random_bytes(b, sizeof(b));
        c.cancel_pid = read_be32(b) & 0x7fffffffu;
        c.cancel_key = read_be32(b + 4);
        if (c.cancel_pid == 0)
            continue;
        if (!find_cancel_key(c.cancel_pid, c.cancel_key)) {
            g_rt.cancel_map.insert(c);
            return;
        }
    }
}

bool register_cancel_key_as(Client& c, uint32_t pid, uint32_t key) {
    if (pid == 0 || find_cancel_key(pid, key))
        return false;
    c.cancel_pid = pid;
    c.cancel_key = key;
    g_rt.cancel_map.insert(c);
    return true;
}

void unregister_cancel_key(Client& c) {
    if (c.cancel_pid == 0)
        return;
    g_rt.cancel_map.remove(c);
    c.cancel_pid = 0;
}

Client* find_cancel_key(uint32_t pid, uint32_t key) {
    return g_rt.cancel_map.find(cancel_key_hash(pid, key), [&](const Client& c) {
        return c.cancel_pid == pid && c.cancel_key == key;
    });
}

}  // namespace sluice
