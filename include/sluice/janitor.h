// Periodic upkeep: timeouts of clients and servers, pool sizes, shutdown progress.
#pragma once

namespace sluice {

// Starts the maintenance timer on rt().base.
void janitor_start();
void janitor_stop();
// One maintenance pass (also run by tests).
void janitor_run();

}  // namespace sluice
