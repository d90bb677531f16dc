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

// Installs the console's hooks into the client layer (g_admin_hooks) and starts the timer
// that answers waiting commands (PAUSE, SUSPEND, WAIT_CLOSE) and keeps paused pools drained.
// Call once at start-up, after rt().base exists.
void admin_init(const AdminProcess& proc);
// Frees the timer and forgets waiting commands (at exit, before the event base is freed).
void admin_stop();

}  // namespace sluice
