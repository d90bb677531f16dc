// Shared by the console's files (admin.cpp: parsing and process commands; show.cpp: the SHOW
// result sets; metrics.cpp: the OpenMetrics endpoint). Not a public header.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <initializer_list>

#include "sluice/pool/pool.h"

namespace sluice::admin {

// Column types of console result sets (RowDescription type OIDs, as PgBouncer's pktbuf).
enum class Col : uint32_t {
    Text = 25,
    Int4 = 23,
    Int8 = 20,
    Numeric = 1700,
    Bytea = 17,
};

struct ColDef {
    const char* name;
    Col type;
};

// Writes one result set: the RowDescription at construction, then rows field by field.
// Every row must get exactly as many fields as there are columns.
class ResultWriter {
public:
    ResultWriter(std::string& out, std::span<const ColDef> cols);
    ResultWriter(std::string& out, std::initializer_list<ColDef> cols)
        : ResultWriter(out, std::span<const ColDef>(cols.begin(), cols.size())) {}

    void begin_row();
    void text(std::string_view v);
    void text_or_null(const char* v);  // nullptr = SQL NULL
    void null();
    void integer(int64_t v);
    void unsigned_integer(uint64_t v);  // numeric columns, and int8 where PgBouncer prints %llu
    void end_row();

private:
    std::string& out_;
    size_t ncols_;
    size_t fields_ = 0;
    size_t row_start_ = 0;
};

// The session is a takeover (user pgbouncer over the unix socket, same OS user): sockets may
// be handed to its process.
bool takeover_session(const Client& c);
// A takeover session of a new sluice (kTakeoverAppName), which carries what queued clients
// hold (SHOW FDS's pending_input); PgBouncer's does not.
bool takeover_carries_queue(const Client& c);

// ErrorResponse with ERROR severity (the session stays); logged like PgBouncer's admin_error.
[[gnu::format(printf, 3, 4)]] void write_admin_error(std::string& out, const char* sqlstate,
                                                     const char* fmt, ...);
void write_complete(std::string& out, std::string_view tag);

// SHOW <what> (what is one word, any case). Writes the whole reply except ReadyForQuery.
// False = no such SHOW (the caller answers "invalid command").
bool run_show(Client& c, std::string_view what, std::string& out);

// The driver-probe parameters the console fakes (client_encoding, datestyle ...).
bool is_fake_param(std::string_view name) noexcept;

// Pools ordered like PgBouncer's pool_list: by database name, then user name. `out` is
// cleared and refilled (keep it around to reuse its capacity).
void sorted_pools(std::vector<Pool*>& out);
// Databases by name, without those removed by a reload.
void sorted_databases(std::vector<Database*>& out);
// A monotonic timestamp as the wall-clock time PgBouncer prints: "2025-03-01 12:00:00 UTC".
std::string format_time(usec_t mono);
// Case-insensitive equality of ASCII words.
bool iequals(std::string_view a, std::string_view b) noexcept;

}  // namespace sluice::admin
