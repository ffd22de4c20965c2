"""The systemd unit (deploy/grinder-live@.service): `systemd-analyze verify` clean, `security` OK or better, and the
choices its comments justify (the watchdog against the port's bounds, no MemoryDenyWriteExecute because of numba).

`systemd-analyze` runs on a copy of the unit instantiated as grinder-live@test.service; `security` with
--offline=true (systemd >= 250), which rates the file itself: no systemd as PID 1 is needed, nothing is loaded.
"""

from __future__ import annotations

import configparser
import errno
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from grinder.live.port import ExchangePort
from grinder.live.retry import Backoff
from grinder.live.sd_notify import stall_after_s
from tests.conftest import REPO

UNIT = REPO / "deploy" / "grinder-live@.service"
MISSING_BINARY = re.compile(
    r"^grinder-live@test\.service: Command /opt/grinder/\S+ is not executable: No such file or directory$"
)
LEVELS_OK = ("SAFE", "PERFECT", "OK")  # systemd-analyze security's best levels (exposure below 2.0)


def analyze() -> str:
    """The systemd-analyze binary; skipped only where it is missing, never on CI (.ci/run installs it)."""
    path = shutil.which("systemd-analyze")
    if path is None:
        why = "systemd-analyze is not installed (apt-get install systemd; .ci/run does it on CI)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return path


@pytest.fixture
def unit_copy(tmp_path):
    path = tmp_path / "grinder-live@test.service"
    shutil.copyfile(UNIT, path)
    return path


def _run(*args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run([analyze(), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def service() -> configparser.SectionProxy:
    """The unit's [Service] section (the last value of a key set twice)."""
    cp = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#",))
    cp.optionxform = str
    cp.read_string(UNIT.read_text())
    return cp["Service"]


def test_systemd_analyze_verify_finds_nothing_but_the_missing_install(unit_copy):
    r = _run("verify", str(unit_copy), cwd=unit_copy.parent)
    lines = [x for x in (r.stderr + r.stdout).splitlines() if x.strip()]
    others = [x for x in lines if not MISSING_BINARY.match(x)]
    assert not others, "\n".join(others)
    assert r.returncode == 0 or lines, r  # a failure must be the missing binary's


def test_systemd_analyze_security_rates_the_unit_ok_or_better(unit_copy):
    r = _run("security", "--offline=true", str(unit_copy), cwd=unit_copy.parent)
    m = re.search(r"Overall exposure level for grinder-live@test\.service: (\d+\.\d) (\w+)", r.stdout)
    assert m, r.stdout + r.stderr
    score, level = float(m.group(1)), m.group(2)
    assert level in LEVELS_OK and score < 2.0, f"exposure {score} {level}:\n{r.stdout}"
    print(f"systemd-analyze security: {score} {level}")  # noqa: T201 - the report reads it with -s


def test_the_unit_is_of_type_notify_with_a_watchdog_the_decision_loop_feeds():
    s = service()
    assert (s["Type"], s["NotifyAccess"]) == ("notify", "main")
    watchdog = float(s["WatchdogSec"])
    # systemd aborts a stalled loop between (stall bound + WatchdogSec - one feeding interval) and (stall bound +
    # WatchdogSec) after its last beat; the longest a healthy loop goes without a beat is one decision's requests as
    # the port bounds them: the cancels (every try timed out, the backoff's longest waits between), then the
    # creates (each try a lookup and a create).
    port, b = ExchangePort.timeout_s, Backoff()
    waits = sum(min(b.cap_s, b.base_s * 2 ** (k - 1)) for k in range(1, b.max_attempts))
    decision_s = (b.max_attempts * port + waits) + (b.max_attempts * 2 * port + waits)
    assert stall_after_s(watchdog, 100) + watchdog * 3 / 4 > decision_s
    assert stall_after_s(watchdog, 100) <= watchdog  # but a real stall is caught within two WatchdogSec
    # The stop outlasts its parts (live.config: stop_timeout_s + about 15 s), and READY has time for a cold start.
    assert float(s["TimeoutStopSec"]) >= 20 + 15 and float(s["TimeoutStartSec"]) >= 60
    # What the adapter needs stays allowed: the venue and Redis, the notify socket, its state folder.
    assert s["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert s["StateDirectory"] == "grinder/%i" and "MemoryDenyWriteExecute" not in s


_MDWE_CHILD = textwrap.dedent("""
    import ctypes, sys
    if sys.argv[1] == "on":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
            sys.exit(10 + ctypes.get_errno())
    try:
        import numba
        numba.njit(lambda x: x + 1)(1)
    except OSError as e:
        print(e)
        sys.exit(3)
""")


def test_numba_cannot_run_under_memory_deny_write_execute_so_the_unit_does_not_set_it():
    """The kernel's PR_SET_MDWE refuses what systemd's MemoryDenyWriteExecute refuses (memory gaining PROT_EXEC)."""
    on = subprocess.run([sys.executable, "-c", _MDWE_CHILD, "on"], capture_output=True, text=True, timeout=300)
    if on.returncode == 10 + errno.EINVAL:
        pytest.skip("the kernel has no PR_SET_MDWE (Linux < 6.3)")
    off = subprocess.run([sys.executable, "-c", _MDWE_CHILD, "off"], capture_output=True, text=True, timeout=300)
    assert off.returncode == 0, off.stderr
    assert on.returncode == 3 and "executable memory" in on.stdout, (on.returncode, on.stdout, on.stderr)
