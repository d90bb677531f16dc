// auth_file (userlist.txt): `"name" "secret"` per line, "" escapes a quote, rest ignored.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>

namespace sluice {

// name -> secret (plain password, md5 secret or SCRAM secret).
using UserList = std::unordered_map<std::string, std::string>;

// Loads `path`. A line that does not parse is logged with file:line and skipped (PgBouncer
// does the same); returns false only when the file cannot be read (err says why).
[[nodiscard]] bool load_userlist(const std::string& path, UserList& out, std::string& err);
// Parses file contents (for tests); `source` names the file in log lines.
void parse_userlist(std::string_view text, std::string_view source, UserList& out);

}  // namespace sluice
