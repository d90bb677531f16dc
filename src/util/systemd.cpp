// systemd's notify and socket-activation protocols (sd_notify(3), sd_listen_fds(3)), spoken
// directly: a datagram to $NOTIFY_SOCKET, and fds from 3 on named by $LISTEN_FDS.
#include "sluice/util/systemd.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "sluice/util/log.h"

namespace sluice {

void sd_notify_state(std::string_view state) {
    const char* path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return;
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    size_t len = strlen(path);
    // A file system path, or '@' for the abstract namespace (systemd uses both).
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sa.sun_path)) {
        log_debug("NOTIFY_SOCKET not usable: %s", path);
        return;
    }
    memcpy(sa.sun_path, path, len);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';
    auto salen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_debug("notify socket: %s", strerror(errno));
        return;
    }
    if (sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&sa),
               salen) < 0)
        log_debug("cannot notify %s: %s", path, strerror(errno));
    close(fd);
}

void sd_notify_reloading() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    auto usec =
        static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
    char buf[64];
    snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, usec);
    sd_notify_state(buf);
}

int sd_listen_fd_count() {
    const char* pid = getenv("LISTEN_PID");
    const char* fds = getenv("LISTEN_FDS");
    if (!pid || !fds)
        return 0;
    char* end = nullptr;
    long p = strtol(pid, &end, 10);
    if (*pid == '\0' || *end != '\0' || p != static_cast<long>(getpid()))
        return 0;  // meant for another process (a parent that exec'd us without updating it)
    long n = strtol(fds, &end, 10);
    if (*fds == '\0' || *end != '\0' || n <= 0 || n > 1024)
        return 0;
    for (int fd = kSdListenFdsStart; fd < kSdListenFdsStart + n; fd++) {
        int flags = fcntl(fd, F_GETFD);
        if (flags < 0)
            return 0;  // not open: a broken hand-over, listen as configured instead
        fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
    return static_cast<int>(n);
}

}  // namespace sluice
