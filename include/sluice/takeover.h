// Online restart (-R): the new process's half of PgBouncer's takeover. It logs in to the
// running instance's console over the unix socket (user "pgbouncer", the same OS user), sends
// SUSPEND, then SHOW FDS, whose rows arrive with their sockets attached, rebuilds listeners,
// clients and servers from them, and sends SHUTDOWN. The old process's half is SHOW FDS
// (admin/show.cpp) and its exit while suspended (sockets closed, nothing sent on them).
#pragma once

#include <string>
#include <string_view>

#include "sluice/config/config.h"
#include "sluice/net/listener.h"

namespace sluice {

struct Pool;

// The application_name of the new process's console session. It tells an old sluice that
// this process reads pending_input (SHOW FDS), so SUSPEND may leave queued clients holding
// their requests; without it (PgBouncer taking over, an operator) SUSPEND serves them first.
inline constexpr std::string_view kTakeoverAppName = "sluice takeover";

// Connects to the running instance's unix socket. False (logged: "old process not found")
// when there is none; the caller then starts normally.
bool takeover_connect(const Settings& st);
// SUSPEND and SHOW FDS: the rows and their sockets are kept for takeover_adopt(). Blocking,
// before the event loop exists (and before daemonizing: the sockets survive the fork). Any
// failure ends the process (the old one resumes when this session goes).
void takeover_fetch();
// Listeners, clients and servers from the rows (the loop, configuration objects and console
// must exist). Ends the process when the listeners cannot be taken over.
void takeover_adopt(const ListenConfig& lc, AcceptFn accept);
// SHUTDOWN to the old process; returns once it is gone (its pidfile removed).
void takeover_finish(const std::string& pidfile);

// A pool's welcome parameters (the ParameterStatus pairs of its first server login) as the
// text of SHOW FDS's pool_parameters column, "" when the pool has none yet; and back into a
// pool that has none (false: unreadable, the pool is left as it was). Between sluice
// processes only: with them, a new client of a taken-over pool needs no fresh server login.
std::string pool_params_export(const Pool& p);
bool pool_params_import(std::string_view text, Pool& p);

}  // namespace sluice
