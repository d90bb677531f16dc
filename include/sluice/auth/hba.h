// auth_hba_file and auth_ident_file: PgBouncer's subset of PostgreSQL's pg_hba.conf and
// pg_ident.conf. Parsing (a broken line is logged with file:line and skipped, as PgBouncer
// does) and matching a connection (ConnInfo + database + user) to the first rule that fits.
// Nothing here knows about sockets or pools.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/auth/conn_info.h"

namespace sluice {

// A client authentication method, as an hba line (or the global auth_type) names it.
enum class AuthMethod : uint8_t {
    Trust,
    Reject,
    Md5,       // switches to SCRAM for users whose secret is a SCRAM secret
    Password,  // cleartext ("plain" as an auth_type)
    ScramSha256,
    Cert,  // TLS client certificate CN = user name (or mapped)
    Peer,  // unix socket peer's OS user name = user name (or mapped)
    Ldap,  // parsed so the line is not skipped; sluice has no LDAP: logins are rejected
    Pam,   // auth_type = pam only (PgBouncer 1.18 has no hba pam): cleartext, checked by PAM
};
const char* auth_method_name(AuthMethod m) noexcept;  // "trust", "scram-sha-256", ...

// One pg_ident-style file: "mapname system-user db-user" lines; db-user may be `all`.
// No regular expressions, no includes (PgBouncer's subset).
class IdentFile {
public:
    struct Mapping {
        std::string map;
        std::string system_user;
        std::string db_user;  // unused when all_db_users
        bool all_db_users = false;
    };

    // Parses file contents; `source` names the file in log lines. Adds to what is there.
    void parse(std::string_view text, std::string_view source);
    // Replaces the contents with the file at `path`. False (contents cleared, err set to the
    // strerror() text) when it cannot be read.
    [[nodiscard]] bool load(const std::string& path, std::string& err);
    bool has_map(std::string_view map) const noexcept;
    // May the OS/certificate user `system_user` log in as `db_user` under map `map`?
    bool allows(std::string_view map, std::string_view system_user,
                std::string_view db_user) const noexcept;
    size_t size() const noexcept { return mappings_.size(); }
    void clear() noexcept { mappings_.clear(); }

private:
    std::vector<Mapping> mappings_;  // file order
};

// The database or user column of a rule.
struct HbaNames {
    bool all = false;
    bool sameuser = false;     // database column only: database name = user name
    bool replication = false;  // database column only: matches physical replication only
    std::vector<std::string> names;
};

enum class HbaConnType : uint8_t {
    Local,      // unix socket
    Host,       // TCP, with or without TLS
    HostSsl,    // TCP with TLS
    HostNoSsl,  // TCP without TLS
};

struct HbaRule {
    HbaConnType type = HbaConnType::Local;
    HbaNames db;
    HbaNames user;
    bool addr_all = false;           // address column `all`
    int family = 0;                  // AF_INET / AF_INET6 (host* lines without `all`)
    std::array<uint8_t, 16> addr{};  // network byte order
    std::array<uint8_t, 16> mask{};
    AuthMethod method = AuthMethod::Reject;
    std::string map;           // map= option ("" = none); exists in the ident file
    std::string ldap_options;  // rest of the line after `ldap`
    size_t line = 0;           // line number in the hba file
};

class HbaFile {
public:
    // Parses file contents. `source` is the file's path: it names the file in log lines and
    // `@file` references are resolved against its directory. `ident` is the loaded ident
    // file: a rule whose map= names no map in it is skipped (PgBouncer does the same).
    void parse(std::string_view text, const std::string& source, const IdentFile& ident);
    // Replaces the rules with the file at `path`. False (no rules left, so every connection
    // is rejected, as in PgBouncer; err = strerror() text) when it cannot be read.
    [[nodiscard]] bool load(const std::string& path, const IdentFile& ident, std::string& err);
    // The first rule matching the connection, or nullptr ("no authentication method is
    // found"). The pointer is valid until the next parse/load/clear.
    const HbaRule* match(const ConnInfo& ci, std::string_view db,
                         std::string_view user) const noexcept;
    size_t size() const noexcept { return rules_.size(); }
    const std::vector<HbaRule>& rules() const noexcept { return rules_; }
    void clear() noexcept { rules_.clear(); }

private:
    std::vector<HbaRule> rules_;
};

// Start-up and RELOAD with auth_type=hba: loads auth_ident_file (if set), then
// auth_hba_file into `hba`/`ident`, replacing what they held. Problems are logged
// ("could not open hba config file ..."); a file that cannot be read leaves that part empty,
// so without rules every login is rejected, as in PgBouncer.
void load_hba_files(const std::string& hba_path, const std::string& ident_path, HbaFile& hba,
                    IdentFile& ident);

// The name of the OS user with this uid (getpwuid_r). False when there is none.
[[nodiscard]] bool os_user_name(uint32_t uid, std::string& out);

}  // namespace sluice
