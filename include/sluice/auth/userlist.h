// auth_file (userlist.txt): `"name" "secret"` per line, "" escapes a quote, rest ignored.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>

namespace sluice {

// name -> secret (plain password, md5 secret or SCRAM secret).
using UserList = std::unordered_map<std::string, std::string>;

// Loads `path`. A line that does not parse is logged with file:line and skipped (PgBouncer
// stops loading at the first broken line instead); returns false only when the file cannot
// be read (err is the strerror() text, without the path).
// On success `out` is replaced by the file's users; on failure it is left untouched.
[[nodiscard]] bool load_userlist(const std::string& path, UserList& out, std::string& err);
// Parses file contents (for tests); `source` names the file in log lines. Adds to `out`;
// a name listed twice keeps its last secret. Blank lines and lines whose first non-blank
// character is ';' or '#' are skipped.
void parse_userlist(std::string_view text, std::string_view source, UserList& out);

}  // namespace sluice
