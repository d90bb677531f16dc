"""pytest glue shared by test/integration and test/proto.

Fixtures
    pg       (session)  harness.PgCluster, stopped at the end of the session
    pooler   (function) factory: pooler(ini_text=None, **kw) -> harness.Pooler
                        (kw as harness.Pooler: make_ini dicts, userlist, args, start, ...).
                        Every pooler it started is stopped at teardown. When the test
                        failed, each pooler's log (and the PostgreSQL log written during the
                        test) is attached to the report. A pooler that died on its own
                        (nonzero exit or signal, e.g. an ASan abort) turns the test into a
                        failure; one that does not stop cleanly at teardown (nonzero exit
                        after SIGTERM, or had to be SIGKILLed) is a teardown error.
    sluice_bin          path of the binary under test

A test still running after $SLUICE_TEST_WATCHDOG seconds (default 300) gets every thread's
stack printed to stderr (pytest's faulthandler_timeout), to diagnose hangs.
"""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))

import harness  # noqa: E402

_POOLERS = "_sluice_poolers"


@pytest.fixture(scope="session")
def sluice_bin():
    return harness.sluice_bin()


@pytest.fixture(scope="session")
def pg():
    cluster = harness.PgCluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def pooler(request, pg, sluice_bin):
    started = []
    setattr(request.node, _POOLERS, started)
    request.node._sluice_pg = pg
    request.node._sluice_pg_mark = len(pg.log_text())

    def factory(ini_text=None, **kw):
        kw.setdefault("binary", sluice_bin)
        start = kw.pop("start", True)
        wait_ready = kw.pop("wait_ready", True)
        p = harness.Pooler(pg, ini_text, start=False, **kw)
        started.append(p)
        if start:
            p.start(wait_ready=wait_ready)
        return p

    yield factory

    problems = []
    for p in started:
        crash = p.crashed()
        rc = p.stop()
        if crash:
            if not getattr(p, "_crash_reported", False):
                problems.append(f"{crash}\n{p.full_log()}")
            continue
        crash = p.crashed()  # a crash signal or sanitizer report while shutting down
        if crash:
            problems.append(f"{crash} (when stopped)\n{p.full_log()}")
            continue
        if p.expect_exit:
            continue
        if p.killed:
            problems.append(f"{p.binary} (pid {p.pid}) did not exit after two SIGTERMs "
                            f"and was SIGKILLed\n{p.full_log()}")
        elif rc not in (None, 0) and not (rc == 1 and harness.is_pgbouncer(p.binary)):
            # PgBouncer before 1.23 exits 1 on SIGTERM ("got SIGTERM, fast exit");
            # sluice follows 1.23+ (shut down once clients are gone, exit 0).
            problems.append(f"{p.binary} (pid {p.pid}) exited with {p.describe_rc(rc)} "
                            f"when stopped\n{p.full_log()}")
    for p in started:
        p.cleanup()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def _pooler_sections(item):
    sections = []
    for i, p in enumerate(getattr(item, _POOLERS, []) or []):
        sections.append((f"pooler #{i} log ({p.binary}, port {p.port}, "
                         f"{p.describe_rc()})", p.full_log()))
    pg = getattr(item, "_sluice_pg", None)
    if pg is not None:
        text = pg.log_text()[getattr(item, "_sluice_pg_mark", 0):]
        if text.strip():
            sections.append(("postgresql log during the test", text[-20000:]))
    return sections


REFERENCE_MARK = "differs_from_pgbouncer_1_18"


def pytest_configure(config):
    """A hung test prints every thread's stack after $SLUICE_TEST_WATCHDOG seconds (default
    300) through pytest's own faulthandler_timeout (unless -o faulthandler_timeout=... was
    given); the test is not killed."""
    config.addinivalue_line(
        "markers", f"{REFERENCE_MARK}(reason): the test fails against Debian's PgBouncer 1.18 "
        "for that reason (a later PgBouncer feature or text that sluice follows, a sluice-only "
        "feature, or a PgBouncer 1.18 bug; strict=False: only with some timings); it runs as "
        "usual against sluice")
    try:
        if not config.getini("faulthandler_timeout"):
            config._inicache["faulthandler_timeout"] = float(
                os.environ.get("SLUICE_TEST_WATCHDOG", "300"))
    except (AttributeError, KeyError, ValueError):
        pass


def pytest_collection_modifyitems(config, items):
    """Against PgBouncer (SLUICE_BIN=/usr/sbin/pgbouncer, `make check-pgbouncer`) a test
    marked differs_from_pgbouncer_1_18 is a strict xfail: it must fail there, and one that
    passes is reported (its mark is stale); strict=False in the mark for a PgBouncer bug
    that shows only with some timings. Every other test must pass against PgBouncer too,
    so a difference nobody meant shows up as a plain failure. Against sluice the mark does
    nothing: the test runs and counts as usual."""
    if not harness.is_pgbouncer():
        return
    version = subprocess.run([harness.sluice_bin(), "-V"], capture_output=True,
                             text=True).stdout.split("\n")[0]
    if not version.startswith("PgBouncer 1.18."):
        return  # the marks record 1.18; another release runs every test as is
    for item in items:
        mark = item.get_closest_marker(REFERENCE_MARK)
        if mark is not None:
            reason = mark.args[0] if mark.args else mark.kwargs.get("reason", "")
            item.add_marker(pytest.mark.xfail(reason=reason,
                                              strict=mark.kwargs.get("strict", True)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"_sluice_rep_{rep.when}", rep)
    if rep.when != "call":
        return
    poolers = getattr(item, _POOLERS, []) or []
    crashes = []
    for p in poolers:
        c = p.crashed()
        if c:
            p._crash_reported = True
            crashes.append(c)
    if hasattr(rep, "wasxfail"):
        return  # a failure expected against PgBouncer (it may have exited at start-up)
    if crashes and not rep.failed:
        rep.outcome = "failed"
        rep.longrepr = "\n".join(crashes)
    elif crashes:
        rep.sections.append(("pooler crash", "\n".join(crashes)))
    if rep.failed:
        for title, text in _pooler_sections(item):
            rep.sections.append((title, text))
