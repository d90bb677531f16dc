// sluice entry point: command line, config, daemonize, signals, listeners, the event loop.
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_set>
#include <vector>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "sluice/admin/admin.h"
#include "sluice/admin/metrics.h"
#include "sluice/janitor.h"
#include "sluice/net/dns.h"
#include "sluice/net/listener.h"
#include "sluice/net/loop.h"
#include "sluice/net/tls.h"
#include "sluice/pool/control.h"
#include "sluice/pool/pool.h"
#include "sluice/stats.h"
#include "sluice/takeover.h"
#include "sluice/util/systemd.h"

namespace sluice {
namespace {

struct Options {
    bool daemon = false;
    bool reboot = false;
    bool quiet = false;
    int verbose = 0;
    std::string user;
    std::string config;
};

std::string g_pidfile;  // written by us; removed at exit
int g_signal_count = 0;
int g_exit_code = 0;  // 1 after a fatal error at run time (the loop stops, teardown runs)
// Checks every 100 ms whether a shutdown may finish (shutdown_check); armed when one begins,
// so that a running pooler is not woken for it.
event* g_shutdown_timer = nullptr;

void usage(FILE* to, const char* prog) {
    fprintf(to,
            "%s is a PostgreSQL connection pooler (PgBouncer-compatible).\n\n"
            "Usage:\n"
            "  %s [OPTION]... CONFIG_FILE\n\n"
            "Options:\n"
            "  -d, --daemon         run in background (as a daemon)\n"
            "  -q, --quiet          run quietly\n"
            "  -R, --reboot         do an online reboot (not supported: ignored with a warning)\n"
            "  -u, --user=USERNAME  assume identity of USERNAME\n"
            "  -v, --verbose        increase verbosity\n"
            "  -V, --version        show version, then exit\n"
            "  -h, --help           show this help, then exit\n",
            prog, prog);
}

void print_version() {
    printf("sluice %s (PgBouncer-compatible)\n", SLUICE_VERSION);
    printf("libevent %s\n", event_get_version());
    printf("adns: evdns2\n");  // server names: libevent's resolver (net/dns.h), as PgBouncer names it
    printf("tls: %s\n", OpenSSL_version(OPENSSL_VERSION));
    printf("systemd: yes\n");  // notify and socket activation (util/systemd.h)
}

LogConfig log_config_from(const Settings& s, const Options& o) {
    LogConfig lc;
    lc.verbose = s.verbose + o.verbose;
    lc.quiet = o.quiet || o.daemon;
    lc.logfile = s.logfile;
    lc.syslog = s.syslog;
    lc.syslog_ident = s.syslog_ident;
    lc.syslog_facility = s.syslog_facility;
    return lc;
}

Options g_opts;

// Reads auth_file into out, as PgBouncer's load_auth_file(): no auth_file line means no
// users and nothing to log, but "auth_file =" names a file that cannot be opened (PgBouncer
// logs "could not open auth_file : No such file or directory" for it). False = not read
// (logged); out is untouched and the caller keeps the users it had.
bool load_auth_file(const Config& cfg, UserList& out) {
    const std::string& path = cfg.settings.auth_file;
    if (path.empty() && !set_in_file(cfg, "auth_file")) {
        out.clear();
        return true;
    }
    std::string err;
    if (!load_userlist(path, out, err)) {
        log_error("could not open auth_file %s: %s", path.c_str(), err.c_str());
        return false;
    }
    return true;
}

// auth_hba_file and auth_ident_file are read only with auth_type=hba (as PgBouncer does), at
// start-up and on every RELOAD.
void load_hba(const Settings& s) {
    if (s.auth_type == AuthType::Hba) {
        load_hba_files(s.auth_hba_file, s.auth_ident_file, rt().hba, rt().ident);
    } else {
        rt().hba.clear();
        rt().ident.clear();
    }
}

void warn_restart_only(const Settings& old, const Settings& now) {
    for (const SettingInfo& info : settings_table()) {
        if (info.reloadable)
            continue;
        if (setting_value_text(old, info) != setting_value_text(now, info))
            log_warning("config: setting %s changed, takes effect only after a restart",
                        info.name);
    }
}

// TLS contexts follow the settings (tls.cpp rebuilds only when a TLS setting or a cert/key/CA
// file changed). Bad new TLS settings are logged and the running contexts stay; existing
// connections keep their TLS sessions. When the server side changed, server connections are
// recycled as they are released (PgBouncer tags the pools dirty). False = the new settings
// failed; the reason and PgBouncer's line for it are logged.
bool apply_tls_settings() {
    std::string err;
    bool server_changed = false;
    switch (tls_reload(settings(), err, server_changed)) {
    case TlsReload::Unchanged:
        return true;
    case TlsReload::Failed:
        log_error("%s", err.c_str());
        log_error("TLS configuration could not be reloaded, keeping old configuration");
        return false;
    case TlsReload::Rebuilt:
        log_info("TLS settings reloaded");
        if (server_changed)
            for (auto& [name, db] : rt().databases)
                if (!db->admin)
                    control_reconnect_db(*db);
        return true;
    }
    return true;
}

// What load_config() skipped (an %include of a directory), whether or not it then failed.
void log_config_warnings(const Config& cfg) {
    for (const std::string& w : cfg.warnings)
        log_warning("%s", w.c_str());
}

// A load_config() error: one ERROR line per line of it.
void log_config_error(const std::string& err) {
    size_t start = 0;
    while (start <= err.size()) {
        size_t nl = err.find('\n', start);
        std::string line = err.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
        log_error("%s", line.c_str());
        if (nl == std::string::npos)
            break;
        start = nl + 1;
    }
}

// conffile names the file the next RELOAD reads (PgBouncer's cf_config_file): the command-line
// file, unless SET or a conffile line in the file named another. An empty value stands for the
// command-line file, so that SHOW CONFIG always names the file a RELOAD reads.
void settle_conffile(Settings& s) {
    if (s.conffile.empty())
        s.conffile = rt().config_path;
}

// Re-reads config, auth_file and hba (SIGHUP, admin RELOAD); failures are logged. A config
// that does not load changes nothing; an unreadable auth_file keeps the users loaded before and
// bad new TLS settings the TLS contexts, while everything else is applied (as PgBouncer).
ReloadResult reload() {
    Config next;
    std::string err;
    bool loaded = load_config(settings().conffile, next, err);
    log_config_warnings(next);
    if (!loaded) {
        log_config_error(err);
        log_warning("config file loading failed");
        return ReloadResult::Failed;
    }
    settle_conffile(next.settings);
    warn_restart_only(rt().cfg.settings, next.settings);
    // Restart-only settings keep their running values.
    Settings merged = next.settings;
    for (const SettingInfo& info : settings_table()) {
        if (info.reloadable)
            continue;
        std::string v = setting_value_text(rt().cfg.settings, info);
        std::string ignored;
        static_cast<void>(apply_setting(merged, info.name, v, ignored));
    }
    next.settings = merged;
    // PgBouncer's RELOAD resets only the settings it has a default for: auth_file (NULL
    // default) left out of the file keeps its running value, and its users are read again
    // from it. PgBouncer keeps every such setting (auth_user, verbose ...); sluice only this
    // one, whose reset would lock every auth_file user out (doc/config.md).
    if (!set_in_file(next, "auth_file")) {
        next.settings.auth_file = settings().auth_file;
        if (set_in_file(rt().cfg, "auth_file"))
            next.keys_in_file.push_back("auth_file");
    }
    // An auth_file that cannot be read (logged) keeps the users already loaded; the rest of
    // the new config applies, as PgBouncer's RELOAD does.
    UserList users;
    bool users_ok = load_auth_file(next, users);
    rt().cfg = std::move(next);
    if (users_ok)
        rt().userlist = std::move(users);
    load_hba(settings());
    apply_config_objects();
    bool tls_ok = apply_tls_settings();
    listeners_tune(tcp_options_from(settings()));  // new connections inherit them
    if (!log_configure(log_config_from(settings(), g_opts)))  // PgBouncer would exit here
        log_error("cannot open logfile '%s': %s; logging to stderr only",
                  settings().logfile.c_str(), log_open_error());
    log_reopen();
    for (auto& p : rt().pools)
        pool_launch_if_needed(*p);
    return tls_ok ? ReloadResult::Ok : ReloadResult::TlsFailed;
}

// Admin SET changed settings: re-apply the log settings main caches.
void settings_changed() {
    settle_conffile(rt().cfg.settings);
    config_changed();
    listeners_tune(tcp_options_from(settings()));
    if (!log_configure(log_config_from(settings(), g_opts)))
        log_error("cannot open logfile '%s': %s; logging to stderr only",
                  settings().logfile.c_str(), log_open_error());
    static_cast<void>(apply_tls_settings());  // a failure is logged; SET itself took effect
}

void begin_shutdown(bool wait_for_clients) {
    sd_notify_state("STOPPING=1");
    rt().shutting_down = true;
    rt().wait_for_clients = wait_for_clients;
    if (g_shutdown_timer)
        loop_timer_add(g_shutdown_timer, timeval{0, 100000});
    listeners_close(false);
    if (!wait_for_clients) {
        // Safe shutdown = PAUSE: servers close as they are released.
        control_pause_all();
        admin_tick_update();
        // Queued clients cannot get a server any more.
        for (auto& p : rt().pools)
            p->waiting.for_each([](Client& c) { c.fatal("08P01", "server shutting down"); });
    }
}

void on_signal(evutil_socket_t sig, short, void*) noexcept {
    time_update();
    switch (sig) {
    case SIGHUP:
        log_info("got SIGHUP, re-reading config");
        sd_notify_reloading();
        static_cast<void>(reload());
        sd_notify_state("READY=1");
        return;
    case SIGINT:
    case SIGTERM:
        if (++g_signal_count > 1) {
            log_info("got %s while shutting down, fast exit",
                     sig == SIGTERM ? "SIGTERM" : "SIGINT");
            loop_stop();
            return;
        }
        if (sig == SIGTERM)
            log_info("got SIGTERM, shutting down, waiting for all clients disconnect");
        else
            log_info("got SIGINT, shutting down, waiting for all servers connections to be "
                     "released");
        if (pause_mode() == PauseMode::Suspend) {  // sockets frozen: nothing could finish
            // PgBouncer's FATAL and exit status; the usual teardown still runs (pidfile,
            // unix socket, memory).
            log_msg(LogLevel::Fatal, "suspend was in progress, going down immediately");
            g_exit_code = 1;
            loop_stop();
            return;
        }
        begin_shutdown(sig == SIGTERM);
        return;
    case SIGQUIT:
        log_info("got SIGQUIT, fast exit");
        loop_stop();
        return;
    case SIGUSR1:
        if (pause_mode() != PauseMode::None) {
            log_info("got SIGUSR1, but already paused/suspended");
            return;
        }
        log_info("got SIGUSR1, pausing all activity");
        control_pause_all();
        admin_tick_update();
        return;
    case SIGUSR2:
        if (rt().shutting_down) {
            log_info("got SIGUSR2 while shutting down, ignoring");
            return;
        }
        switch (pause_mode()) {
        case PauseMode::None:
            log_info("got SIGUSR2, but not paused/suspended");
            return;
        case PauseMode::Pause:
            log_info("got SIGUSR2, continuing from PAUSE");
            break;
        case PauseMode::Suspend:
            log_info("got SIGUSR2, continuing from SUSPEND");
            break;
        }
        static_cast<void>(control_resume_all());
        return;
    default:
        return;
    }
}

void on_accept(int fd, const PeerAddr& peer, bool is_unix, bool input_waiting) {
    time_update();
    auto* c = new Client();
    c->id = rt().next_id++;
    c->addr = ClientAddr::from(peer);
    c->connect_time = mono_now();
    c->request_time = c->connect_time;
    set_state(*c, ClientState::Login);
    // TCP options (TCP_NODELAY, keepalive, buffers) are inherited from the listener: no
    // setsockopt per connection.
    if (is_unix) {
        ucred cred{};
        socklen_t len = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
            c->peer_is_self = cred.uid == geteuid();
            c->peer_pid = cred.pid;
            c->have_peer_uid = true;
            c->peer_uid = cred.uid;
        }
    }
    if (!c->sb.attach(fd, c, false)) {
        set_state(*c, ClientState::Closing);
        return;
    }
    c->sb.set_startup(true);
    c->sb.set_max_packet(settings().max_packet_size);
    // Not authenticated yet: no buffer grows to what such a client claims (finish_login()
    // lifts the cap).
    c->sb.set_hold_limit(kMaxLoginMessageLen);
    c->sb.set_loop_count(settings().sbuf_loopcnt);
    c->sb.set_trim_output(true);  // idle clients hold no output block
    if (input_waiting)
        c->sb.read_soon();  // answer the first packet in this loop turn
}

void shutdown_check(evutil_socket_t, short, void*) noexcept {
    if (!rt().shutting_down)
        return;
    bool done = true;
    for (auto& p : rt().pools) {
        if (rt().wait_for_clients) {
            if (!p->active.empty() || !p->waiting.empty())
                done = false;
        } else if (!p->active_servers.empty()) {
            done = false;
        }
    }
    if (rt().wait_for_clients && !rt().login_clients.empty())
        done = false;
    if (done) {
        // PgBouncer's lines: scripts and pre-stop hooks wait for them
        log_info(rt().wait_for_clients ? "client connections dropped, exiting"
                                       : "server connections dropped, exiting");
        loop_stop();
    }
}

void remove_pidfile() {
    if (!g_pidfile.empty())
        ::unlink(g_pidfile.c_str());
}

// PgBouncer's startup line, which operators' scripts compare (limit >= expected use). The
// estimate is PgBouncer's: max_client_conn + 10, the console's 2, and per [databases] entry
// ("*" excepted) its pool size, times the number of users unless the entry forces one. The
// users are those of auth_file and [users], plus PgBouncer's internal console user.
void log_fd_limit(const Config& cfg, const UserList& userlist) {
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) {
        log_warning("could not get RLIMIT_NOFILE: %s", strerror(errno));
        return;
    }
    const Settings& st = cfg.settings;
    std::unordered_set<std::string_view> users;
    for (const auto& [name, secret] : userlist)
        users.insert(name);
    for (const UserEntry& u : cfg.users)
        users.insert(u.name);
    long long total_users = static_cast<long long>(users.size()) + 1;
    long long expected = static_cast<long long>(st.max_client_conn) + 10 + 2;
    for (const DatabaseEntry& db : cfg.databases) {
        if (db.name == "*")
            continue;
        long long size = db.pool_size >= 0 ? db.pool_size : st.default_pool_size;
        expected += db.user.empty() ? size * total_users : size;
    }
    auto as_ll = [](rlim_t v) {
        return v == RLIM_INFINITY ? -1LL : static_cast<long long>(v);
    };
    log_info("kernel file descriptor limit: %lld (hard: %lld); max_client_conn: %d, max "
             "expected fd use: %lld",
             as_ll(lim.rlim_cur), as_ll(lim.rlim_max), st.max_client_conn, expected);
}

