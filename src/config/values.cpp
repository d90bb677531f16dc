// Scalar value parsers for the config file: integers, flags, seconds, enum names.
// Locale-independent (std::from_chars), never throwing.
#include "values.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <system_error>

namespace sluice::cfgval {

namespace {

char lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// Digits only (no sign, no prefix) in `base`, up to INT64_MAX; everything must be consumed.
bool parse_digits(std::string_view text, int base, int64_t& out) noexcept {
    if (text.empty() || text.front() == '-' || text.front() == '+')
        return false;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out, base);
    return ec == std::errc() && end == text.data() + text.size() && out >= 0;
}

// Strips one leading sign; returns true when it was '-'.
bool take_sign(std::string_view& text) noexcept {
    if (text.empty() || (text.front() != '-' && text.front() != '+'))
        return false;
    bool neg = text.front() == '-';
    text.remove_prefix(1);
    return neg;
}

bool parse_signed(std::string_view text, int base, int64_t& out) noexcept {
    bool neg = take_sign(text);
    int64_t v = 0;
    if (!parse_digits(text, base, v))
        return false;
    out = neg ? -v : v;
    return true;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size())
        return false;
    for (size_t i = 0; i < a.size(); i++) {
        if (lower(a[i]) != lower(b[i]))
            return false;
    }
    return true;
}

bool parse_int_auto(std::string_view text, int64_t& out) noexcept {
    // Same bases as strtol(value, &end, 0), which PgBouncer uses for every int setting.
    bool neg = take_sign(text);
    int base = 10;
    if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        base = 16;
        text.remove_prefix(2);
    } else if (text.size() > 1 && text[0] == '0') {
        base = 8;
        text.remove_prefix(1);
    }
    int64_t v = 0;
    if (!parse_digits(text, base, v))
        return false;
    out = neg ? -v : v;
    return true;
}

bool parse_int_dec(std::string_view text, int64_t& out) noexcept {
    return parse_signed(text, 10, out);
}

bool parse_int_oct(std::string_view text, int64_t& out) noexcept {
    return parse_signed(text, 8, out);
}

bool parse_bool(std::string_view text, bool& out) noexcept {
    static constexpr std::string_view kTrue[] = {"yes", "on", "true"};
    static constexpr std::string_view kFalse[] = {"no", "off", "false"};
    for (std::string_view w : kTrue) {
        if (iequals(text, w)) {
            out = true;
            return true;
        }
    }
    for (std::string_view w : kFalse) {
        if (iequals(text, w)) {
            out = false;
            return true;
        }
    }
    int64_t v = 0;
    if (!parse_int_auto(text, v))
        return false;
    out = v != 0;
    return true;
}

bool parse_secs(std::string_view text, usec_t& out) noexcept {
    if (!text.empty() && text.front() == '+')
        text.remove_prefix(1);
    // PgBouncer reads durations with strtod, which also takes a hexadecimal number
    // (0x10 = 16 s). Its inf and nan are refused: no duration means them.
    bool hex = text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X');
    if (hex)
        text.remove_prefix(2);
    double v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v,
                                     hex ? std::chars_format::hex : std::chars_format::general);
    if (ec != std::errc() || end == text.data())
        return false;
    std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
    double scale = 1e6;
    if (unit.empty() || iequals(unit, "s"))
        scale = 1e6;
    else if (iequals(unit, "ms"))
        scale = 1e3;
    else if (iequals(unit, "min"))
        scale = 60e6;
    else
        return false;
    if (!std::isfinite(v) || v < 0 || v * scale > kMaxSecs * 1e6)
        return false;
    out = static_cast<usec_t>(std::llround(v * scale));
    return true;
}

std::string format_secs(usec_t usec) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%g", static_cast<double>(usec) / 1e6);
    return buf;
}

bool parse_int_in_range(std::string_view text, IntParser parse, int64_t lo, int64_t hi,
                        int64_t& out, std::string& err) {
    int64_t v = 0;
    if (!parse(text, v)) {
        err = "invalid value \"" + std::string(text) + "\": not an integer";
        return false;
    }
    if (v < lo || v > hi) {
        err = "invalid value \"" + std::string(text) + "\": out of range " + std::to_string(lo) +
              ".." + std::to_string(hi);
        return false;
    }
    out = v;
    return true;
}

}  // namespace sluice::cfgval
