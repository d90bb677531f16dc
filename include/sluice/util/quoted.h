// Text quoted SQL-style: `quote` ... `quote`, a doubled quote inside standing for one
// (identifiers "a ""b""", literals 'it''s'). Used by every reader of such tokens: the hba and
// auth files, the console's commands, connection strings, DEALLOCATE.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace sluice {

// Reads the quoted token starting at s[pos] == quote into `out` (replacing it). On success
// pos is just past the closing quote; false (pos unchanged) when the quote is never closed.
[[nodiscard]] inline bool read_quoted(std::string_view s, size_t& pos, std::string& out,
                                      char quote = '"') {
    out.clear();
    size_t i = pos + 1;
    for (;;) {
        size_t q = s.find(quote, i);
        if (q == std::string_view::npos)
            return false;
        out.append(s.substr(i, q - i));
        if (q + 1 < s.size() && s[q + 1] == quote) {
            out.push_back(quote);
            i = q + 2;
            continue;
        }
        pos = q + 1;
        return true;
    }
}

}  // namespace sluice