// PgBouncer's pidfile rules: a pidfile naming a live process (or one we may not signal), or
// one that is empty or unreadable, means another instance; one naming a dead process is
// removed. Checked before daemonizing, so that the message reaches the terminal.
void check_pidfile(const std::string& path) {
    if (path.empty())
        return;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return;
        die("could not open pidfile '%s': %s", path.c_str(), strerror(errno));
    }
    char buf[129];
    ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
    int read_errno = errno;
    ::close(fd);
    if (n < 0)
        die("could not read pidfile '%s': %s", path.c_str(), strerror(read_errno));
    buf[n] = '\0';
    long pid = n > 0 ? atol(buf) : 0;
    if (pid <= 0 || kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH)
        die("pidfile '%s' exists, another instance running?", path.c_str());
    log_info("stale pidfile, removing");
    if (::unlink(path.c_str()) != 0)
        die("could not remove stale pidfile: %s", strerror(errno));
}

// Written once listening; O_EXCL: a second instance that got past check_pidfile at the same
// moment fails here instead of overwriting.
void write_pidfile(const std::string& path) {
    if (path.empty())
        return;
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        die("could not open pidfile '%s': %s", path.c_str(), strerror(errno));
    std::string text = std::to_string(getpid()) + "\n";
    if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
        int e = errno;
        ::close(fd);
        die("could not write pidfile '%s': %s", path.c_str(), strerror(e));
    }
    ::close(fd);
    g_pidfile = path;
}

