"""Root conftest: shared fixtures for every suite, and no skipped tests."""

import pytest

pytest_plugins = ["mailroom_devstack.pytest_plugin"]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test is a failing test with a better excuse: fail the run if any was skipped."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if reporter is not None and skipped and exitstatus == 0:
        reporter.write_line(f"FAILED: {len(skipped)} test(s) skipped; skips are not allowed", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
