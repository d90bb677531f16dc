// The admin console: the virtual database "pgbouncer" (SHOW / SET / PAUSE / RELOAD ...).
#pragma once

namespace sluice {

// Installs the console's hooks into the client layer (g_admin_hooks). Call once at start-up.
void admin_init();

}  // namespace sluice