// PgBouncer's rules and words: a named user is switched to whoever starts the process (a
// non-root one can only name itself); root also takes that user's supplementary groups.
void switch_user(const std::string& name) {
    passwd* pw = getpwnam(name.c_str());
    if (!pw)
        die("could not find user '%s' to switch to", name.c_str());
    if (geteuid() == 0 && initgroups(pw->pw_name, pw->pw_gid) != 0)
        die("failed to reset groups: %s", strerror(errno));
    if (setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
        die("failed to assume identity of user '%s': %s", name.c_str(), strerror(errno));
    if (getuid() != pw->pw_uid || geteuid() != pw->pw_uid)
        die("setuid() failed to work");
}

void daemonize() {
    pid_t pid = fork();
    if (pid < 0)
        die("fork failed: %s", strerror(errno));
    if (pid > 0)
        _exit(0);
    setsid();
    pid = fork();
    if (pid < 0)
        die("fork failed: %s", strerror(errno));
    if (pid > 0)
        _exit(0);
    log_after_fork();
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2)
            close(fd);
    }
}

int run(int argc, char** argv) {
    static const option longopts[] = {{"daemon", no_argument, nullptr, 'd'},
                                      {"quiet", no_argument, nullptr, 'q'},
                                      {"reboot", no_argument, nullptr, 'R'},
                                      {"user", required_argument, nullptr, 'u'},
                                      {"verbose", no_argument, nullptr, 'v'},
                                      {"version", no_argument, nullptr, 'V'},
                                      {"help", no_argument, nullptr, 'h'},
                                      {nullptr, 0, nullptr, 0}};
    Options& o = g_opts;
    int ch;
    while ((ch = getopt_long(argc, argv, "dqRu:vVh", longopts, nullptr)) != -1) {
        switch (ch) {
        case 'd':
            o.daemon = true;
            break;
        case 'q':
            o.quiet = true;
            break;
        case 'R':
            o.reboot = true;
            break;
        case 'u':
            o.user = optarg;
            break;
        case 'v':
            o.verbose++;
            break;
        case 'V':
            print_version();
            return 0;
        case 'h':
            usage(stdout, argv[0]);
            return 0;
        default:  // getopt said what was wrong; as PgBouncer, a pointer to --help follows
            fprintf(stderr, "Try \"%s --help\" for more information.\n", argv[0]);
            return 1;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "%s: no configuration file specified\n", argv[0]);
        fprintf(stderr, "Try \"%s --help\" for more information.\n", argv[0]);
        return 1;
    }
    o.config = argv[optind];

    Runtime& r = rt();
    r.config_path = o.config;
    LogConfig early;
    early.quiet = o.quiet;
    early.verbose = o.verbose;
    static_cast<void>(log_configure(early));
    std::string err;
    bool loaded = load_config(o.config, r.cfg, err);
    log_config_warnings(r.cfg);
    if (!loaded) {
        log_config_error(err);
        die("cannot load config file");
    }
    settle_conffile(r.cfg.settings);
    const Settings& st = r.cfg.settings;
    if (o.daemon && st.pidfile.empty())
        die("daemon needs pidfile configured");
    if (o.daemon && st.logfile.empty() && !st.syslog)  // PgBouncer runs silently
        log_warning("no logfile and no syslog: the daemon's log lines go nowhere");

    std::string as_user = !o.user.empty() ? o.user : st.user;
    if (geteuid() == 0 && as_user.empty())
        die("sluice should not run as root; use -u or the user setting");
    if (!as_user.empty())
        switch_user(as_user);

    if (!log_configure(log_config_from(st, o)))  // PgBouncer's words
        die("Cannot open logfile: '%s': %s", st.logfile.c_str(), log_open_error());
    if (!load_auth_file(r.cfg, r.userlist))
        log_warning("continuing without auth_file entries");
    load_hba(st);
    var_init(st.track_extra_parameters);
    sbuf_set_buffer_size(static_cast<uint32_t>(st.pkt_buf));
    // How many idle clients keep their buffer (doc/pooling.md, "Buffers"): tests set it to
    // cover reads into provided buffers under load.
    if (const char* v = getenv("SLUICE_KEPT_BUFFERS"))
        sbuf_set_park_limit(strtoul(v, nullptr, 10));
    if (!tls_init(st, err)) {
        log_error("%s", err.c_str());
        die("TLS setup failed");
    }
    signal(SIGPIPE, SIG_IGN);

    // Socket activation: the service manager's sockets replace listen_addr and
    // unix_socket_dir (and a unix socket in use is then its own, not another instance's).
    int sd_fds = sd_listen_fd_count();
    // Online restart: the running instance hands its sockets over before this one forks, so
    // that a failure is reported on the terminal (the old instance then resumes).
    bool took_over = false;
    if (o.reboot && sd_fds == 0 && takeover_connect(st)) {
        takeover_fetch();
        took_over = true;
    } else {
        if (sd_fds == 0 && unix_socket_in_use(st.unix_socket_dir, st.listen_port))
            die("unix socket is in use, cannot continue");
        check_pidfile(st.pidfile);
    }
    if (o.daemon)
        daemonize();

    r.base = loop_create(err);
    if (!r.base)
        die("%s", err.c_str());
    // Caught from here on, before the listeners and the pidfile tell anyone this process is
    // up: a SIGHUP sent as soon as the pidfile appears (an init script's reload) must not
    // kill it. They are acted on once the loop runs.
    const int sigs[] = {SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2};
    std::vector<event*> loop_events;
    for (int sig : sigs) {
        event* ev = evsignal_new(r.base, sig, on_signal, nullptr);
        if (!ev || event_add(ev, nullptr) != 0)
            die("cannot install signal handler");
        loop_events.push_back(ev);
    }
    if (!dns_init(r.base, st.resolv_conf, err))
        die("%s", err.c_str());
    dns_on_address_gone(control_retire_address);
    apply_config_objects();
    admin_init(AdminProcess{
        .reload = reload, .shutdown = begin_shutdown, .settings_changed = settings_changed});

    log_fd_limit(r.cfg, r.userlist);
    ListenConfig lc;
    lc.addrs = split_list(st.listen_addr);
    lc.addr_text = st.listen_addr;
    lc.port = st.listen_port;
    lc.backlog = st.listen_backlog;
    lc.unix_dir = st.unix_socket_dir;
    lc.unix_mode = st.unix_socket_mode;
    lc.unix_group = st.unix_socket_group;
    lc.reuseport = st.so_reuseport;
    lc.defer_accept = st.tcp_defer_accept;
    lc.tcp = tcp_options_from(st);
    if (took_over) {
        takeover_adopt(lc, on_accept);
        takeover_finish(st.pidfile);
    } else if (sd_fds > 0) {
        if (!st.listen_addr.empty())
            log_warning("sockets passed from service manager, cf_listen_addr ignored");  // sic
        if (!st.unix_socket_dir.empty() && st.unix_socket_dir != "/tmp")
            log_warning("sockets passed from service manager, cf_unix_socket_dir ignored");
        if (!listeners_adopt(kSdListenFdsStart, sd_fds, lc, on_accept, err))
            die("%s", err.c_str());
    } else if (!listeners_open(lc, on_accept, err)) {
        die("%s", err.c_str());
    }
    write_pidfile(st.pidfile);

    g_shutdown_timer = event_new(r.base, -1, EV_PERSIST, shutdown_check, nullptr);
    if (!g_shutdown_timer)
        die("cannot create the shutdown timer");
    loop_events.push_back(g_shutdown_timer);
    janitor_start();
    stats_start();
    if (!metrics_start(err))
        die("%s", err.c_str());
    time_update();
    log_info("process up: sluice %s, libevent %s (%s), adns: evdns2, tls: %s", SLUICE_VERSION,
             event_get_version(), event_base_get_method(r.base),
             OpenSSL_version(OPENSSL_VERSION));
    sd_notify_state("READY=1");
    loop_run();
    // Exiting while suspended (an online restart's SHUTDOWN, or a signal): as PgBouncer, the
    // unix socket file stays, a new process may be listening on it.
    if (pause_mode() == PauseMode::Suspend)
        listeners_keep_paths();
    listeners_close(false);
    remove_pidfile();
    dns_shutdown();  // before the servers that may wait for it are freed
    pool_free_all();
    tls_free_all();
    sbuf_release_buffers();
    janitor_stop();
    admin_stop();
    stats_stop();
    metrics_stop();
    loop_timer_forget(g_shutdown_timer);
    g_shutdown_timer = nullptr;  // freed below
    for (event* ev : loop_events)
        event_free(ev);
    loop_destroy();
    r.base = nullptr;
    return g_exit_code;
}

}  // namespace
}  // namespace sluice

int main(int argc, char** argv) {
    return sluice::run(argc, argv);
}
