// Log sink: formats PgBouncer-style lines and writes them to stderr, a logfile and syslog.
#include "sluice/util/log.h"

#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <sys/time.h>

namespace sluice {
namespace {

LogConfig g_cfg;
time_t g_cached_sec = -1;  // second of the cached date/pid prefix
FILE* g_file = nullptr;
bool g_syslog_open = false;

const char* level_name(LogLevel l) noexcept {
    switch (l) {
    case LogLevel::Fatal:
        return "FATAL";
    case LogLevel::Error:
        return "ERROR";
    case LogLevel::Warning:
        return "WARNING";
    case LogLevel::Log:
        return "LOG";
    case LogLevel::Debug:
        return "DEBUG";
    case LogLevel::Noise:
        return "NOISE";
    }
    return "LOG";
}

int syslog_level(LogLevel l) noexcept {
    switch (l) {
    case LogLevel::Fatal:
        return LOG_CRIT;
    case LogLevel::Error:
        return LOG_ERR;
    case LogLevel::Warning:
        return LOG_WARNING;
    case LogLevel::Log:
        return LOG_INFO;
    default:
        return LOG_DEBUG;
    }
}

int facility_code(const std::string& name) noexcept {
    struct F {
        const char* name;
        int code;
    };
    static const F table[] = {{"auth", LOG_AUTH},     {"authpriv", LOG_AUTHPRIV},
                              {"daemon", LOG_DAEMON}, {"user", LOG_USER},
                              {"local0", LOG_LOCAL0}, {"local1", LOG_LOCAL1},
                              {"local2", LOG_LOCAL2}, {"local3", LOG_LOCAL3},
                              {"local4", LOG_LOCAL4}, {"local5", LOG_LOCAL5},
                              {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7}};
    for (const F& f : table)
        if (name == f.name)
            return f.code;
    return LOG_DAEMON;
}

int g_open_errno = 0;  // why the logfile last failed to open

bool open_file() {
    if (g_file) {
        fclose(g_file);
        g_file = nullptr;
    }
    if (g_cfg.logfile.empty())
        return true;
    g_file = fopen(g_cfg.logfile.c_str(), "a");
    if (!g_file) {
        g_open_errno = errno;
        return false;
    }
    setvbuf(g_file, nullptr, _IOLBF, 0);
    return true;
}

}  // namespace

const char* log_open_error() noexcept {
    return strerror(g_open_errno);
}

bool log_configure(const LogConfig& cfg) {
    bool file_changed = cfg.logfile != g_cfg.logfile || (!cfg.logfile.empty() && !g_file);
    bool syslog_changed = cfg.syslog != g_cfg.syslog || cfg.syslog_ident != g_cfg.syslog_ident ||
                          cfg.syslog_facility != g_cfg.syslog_facility;
    g_cfg = cfg;
    if (syslog_changed) {
        if (g_syslog_open)
            closelog();
        g_syslog_open = false;
        if (g_cfg.syslog) {
            openlog(g_cfg.syslog_ident.c_str(), LOG_PID, facility_code(g_cfg.syslog_facility));
            g_syslog_open = true;
        }
    }
    if (file_changed)
        return open_file();
    return true;
}

void log_after_fork() noexcept {
    g_cached_sec = -1;
}

void log_reopen() {
    static_cast<void>(open_file());
}

bool log_enabled(LogLevel level) noexcept {
    switch (level) {
    case LogLevel::Debug:
        return g_cfg.verbose >= 1;
    case LogLevel::Noise:
        return g_cfg.verbose >= 2;
    default:
        return true;
    }
}

void vslog_msg(LogLevel level, const LogSubject* who, const char* fmt, va_list ap) noexcept {
    if (!log_enabled(level))
        return;
    // "<date>.<ms> <zone> [<pid>] <LEVEL> <prefix> <message>\n", built in place: the part
    // before the milliseconds changes once a second, the rest is copied, and the message is
    // formatted straight into the line (logging every login and close is PgBouncer's default).
    struct timeval tv;
    gettimeofday(&tv, nullptr);
    static char date[40];      // "2026-12-05 13:14:15"
    static char after_ms[48];  // " UTC [1234] "
    static size_t date_len = 0;
    static size_t after_len = 0;
    if (tv.tv_sec != g_cached_sec) {
        struct tm tm;
        localtime_r(&tv.tv_sec, &tm);
        date_len = strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
        char zone[16];
        if (strftime(zone, sizeof(zone), "%Z", &tm) == 0)
            zone[0] = '\0';
        int n = snprintf(after_ms, sizeof(after_ms), " %s [%d] ", zone, static_cast<int>(getpid()));
        after_len = n < 0 ? 0 : std::min(static_cast<size_t>(n), sizeof(after_ms) - 1);
        g_cached_sec = tv.tv_sec;
    }
    char line[4200];
    constexpr size_t kCap = sizeof(line) - 1;  // room for the newline
    size_t pos = 0;
    auto put = [&](const char* p, size_t n) {
        n = std::min(n, kCap - pos);
        memcpy(line + pos, p, n);
        pos += n;
    };
    put(date, date_len);
    int ms = static_cast<int>(tv.tv_usec / 1000);
    char msd[4] = {'.', static_cast<char>('0' + ms / 100), static_cast<char>('0' + ms / 10 % 10),
                   static_cast<char>('0' + ms % 10)};
    put(msd, sizeof(msd));
    put(after_ms, after_len);
    const char* lv = level_name(level);
    put(lv, strlen(lv));
    put(" ", 1);
    size_t msg_at = pos;  // syslog gets the line from here
    if (who) {
        pos += who->log_prefix(line + pos, kCap - pos);
        put(" ", 1);
    }
    int n = vsnprintf(line + pos, kCap + 1 - pos, fmt, ap);
    if (n < 0)
        return;
    pos = std::min(pos + static_cast<size_t>(n), kCap);
    line[pos++] = '\n';
    if (!g_cfg.quiet)
        fwrite(line, 1, pos, stderr);
    if (g_file)
        fwrite(line, 1, pos, g_file);
    if (g_syslog_open)
        syslog(syslog_level(level), "%.*s", static_cast<int>(pos - 1 - msg_at), line + msg_at);
}

void log_msg(LogLevel level, const char* fmt, ...) noexcept {
    va_list ap;
    va_start(ap, fmt);
    vslog_msg(level, nullptr, fmt, ap);
    va_end(ap);
}

void slog_msg(LogLevel level, const LogSubject* who, const char* fmt, ...) noexcept {
    va_list ap;
    va_start(ap, fmt);
    vslog_msg(level, who, fmt, ap);
    va_end(ap);
}

void die(const char* fmt, ...) noexcept {
    va_list ap;
    va_start(ap, fmt);
    vslog_msg(LogLevel::Fatal, nullptr, fmt, ap);
    va_end(ap);
    exit(1);
}

}  // namespace sluice
