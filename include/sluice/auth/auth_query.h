// auth_query on the wire: the extended-protocol batch that runs it on a server connection
// of the auth pool, and reading its answer (user name, password or secret). The connection
// handling (which server, suspending the client) is the client layer's (client_auth.cpp).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace sluice {

// The frontend messages write_auth_query() emits, in order (for the request tracker).
inline constexpr uint8_t kAuthQueryMessages[] = {'P', 'B', 'D', 'E', 'S'};

// Appends Parse (unnamed statement, parameter type left to the server), Bind (unnamed
// portal, `user` as the one text parameter $1), Describe (portal), Execute (all rows) and
// Sync: what PgBouncer sends for auth_query.
void write_auth_query(std::string& out, std::string_view query, std::string_view user);

// The answer, fed one backend message at a time.
struct AuthQueryReply {
    enum class State : uint8_t {
        Running,  // more replies to come
        Done,     // ReadyForQuery arrived; see found / secret
        Failed,   // bad answer or server error; `error` says what (the server is unusable)
    };
    State state = State::Running;
    std::string error;
    bool found = false;          // a row with a non-NULL user name (the last row counts)
    bool null_password = false;  // ... whose password column is NULL: no password works
    std::string user;            // user name column
    std::string secret;          // password column: plain, md5 or SCRAM secret

    // Feeds one complete backend message (type and body without the 5-byte header).
    // ParseComplete, BindComplete, NoData, CommandComplete, EmptyQueryResponse, Notice and
    // ParameterStatus are accepted silently; RowDescription and DataRow must have two
    // columns; ErrorResponse fails (with the server's message); ReadyForQuery ends it.
    void on_reply(uint8_t type, std::span<const uint8_t> body);
};

}  // namespace sluice
