// Scalar value parsers shared by the [pgbouncer] settings table and the [databases]/[users]/
// [peers] entry parsers. Internal to src/config; none of these throw or allocate.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "sluice/config/config.h"

namespace sluice::cfgval {

// ASCII case-insensitive equality.
bool iequals(std::string_view a, std::string_view b) noexcept;

// An integer the way PgBouncer's settings read it (strtol base 0): optional sign, then
// decimal, 0x-prefixed hex, or 0-prefixed octal. The whole text must be consumed.
[[nodiscard]] bool parse_int_auto(std::string_view text, int64_t& out) noexcept;

// A plain decimal integer (connection-string values); the whole text must be consumed.
[[nodiscard]] bool parse_int_dec(std::string_view text, int64_t& out) noexcept;

// An octal integer with or without the leading 0 ("0777", "777", "0660").
[[nodiscard]] bool parse_int_oct(std::string_view text, int64_t& out) noexcept;

// 0/1 or any integer (non-zero = on, as PgBouncer's int-typed flags), or
// yes/no/on/off/true/false in any case.
[[nodiscard]] bool parse_bool(std::string_view text, bool& out) noexcept;

// Seconds as a non-negative float ("15", "0.5", "1e3"), optionally with a unit suffix
// "s", "ms" or "min"; rounded to microseconds. Rejects nan/inf and values over kMaxSecs.
inline constexpr double kMaxSecs = 1e12;
[[nodiscard]] bool parse_secs(std::string_view text, usec_t& out) noexcept;

// Formats microseconds as PgBouncer's SHOW CONFIG does: seconds with printf "%g".
std::string format_secs(usec_t usec);

// Reads an integer with parse (one of the above) and checks lo <= v <= hi. On failure sets
// err to 'invalid value "text": ...' naming the accepted range.
using IntParser = bool (*)(std::string_view, int64_t&) noexcept;
[[nodiscard]] bool parse_int_in_range(std::string_view text, IntParser parse, int64_t lo,
                                      int64_t hi, int64_t& out, std::string& err);

}  // namespace sluice::cfgval
