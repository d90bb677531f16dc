// Opt-in OpenMetrics endpoint (sluice-only, not in PgBouncer): GET /metrics on
// metrics_listen_addr:metrics_listen_port serves pool gauges, per-database counters and
// latency histograms in the OpenMetrics text format. doc/admin.md lists the metrics.
#pragma once

#include <string>

namespace sluice {

// Starts the HTTP listener on rt().base when metrics_listen_addr is set (otherwise does
// nothing and returns true). False = an address could not be bound (err says which).
[[nodiscard]] bool metrics_start(std::string& err);
// Closes the listener (at exit, before the event base is freed).
void metrics_stop();

// Appends the body of one scrape to `out`: OpenMetrics text ending in "# EOF". Walks pools and
// databases, never the client or server lists.
void metrics_write(std::string& out);

}  // namespace sluice
