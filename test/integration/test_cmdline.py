"""The command line: -V, -h, missing config, bad config, -d."""

import os
import re
import signal
import socket
import subprocess

import pytest

import harness


def _run(cmd, **kw):
    kw.setdefault("timeout", 30)
    return harness.run_as_postgres(cmd, stdin=subprocess.DEVNULL, **kw)


@pytest.mark.differs_from_pgbouncer_1_18(
    "sluice only: the adns line names libevent's evdns (Debian's PgBouncer uses c-ares)")
def test_version(sluice_bin):
    r = _run([sluice_bin, "-V"])
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert re.match(r"^[A-Za-z][\w-]* \d+\.\d+(\.\d+)?", first), first
    # The backends, in PgBouncer's words (its evdns build says "adns: evdns2").
    lines = r.stdout.splitlines()
    assert lines[1].startswith("libevent ") and "adns: evdns2" in lines
    assert any(line.startswith("tls: OpenSSL") for line in lines)
    assert lines[-1] == "systemd: yes"  # as PgBouncer's systemd build ends (test_systemd.py)
    assert _run([sluice_bin, "--version"]).stdout == r.stdout


def test_help(sluice_bin):
    r = _run([sluice_bin, "-h"])
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout
    for flag in ("-d", "-R", "-q", "-v", "-u", "-V", "-h"):
        assert re.search(rf"(^|\s){flag}\b", r.stdout), f"{flag} missing from usage"
    assert _run([sluice_bin, "--help"]).returncode == 0


def test_no_config_argument(sluice_bin):
    r = _run([sluice_bin])
    assert r.returncode == 1
    assert "no configuration file specified" in r.stdout + r.stderr


def test_unknown_option(sluice_bin):
    r = _run([sluice_bin, "--no-such-option", "x.ini"])
    assert r.returncode == 1
    assert r.stderr.strip()
    # getopt's complaint, then PgBouncer's pointer to --help (not the whole usage)
    r = _run([sluice_bin, "-Z", "x.ini"])
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"{sluice_bin}: invalid option -- 'Z'",
                                     f'Try "{sluice_bin} --help" for more information.']


def test_missing_config_file(sluice_bin):
    path = os.path.join(harness.make_tempdir("sluice-cmdline-"), "nonexistent.ini")
    try:
        r = _run([sluice_bin, path])
        assert r.returncode != 0
        assert path in r.stdout + r.stderr
        assert "cannot load config file" in r.stdout + r.stderr
    finally:
        os.rmdir(os.path.dirname(path))


@pytest.mark.parametrize("case", ["empty", "comment", "dev-null", "databases-only"])
def test_config_without_main_section_refused(pooler, case):
    """A file with no [pgbouncer] section (empty, truncated by a deploy, only [databases])
    stops the start with PgBouncer's two lines and exit status 1; sluice used to run on the
    built-in defaults."""
    text = {"comment": "; nothing but a comment\n",
            "databases-only": harness.make_ini().split("[pgbouncer]")[0]}.get(case, "")
    p = pooler(text, start=False)
    argv = p.argv()[:-1] + ["/dev/null"] if case == "dev-null" else p.argv()
    r = _run(argv, cwd=p.dir)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert re.search(r"ERROR load_init_file: main section missing from config file\n"
                     r".*FATAL cannot load config file\n", out), out
    assert not _listening(p.port)


def _include_confd(pooler):
    """A pooler whose [pgbouncer] section starts with "%include confd", a directory."""
    ini = harness.make_ini(pgbouncer={"default_pool_size": "7"}).replace(
        "[pgbouncer]\n", "[pgbouncer]\n%include confd\n")
    return pooler(ini, files={"confd/pool.ini": "default_pool_size = 3\n"})


def test_include_of_a_directory_reads_nothing(pooler):
    """PgBouncer reads an %include naming a directory as an empty file and loads the rest;
    sluice used to stop with "could not load file "confd": Is a directory"."""
    p = _include_confd(pooler)
    config = {r["key"]: r["value"] for r in p.show("CONFIG")}
    assert config["default_pool_size"] == "7"
    assert p.psql("-c", "SELECT 1")[:2] == (0, "1\n")


@pytest.mark.differs_from_pgbouncer_1_18(
    "sluice only: a WARNING names the directory (PgBouncer 1.18 says nothing)")
def test_include_of_a_directory_is_logged(pooler):
    p = _include_confd(pooler)
    line = p.ini_text.splitlines().index("%include confd") + 1
    assert re.search(rf"WARNING {re.escape(p.ini_path)}:{line}: %include confd: is a directory, "
                     r"nothing read from it\n", p.stderr_text()), p.stderr_text()


