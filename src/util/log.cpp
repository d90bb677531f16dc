// Log sink: formats PgBouncer-style lines and writes them to stderr, a logfile and syslog.
#include "sluice/util/log.h"

#include <syslog.h>
#include <unistd.h>

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
    char msg[4096];
    size_t pos = 0;
    if (who) {
        pos = who->log_prefix(msg, sizeof(msg) - 2);
        msg[pos++] = ' ';
    }
    int n = vsnprintf(msg + pos, sizeof(msg) - pos, fmt, ap);
    if (n < 0)
        return;

    // The date part changes once a second: format it (and the pid) only then.
    struct timeval tv;
    gettimeofday(&tv, nullptr);
    static char date[40];
    static char zone[16];
    static int pid = 0;
    if (tv.tv_sec != g_cached_sec) {
        struct tm tm;
        localtime_r(&tv.tv_sec, &tm);
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
        strftime(zone, sizeof(zone), "%Z", &tm);
        g_cached_sec = tv.tv_sec;
        pid = static_cast<int>(getpid());
    }
    // One formatted line, written as is to each sink.
    char line[4200];
    int ln = snprintf(line, sizeof(line), "%s.%03d %s [%d] %s %s\n", date,
                      static_cast<int>(tv.tv_usec / 1000), zone, pid, level_name(level), msg);
    if (ln < 0)
        return;
    size_t len = static_cast<size_t>(ln) < sizeof(line) ? static_cast<size_t>(ln) : sizeof(line) - 1;
    if (!g_cfg.quiet)
        fwrite(line, 1, len, stderr);
    if (g_file)
        fwrite(line, 1, len, g_file);
    if (g_syslog_open)
        syslog(syslog_level(level), "%s", msg);
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
