// Operator control of pools (PAUSE, RESUME, SUSPEND, KILL, RECONNECT, KILL_CLIENT): flags on
// databases, closing server lists, and the counts a waiting console command polls.
#include "sluice/pool/control.h"

#include <algorithm>
#include <unordered_set>

#include "sluice/net/listener.h"
#include "sluice/net/sockets.h"
#include "sluice/pool/pool.h"
#include "sluice/util/log.h"

namespace sluice {
namespace {

PauseMode& g_mode = detail::g_pause_mode;
std::unordered_set<const Database*> g_db_paused;  // PAUSE db / KILL db
usec_t g_suspend_start = 0;
bool g_drain_queue = false;  // this SUSPEND serves queued clients first (control_suspend)

void apply_flags() {
    bool stopped = control_pools_stopped();
    for (auto& [name, db] : rt().databases) {
        if (db->admin)
            continue;
        db->paused = stopped || g_db_paused.count(db.get()) != 0;
    }
}

// Calls f(Pool&) for each pool of db (nullptr = every database), never the console's.
template <typename F> void for_pools(const Database* db, F&& f) {
    for (auto& p : rt().pools) {
        if (p->db->admin || (db && p->db != db))
            continue;
        f(*p);
    }
}

// Every client and server socket outside the console, for SUSPEND.
template <typename FC, typename FS> void for_sockets(FC&& fc, FS&& fs) {
    rt().login_clients.for_each([&](Client& c) {
        if (!c.admin)
            fc(c);
    });
    for_pools(nullptr, [&](Pool& p) {
        p.active.for_each(fc);
        p.waiting.for_each(fc);
        p.for_each_server(fs);
    });
}

// Queued clients of p get its idle servers first, then new connections.
void wake_pool(Pool& p) {
    size_t budget = p.idle.size();
    while (budget-- > 0 && !p.waiting.empty() && !p.idle.empty())
        pool_server_ready(*p.idle.front());
    pool_launch_if_needed(p);
}

void resume_sockets() {
    int n = settings().sbuf_loopcnt;
    for_sockets([n](Client& c) { c.sb.unsuspend(n); }, [n](Server& s) { s.sb.unsuspend(n); });
}

bool console_in_use() {
    for (auto& p : rt().pools)
        if (p->db->admin && !p->active.empty())
            return true;
    return false;
}

bool has_unsent(const SBuf& sb) {
    return sb.has_output() || sb.has_deferred() || sb.pending_bytes() > 0;
}

}  // namespace

namespace detail {
PauseMode g_pause_mode = PauseMode::None;
}

bool control_pools_stopped() noexcept {
    return g_mode == PauseMode::Pause || (g_mode == PauseMode::Suspend && !g_drain_queue);
}

void control_pause_all() {
    if (g_mode != PauseMode::None)
        return;
    g_mode = PauseMode::Pause;
    apply_flags();
    control_tick();
}

bool control_resume_all() {
    PauseMode old = g_mode;
    if (old == PauseMode::None)
        return false;
    g_mode = PauseMode::None;
    apply_flags();
    if (old == PauseMode::Suspend) {
        listeners_pause(false);
        resume_sockets();
    }
    for_pools(nullptr, wake_pool);
    return true;
}

namespace {

// Whether a client may stop being read now. Serving the queue first (g_drain_queue), a
// queued client goes on (a server given to it reads again: pool.cpp's assign), and so does
// one inside a transaction while others queue for its pool: its server is released only when
// the transaction ends.
bool client_may_stop(const Client& c) {
    if (c.state == ClientState::Waiting)
        return !g_drain_queue;
    if (c.state != ClientState::Active)
        return true;
    if (!c.sb.at_rest())
        return false;
    return !g_drain_queue || !c.server || c.pool->mode() == PoolMode::Session ||
           c.pool->waiting.empty();
}

// As PgBouncer, a connection in use stops only once it is quiet: nothing held here, no message
// half through, and for a server only replies its client gets as they are (nothing sluice
// asked on its own). Until then it goes on, so that a suspended pooler holds no state a new
// process (online restart) could not take over from the sockets. Connections that are not in
// use stop at once, except servers logging in or running their reset or check query: those
// finish first, so that they move as idle servers.
void pause_quiet_sockets() {
    for_sockets(
        [](Client& c) {
            if (!c.sb.suspended() && client_may_stop(c))
                c.sb.suspend();
        },
        [](Server& s) {
            if (s.sb.suspended())
                return;
            switch (s.state) {
            case ServerState::Login:
            case ServerState::Used:
                return;  // its login or reset/check query finishes first (then it is idle)
            case ServerState::Active:
                // A linked server waits for its client: what the client still holds may be
                // for it.
                if ((s.client && !s.client->sb.suspended()) || !s.quiet())
                    return;
                break;
            case ServerState::Idle:
            case ServerState::Closing:
                break;
            }
            s.sb.suspend();
        });
}

}  // namespace

void control_suspend(bool carry_queued) {
    g_mode = PauseMode::Suspend;
    g_drain_queue = !carry_queued;
    g_suspend_start = mono_now();
    apply_flags();
    listeners_pause(true);  // as PgBouncer: no new connections until RESUME
    pause_quiet_sockets();
}

void control_client_quiet(Client& c) {
    if (!c.admin && !c.sb.suspended() && client_may_stop(c))
        c.sb.suspend();
}

bool control_suspend_done() {
    bool late = mono_now() - g_suspend_start >= settings().suspend_timeout;
    if (late && g_drain_queue) {
        // The queue was not served in time: its clients go, as in PgBouncer (their requests
        // could not move), and a client inside a transaction stops where it is instead.
        for_pools(nullptr, [](Pool& p) {
            p.waiting.for_each([](Client& c) { c.fatal("08P01", "suspend_timeout"); });
        });
        g_drain_queue = false;
        apply_flags();
    }
    pause_quiet_sockets();
    if (late) {
        // Servers first, as PgBouncer: one cut off in the middle of a reply takes its client
        // along, whichever of the two holds the bytes not sent yet.
        for_sockets([](Client&) {},
                    [](Server& s) {
                        if (!s.sb.suspended() || has_unsent(s.sb))
                            s.close_and_fail_client("suspend_timeout");
                    });
    }
    bool done = true;
    for_sockets(
        [&](Client& c) {
            if (c.sb.suspended() && !has_unsent(c.sb))
                return;
            if (late)
                c.fatal("08P01", "suspend_timeout");
            else
                done = false;
        },
        [&](Server& s) {
            if (s.sb.suspended() && !has_unsent(s.sb))
                return;
            if (late)  // its client, cut off in the middle of a reply, goes too
                s.close_and_fail_client("suspend_timeout");
            else
                done = false;
        });
    return done;
}

void control_pause_db(Database& db) {
    g_db_paused.insert(&db);
    apply_flags();
    control_tick();
}

bool control_resume_db(Database& db) {
    if (g_db_paused.erase(&db) == 0)
        return false;
    apply_flags();
    if (!db.paused)
        for_pools(&db, wake_pool);
    return true;
}

bool control_db_paused(const Database& db) noexcept {
    return g_db_paused.count(&db) != 0;
}

int control_paused_db_count() noexcept {
    return static_cast<int>(g_db_paused.size());
}

int control_busy_servers(const Database* db) noexcept {
    size_t n = 0;
    for_pools(db, [&](Pool& p) { n += p.active_servers.size() + p.used.size() + p.login.size(); });
    return static_cast<int>(n);
}

int control_close_needed_servers(const Database* db) noexcept {
    int n = 0;
    for_pools(db, [&](Pool& p) {
        p.for_each_server([&](Server& s) {
            if (s.close_needed)
                ++n;
        });
    });
    return n;
}

void control_drop_db(Database& db) {
    const char* reason = "database removed";
    for_pools(&db, [&](Pool& p) {
        p.waiting.for_each([&](Client& c) { c.fatal("08P01", "%s", reason); });
        p.active.for_each([&](Client& c) { c.fatal("08P01", "%s", reason); });
        p.for_each_server([&](Server& s) { s.close(reason); });
    });
    pool_drop_pools_of(db);  // as PgBouncer's kill_pool(): SHOW POOLS and SHOW STATS rows go
}

void control_kill_db(Database& db) {
    g_db_paused.insert(&db);
    apply_flags();
    control_drop_db(db);
}

// The servers of p that match: idle ones close now (with idle_reason), the others when next
// released ("close_needed").
template <typename F> int retire_servers(Pool& p, const char* idle_reason, F&& match) {
    int n = 0;
    p.idle.for_each([&](Server& s) {
        if (match(s)) {
            s.close(idle_reason);
            ++n;
        }
    });
    p.for_each_server([&](Server& s) {
        if (match(s) && !s.close_needed) {
            s.close_needed = true;
            ++n;
        }
    });
    return n;
}

void control_reconnect_db(Database& db) {
    // PgBouncer's reasons: idle servers "database configuration changed" at once.
    for_pools(&db, [](Pool& p) {
        retire_servers(p, "database configuration changed", [](Server&) { return true; });
        // New clients are welcomed with the values of a login after this one (the pool's
        // reset of its servers is often for an ALTER ROLE / DATABASE ... SET), not those
        // of the pool's earlier logins.
        p.have_params = false;
    });
}

void control_retire_address(const std::string& host, const PeerAddr& gone) {
    int n = 0;
    for_pools(nullptr, [&](Pool& p) {
        std::vector<std::string> hosts = hosts_of(p.db->entry.host);
        if (std::find(hosts.begin(), hosts.end(), host) != hosts.end())
            n += retire_servers(p, "obsolete connection",
                                [&](Server& s) { return same_ip(s.addr, gone); });
    });
    log_info("DNS: %s no longer resolves to %s; %d server connection(s) to it retired",
             host.c_str(), gone.host().c_str(), n);
}

bool control_kill_client(uint64_t id) {
    for (auto& p : rt().pools) {
        Client* found = nullptr;
        auto match = [&](Client& c) {
            if (!found && c.id == id)
                found = &c;
        };
        p->active.for_each(match);
        p->waiting.for_each(match);
        if (found) {
            found->fatal("08P01", "admin forced disconnect");
            return true;
        }
    }
    return false;
}

void control_tick() {
    if (g_mode == PauseMode::None && g_db_paused.empty())
        return;  // nothing paused: every flag is already false, new databases start so too
    apply_flags();
    if (g_mode == PauseMode::Suspend) {
        if (!console_in_use()) {
            log_info("admin disappeared when suspended, doing RESUME");
            static_cast<void>(control_resume_all());
        }
        return;
    }
    // A paused database keeps only the servers still linked to clients; the rest close
    // now, and those when their clients release them (pool_server_ready parks them idle).
    for_pools(nullptr, [](Pool& p) {
        if (!p.db->paused)
            return;
        p.idle.for_each([](Server& s) { s.close("pause mode"); });
        p.used.for_each([](Server& s) { s.close("pause mode"); });
        p.login.for_each([](Server& s) { s.close("pause mode"); });
    });
}

}  // namespace sluice