def test_bad_config_value_names_file_and_line(pooler):
    ini = harness.make_ini(pgbouncer={"pool_mode": "sometimes"})
    p = pooler(ini, start=False)
    p.expect_exit = True
    line = ini.splitlines().index("pool_mode = sometimes") + 1
    r = _run(p.argv(), cwd=p.dir)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert f"{p.ini_path}:{line}" in out, out
    assert "sometimes" in out and "pool_mode" in out
    # PgBouncer's own line follows ours
    assert (f'ERROR invalid value "sometimes" for parameter pool_mode in configuration '
            f"({p.ini_path}:{line})") in out, out
    assert "cannot load config file" in out
    assert not _listening(p.port)


def test_unknown_setting_names_file_and_line(pooler):
    ini = harness.make_ini(pgbouncer={"no_such_setting": "1"})
    p = pooler(ini, start=False)
    line = ini.splitlines().index("no_such_setting = 1") + 1
    r = _run(p.argv(), cwd=p.dir)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert f"{p.ini_path}:{line}" in out, out
    assert "no_such_setting" in out


def _listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_daemon_pidfile_and_sigterm(pooler):
    p = pooler(args=["-d"], start=False)
    pidfile = os.path.join(p.dir, "pooler.pid")
    r = _run(p.argv(), cwd=p.dir, capture_output=False,
             stdout=open(os.path.join(p.dir, "daemon.out"), "w"), stderr=subprocess.STDOUT)
    assert r.returncode == 0, open(os.path.join(p.dir, "daemon.out")).read()
    pid = None
    try:
        pid = harness.wait_until(lambda: harness.read_pidfile(pidfile), 15, what="pidfile")
        assert pid != os.getpid()
        harness.wait_until(lambda: _listening(p.port) or not harness.pid_alive(pid), 15,
                           what="daemon listening")
        assert harness.pid_alive(pid), p.full_log()
        # the daemon runs as postgres, detached, and logs to its logfile only
        assert _uids(pid) == {os.stat(p.dir).st_uid}
        assert os.getsid(pid) != os.getsid(0), "daemon should leave our session (setsid)"
        assert p.psql("-c", "SELECT 1")[:2] == (0, "1\n")
        p.wait_for_log(r"process up|listening on")
        os.kill(pid, signal.SIGTERM)
        harness.wait_until(lambda: not harness.pid_alive(pid), 30, what="daemon exit")
        harness.wait_until(lambda: not os.path.exists(pidfile), 10, what="pidfile removal")
    finally:
        if pid and harness.pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def _uids(pid):
    """Real, effective, saved and fs uid of a process."""
    return {int(x) for x in harness.proc_status(pid, "Uid") or []}



