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

bool open_file() {
    if (g_file) {
        fclose(g_file);
        g_file = nullptr;
    }
    if (g_cfg.logfile.empty())
        return true;
    g_file = fopen(g_cfg.logfile.c_str(), "a");
    if (!g_file) {
        int e = errno;
        log_msg(LogLevel::Error, "cannot open logfile \"%s\": %s", g_cfg.logfile.c_str(),
                strerror(e));
        return false;
    }
    setvbuf(g_file, nullptr, _IOLBF, 0);
    return true;
}

}  // namespace

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

    struct timeval tv;
    gettimeofday(&tv, nullptr);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    char stamp[64];
    size_t sl = strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
    char zone[16];
    strftime(zone, sizeof(zone), "%Z", &tm);
    snprintf(stamp + sl, sizeof(stamp) - sl, ".%03d %s", static_cast<int>(tv.tv_usec / 1000),
             zone);

    const char* lvl = level_name(level);
    if (!g_cfg.quiet)
        fprintf(stderr, "%s [%d] %s %s\n", stamp, static_cast<int>(getpid()), lvl, msg);
    if (g_file)
        fprintf(g_file, "%s [%d] %s %s\n", stamp, static_cast<int>(getpid()), lvl, msg);
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
