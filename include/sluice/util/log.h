// Logging in PgBouncer's line format:
//   2025-03-01 12:00:00.123 UTC [4711] LOG C-0x5581a8c0e9d0: db/user@127.0.0.1:50312 message
// Lines go to stderr (unless quiet) and to the logfile when one is open.
#pragma once

#include <cstdarg>
#include <cstdint>
#include <string>

namespace sluice {

enum class LogLevel : uint8_t {
    Fatal,
    Error,
    Warning,
    Log,
    Debug,
    Noise,
};

struct LogConfig {
    int verbose = 0;        // 0: up to LOG; 1: DEBUG; 2+: NOISE
    bool quiet = false;     // no stderr output
    std::string logfile;    // "" = none
    bool syslog = false;
    std::string syslog_ident = "pgbouncer";
    std::string syslog_facility = "daemon";
};

// Applies new settings; (re)opens the logfile. Returns false when the file cannot be opened
// (log_open_error() says why); logging to stderr continues.
[[nodiscard]] bool log_configure(const LogConfig& cfg);
const char* log_open_error() noexcept;
// The process forked (-d): the cached pid in the line prefix must be read again.
void log_after_fork() noexcept;
// Reopens the logfile (SIGHUP / RELOAD).
void log_reopen();
bool log_enabled(LogLevel level) noexcept;

// Something a log line can be prefixed with: "C-0x...: db/user@addr:port ".
// Implemented by client and server connections; the log module calls it only while writing.
class LogSubject {
public:
    // Writes the prefix (without trailing space) into buf; returns the length used.
    virtual size_t log_prefix(char* buf, size_t size) const noexcept = 0;

protected:
    ~LogSubject() = default;
};

[[gnu::format(printf, 2, 3)]] void log_msg(LogLevel level, const char* fmt, ...) noexcept;
[[gnu::format(printf, 3, 4)]] void slog_msg(LogLevel level, const LogSubject* who, const char* fmt,
                                            ...) noexcept;
void vslog_msg(LogLevel level, const LogSubject* who, const char* fmt, va_list ap) noexcept;

// Logs at FATAL and exits with status 1.
[[noreturn, gnu::format(printf, 1, 2)]] void die(const char* fmt, ...) noexcept;

}  // namespace sluice

#define log_error(...) ::sluice::log_msg(::sluice::LogLevel::Error, __VA_ARGS__)
#define log_warning(...) ::sluice::log_msg(::sluice::LogLevel::Warning, __VA_ARGS__)
#define log_info(...) ::sluice::log_msg(::sluice::LogLevel::Log, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (::sluice::log_enabled(::sluice::LogLevel::Debug))                                      \
            ::sluice::log_msg(::sluice::LogLevel::Debug, __VA_ARGS__);                             \
    } while (0)
#define log_noise(...)                                                                             \
    do {                                                                                           \
        if (::sluice::log_enabled(::sluice::LogLevel::Noise))                                      \
            ::sluice::log_msg(::sluice::LogLevel::Noise, __VA_ARGS__);                             \
    } while (0)
#define slog_error(who, ...) ::sluice::slog_msg(::sluice::LogLevel::Error, who, __VA_ARGS__)
#define slog_warning(who, ...) ::sluice::slog_msg(::sluice::LogLevel::Warning, who, __VA_ARGS__)
#define slog_info(who, ...) ::sluice::slog_msg(::sluice::LogLevel::Log, who, __VA_ARGS__)
#define slog_debug(who, ...)                                                                       \
    do {                                                                                           \
        if (::sluice::log_enabled(::sluice::LogLevel::Debug))                                      \
            ::sluice::slog_msg(::sluice::LogLevel::Debug, who, __VA_ARGS__);                       \
    } while (0)
#define slog_noise(who, ...)                                                                       \
    do {                                                                                           \
        if (::sluice::log_enabled(::sluice::LogLevel::Noise))                                      \
            ::sluice::slog_msg(::sluice::LogLevel::Noise, who, __VA_ARGS__);                       \
    } while (0)

#if SLUICE_CASSERT
#define SLUICE_ASSERT(cond)                                                                        \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ::sluice::die("assertion failed: %s (%s:%d)", #cond, __FILE__, __LINE__);              \
    } while (0)
#else
#define SLUICE_ASSERT(cond)                                                                        \
    do {                                                                                           \
    } while (0)
#endif