@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to check the root refusal")
def test_refuses_to_run_as_root(pooler):
    p = pooler(start=False, as_invoker=True)
    r = subprocess.run(p.argv(), cwd=p.dir, capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "should not run as root" in out
    assert not _listening(p.port)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch user")
def test_user_flag_switches_to_that_user(pooler):
    p = pooler(args=["-u", "postgres"], as_invoker=True)
    assert _uids(p.pid) == {harness.pwd.getpwnam("postgres").pw_uid}
    assert p.psql("-c", "SELECT 1")[:2] == (0, "1\n")


@pytest.mark.parametrize("args,extra,message", [
    (["-u", "nosuchuser"], None, "FATAL could not find user 'nosuchuser' to switch to"),
    ([], {"user": "nosuchuser"}, "FATAL could not find user 'nosuchuser' to switch to"),
    (["-u", "root"], None,
     "FATAL failed to assume identity of user 'root': Operation not permitted"),
], ids=["unknown-flag", "unknown-setting", "other-user"])
def test_user_switch_refused_for_a_non_root_start(pooler, args, extra, message):
    """Started as postgres, a named user is still switched to, as PgBouncer does: an unknown
    one (from -u or the user setting) and one a non-root process cannot become stop the
    start with PgBouncer's words, and nothing listens."""
    p = pooler(start=False, args=args, pgbouncer=extra or {})
    r = _run(p.argv(), cwd=p.dir, capture_output=True, text=True)
    out = r.stdout + r.stderr + p.log_text()
    assert r.returncode != 0, out
    assert message in out, out
    assert not _listening(p.port)


def test_user_switch_to_oneself_as_non_root(pooler):
    """-u naming the user the process already runs as is no switch at all: it starts."""
    p = pooler(args=["-u", harness.PG_USER])
    assert _uids(p.pid) == {harness.pwd.getpwnam(harness.PG_USER).pw_uid}
    assert p.psql("-c", "SELECT 1")[:2] == (0, "1\n")


def test_startup_fd_limit_line(pooler):
    """PgBouncer's first startup line, which operators' scripts compare (soft limit against
    expected use). The expected use follows PgBouncer's estimate; 143 is what PgBouncer 1.18
    prints for this very configuration: 100 + 10, 2 for the console, 3 for the entry with a
    forced user, 7 x 4 users (u1, u2, u9 from [users], the console's own) for `b`; the `*`
    entry counts nothing."""
    p = pooler(databases={"postgres": None, "appdb": None,
                          "a": "host=127.0.0.1 user=u1", "b": "host=127.0.0.1 pool_size=7"},
               users={"u9": "pool_mode=session"},
               pgbouncer={"default_pool_size": 3, "max_client_conn": 100},
               userlist=['"u1" "p1"', '"u2" "p2"'])
    with open(f"/proc/{p.pid}/limits") as f:
        soft, hard = re.search(r"^Max open files\s+(\d+)\s+(\d+)", f.read(), re.M).groups()
    log = p.log_text()
    line = (f"LOG kernel file descriptor limit: {soft} (hard: {hard}); max_client_conn: 100, "
            f"max expected fd use: 143\n")
    assert line in log, log
    assert log.index(line) < log.index("LOG listening on"), log
    assert re.search(r"LOG process up: \S+ \S+, libevent \S+ \(epoll\), adns: [^,]+, "
                     r"tls: OpenSSL", log), log


def _dead_pid():
    """A pid no process has (for a stale pidfile)."""
    pid = 4_000_000
    while harness.pid_alive(pid) or os.path.exists(f"/proc/{pid}"):
        pid += 1
    return pid


def test_second_instance_refused(pooler):
    """A second instance over a running one stops at once with PgBouncer's messages: its
    unix socket is in use, or (another port and socket directory) its pidfile names a live
    process. The running instance is not disturbed."""
    a = pooler()
    same_socket = pooler(start=False, pgbouncer={"listen_port": str(a.port),
                                                 "unix_socket_dir": a.dir, "pidfile": "",
                                                 "logfile": None})
    r = _run(same_socket.argv())
    assert r.returncode != 0
    assert "FATAL unix socket is in use, cannot continue" in r.stdout + r.stderr
    pidfile = os.path.join(a.dir, "pooler.pid")
    same_pidfile = pooler(start=False, pgbouncer={"pidfile": pidfile, "logfile": None})
    r = _run(same_pidfile.argv())
    assert r.returncode != 0
    # PgBouncer 1.18 leaves the path out of the message, later releases name it
    assert re.search(r"FATAL pidfile ('\S*pooler\.pid' )?exists, another instance running\?",
                     r.stdout + r.stderr), r.stdout + r.stderr
    assert harness.read_pidfile(pidfile) == a.pid
    assert a.psql("-c", "SELECT 1")[:2] == (0, "1\n")


def test_listen_addr_that_cannot_be_bound_is_skipped(pooler):
    """An address of listen_addr this host does not have (192.0.2.1, TEST-NET-1) is logged and
    skipped, the others serve; when none of them can be listened on the start fails."""
    p = pooler(pgbouncer={"listen_addr": "127.0.0.1,192.0.2.1"})
    p.wait_for_log(rf"WARNING cannot listen on 192\.0\.2\.1:{p.port}: bind\(\): Cannot assign "
                   r"requested address\n")
    p.wait_for_log(rf"LOG listening on 127\.0\.0\.1:{p.port}\n")
    assert p.psql("-c", "SELECT 1")[:2] == (0, "1\n")


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: the start fails when no listen_addr address can be listened on")
def test_listen_addr_that_cannot_be_bound_at_all(pooler):
    q = pooler(start=False, pgbouncer={"listen_addr": "192.0.2.1", "logfile": None})
    r = _run(q.argv())
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "FATAL failed to listen on any address in listen_addr list: 192.0.2.1\n" in out, out


@pytest.mark.parametrize("problem", [
    "missing", "no-permission",
    pytest.param("too-long", marks=pytest.mark.differs_from_pgbouncer_1_18(
        "PgBouncer 1.18 binds the path cut to fit sockaddr_un, a socket file nobody finds"))])
def test_unix_socket_dir_that_cannot_be_used_is_skipped(pooler, problem):
    """A unix_socket_dir the socket cannot be made in (no such directory, as Debian's
    /var/run/postgresql on a host without PostgreSQL; no write permission; a path too long
    for a unix socket) is logged and skipped while TCP serves, as in PgBouncer 1.18. sluice
    used to stop with "FATAL failed to create unix socket" (later PgBouncer releases do)."""
    sockdir = {"missing": "{dir}/no-such-dir", "no-permission": "{dir}/read-only",
               "too-long": "{dir}/" + "x" * 100}[problem]
    p = pooler(start=False, pgbouncer={"unix_socket_dir": sockdir})
    if problem == "no-permission":
        os.mkdir(os.path.join(p.dir, "read-only"), 0o555)
    p.start()
    reason = {"missing": "No such file or directory", "no-permission": "Permission denied",
              "too-long": "File name too long"}[problem]
    path = re.escape(f"{p.substitute(sockdir)}/.s.PGSQL.{p.port}")
    p.wait_for_log(rf"WARNING cannot listen on unix:{path}: bind\(\): {reason}\n")
    assert p.psql("-c", "SELECT 1")[:2] == (0, "1\n")
    assert not [f for f in os.listdir(p.dir) if f.startswith((".s.PGSQL", "xxx"))]


def test_nowhere_to_listen_on(pooler):
    """No listen_addr, and the unix socket cannot be made: PgBouncer's warning, then
    "FATAL nowhere to listen on" (exit 1)."""
    p = pooler(start=False, pgbouncer={"listen_addr": None, "unix_socket_dir": "{dir}/nope",
                                       "logfile": None})
    r = _run(p.argv(), cwd=p.dir)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert re.search(rf"WARNING cannot listen on unix:{re.escape(p.dir)}/nope/\.s\.PGSQL\."
                     rf"{p.port}: bind\(\): No such file or directory\n"
                     r".*FATAL nowhere to listen on\n", out), out


def test_logfile_that_cannot_be_opened(pooler):
    p = pooler(start=False, pgbouncer={"logfile": "/nonexistent-sluice-dir/pooler.log"})
    r = _run(p.argv())
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    # PgBouncer's one line
    assert "FATAL Cannot open logfile: '/nonexistent-sluice-dir/pooler.log': No such file or " \
        "directory\n" in out, out
    assert not _listening(p.port)


def test_stale_pidfile_removed(pooler):
    """A pidfile naming a dead process is removed ("stale pidfile, removing") and rewritten,
    and removed again at exit."""
    p = pooler(start=False)
    pidfile = os.path.join(p.dir, "pooler.pid")
    with open(pidfile, "w") as f:
        f.write(f"{_dead_pid()}\n")
    p.start()
    p.wait_for_log(r"LOG stale pidfile, removing\n")
    assert harness.read_pidfile(pidfile) == p.pid
    p.stop()
    assert not os.path.exists(pidfile)


@pytest.mark.differs_from_pgbouncer_1_18(
    "not in PgBouncer 1.18: the later text for an empty pidfile (1.18: could not read pidfile)")
def test_empty_pidfile_refused(pooler):
    """An empty pidfile counts as another instance (one may be writing it right now), and
    is left alone."""
    p = pooler(start=False, pgbouncer={"logfile": None})
    pidfile = os.path.join(p.dir, "pooler.pid")
    open(pidfile, "w").close()
    r = _run(p.argv())
    assert r.returncode != 0
    assert re.search(r"FATAL pidfile '\S+' exists, another instance running\?", r.stderr), r.stderr
    assert os.path.exists(pidfile)


def test_daemon_without_logfile_runs(pooler):
    """-d with neither logfile nor syslog starts, as PgBouncer does (its lines go nowhere;
    sluice warns on the terminal first)."""
    p = pooler(args=["-d"], start=False, pgbouncer={"logfile": None})
    pidfile = os.path.join(p.dir, "pooler.pid")
    r = _run(p.argv())
    assert r.returncode == 0, r.stdout + r.stderr
    pid = None
    try:
        pid = harness.wait_until(lambda: harness.read_pidfile(pidfile), 15, what="pidfile")
        harness.wait_until(lambda: _listening(p.port), 15, what="daemon listening")
        assert p.psql("-c", "SELECT 1")[:2] == (0, "1\n")
        os.kill(pid, signal.SIGTERM)
        harness.wait_until(lambda: not harness.pid_alive(pid), 30, what="daemon exit")
    finally:
        if pid and harness.pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
