// The admin console: the virtual database "pgbouncer" (SHOW / SET / PAUSE / RELOAD ...).
// doc/admin.md lists the commands and where sluice differs from PgBouncer.
#pragma once

namespace sluice {

// How a RELOAD went (the failures are already logged).
enum class ReloadResult {
    Ok,
    Failed,     // the config did not load: nothing changed
    TlsFailed,  // applied, except the new TLS settings: the previous contexts stay
};

// What the console needs from the process (main owns config reloads and shutdown).
struct AdminProcess {
    // RELOAD (as SIGHUP): re-reads the config, auth_file and hba file.
    ReloadResult (*reload)() = nullptr;
    // SHUTDOWN WAIT_FOR_CLIENTS (true) / WAIT_FOR_SERVERS (false), as SIGTERM / SIGINT.
    void (*shutdown)(bool wait_for_clients) = nullptr;
    // After a successful SET: re-apply settings main caches (log level, logfile, syslog).
    void (*settings_changed)() = nullptr;
};

// Installs the console's hooks into the client layer (g_admin_hooks) and creates the timer
// that answers waiting commands (PAUSE, SUSPEND, WAIT_CLOSE) and keeps paused pools drained.
// Call once at start-up, after rt().base exists.
void admin_init(const AdminProcess& proc);
// Starts that timer (every 100 ms) while it has work: a command waiting for its answer, or a
// pause, SUSPEND or paused database in force; stops it otherwise, so that an idle pooler is
// not woken for it. Called by the console after each command, by the timer itself, and by
// whoever else pauses (SIGUSR1, a shutdown).
void admin_tick_update();
// Frees the timer and forgets waiting commands (at exit, before the event base is freed).
void admin_stop();

}  // namespace sluice
