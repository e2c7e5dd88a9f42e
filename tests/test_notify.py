"""sd_notify over a raw socket: the Notifier alone, and the real daemon against a fake
NOTIFY_SOCKET listener (READY=1 only after the models load, WATCHDOG=1 pings, STOPPING=1 and
a clean exit on SIGTERM)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from daemon.notify import Notifier

REPO = Path(__file__).resolve().parent.parent


class Listener:
    """A fake service manager: an AF_UNIX datagram socket collecting notify messages
    (``collect``), or, with ``background=True``, reading all the time as systemd does."""

    def __init__(self, abstract: bool = False, background: bool = False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"minutesd-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.dir = tempfile.mkdtemp(prefix="nfy", dir="/tmp")  # short: sun_path is 108 bytes
            path = os.path.join(self.dir, "notify")
            self.sock.bind(path)
            self.env = path
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._closed = False
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self._read_forever, daemon=True)
            self._thread.start()

    def _read_forever(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def collect(self, seconds: float = 0.3, until: str | None = None) -> list[str]:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self._thread is not None:
                if until and any(until in m for _, m in self.messages):
                    break
                time.sleep(0.05)
                continue
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))
            if until and until in data.decode():
                break
        return [m for _, m in self.messages]

    def lines(self) -> list[str]:
        return [ln for _, m in self.messages for ln in m.split("\n")]

    def close(self) -> None:
        self._closed = True
        if self._thread is not None:
            self._thread.join(1)
        self.sock.close()


def test_no_socket_is_a_no_op():
    n = Notifier(environ={})
    assert not n.enabled
    assert n.ready() is False and n.watchdog(force=True) is False and n.stopping() is False


@pytest.mark.parametrize("abstract", [False, True])
def test_messages_reach_the_socket(abstract):
    lst = Listener(abstract=abstract)
    try:
        n = Notifier(environ={"NOTIFY_SOCKET": lst.env})
        assert n.enabled
        assert n.ready("idle")
        assert n.status("busy")
        assert n.stopping()
        assert n.extend_timeout(90)
        msgs = lst.collect(0.3)
        assert msgs == ["READY=1\nSTATUS=idle", "STATUS=busy", "STOPPING=1",
                        "EXTEND_TIMEOUT_USEC=90000000"]
    finally:
        lst.close()


def test_watchdog_interval_and_pid_check():
    lst = Listener()
    try:
        n = Notifier(environ={"NOTIFY_SOCKET": lst.env, "WATCHDOG_USEC": "400000",
                              "WATCHDOG_PID": str(os.getpid())})
        assert n.watchdog_s == pytest.approx(0.4)
        assert n.watchdog() is True
        assert n.watchdog() is False  # throttled to a quarter of the interval
        time.sleep(0.11)
        assert n.watchdog() is True
        assert lst.collect(0.2) == ["WATCHDOG=1", "WATCHDOG=1"]
        other = Notifier(environ={"NOTIFY_SOCKET": lst.env, "WATCHDOG_USEC": "400000",
                                  "WATCHDOG_PID": "1"})
        assert other.watchdog_s is None  # meant for another process
    finally:
        lst.close()


def test_a_manager_that_stops_reading_never_blocks_the_daemon():
    lst = Listener()  # never reads: its queue fills after ~10 datagrams
    try:
        n = Notifier(environ={"NOTIFY_SOCKET": lst.env})
        t0 = time.monotonic()
        results = [n.watchdog(force=True) for _ in range(200)]
        assert time.monotonic() - t0 < 2.0
        assert results[0] and not all(results)  # the first went, later ones were dropped
    finally:
        lst.close()


def test_a_vanished_manager_never_raises(tmp_path):
    n = Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.ready() is False
    assert n.watchdog(force=True) is False


def _daemon_env(tmp: Path, lst: Listener, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"NOTIFY_SOCKET": lst.env, "WATCHDOG_USEC": "400000",
                "MINUTESD_CONFIG": str(tmp / "s.yaml"), "PYTHONUNBUFFERED": "1"})
    env.pop("WATCHDOG_PID", None)
    env.update(extra)
    return env


def test_daemon_notifies_ready_after_models_watchdog_and_stopping(tmp_path):
    (tmp_path / "s.yaml").write_text(
        f"daemon:\n  root: {tmp_path}\n  state_dir: state\n  stable_seconds: 0.2\n"
        "  facts_wait_s: 0\n")
    lst = Listener(abstract=True)
    load_s = 1.5
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.testing", "--fake-all", "--", "run", "--json-logs"],
        cwd=REPO, env=_daemon_env(tmp_path, lst, MINUTESD_FAKE_LOAD_S=str(load_s)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lst.collect(30, until="READY=1")
        ready = [t for t, m in lst.messages if "READY=1" in m]
        assert ready, f"no READY=1; got {lst.messages}"
        # READY only once the (fake) models have loaded; the watchdog was fed meanwhile
        assert ready[0] - t0 >= load_s
        before = [m for t, m in lst.messages if t < ready[0]]
        assert any("WATCHDOG=1" in m for m in before)
        assert any("STATUS=loading models" in m for m in before)
        lst.collect(1.0)
        after = [m for t, m in lst.messages if t > ready[0]]
        assert sum("WATCHDOG=1" in m for m in after) >= 3  # every ~0.1 s from the main loop
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        lst.collect(0.3)
        assert proc.returncode == 0, out
        assert any(ln == "STOPPING=1" for ln in lst.lines())
        stop_i = next(i for i, (_, m) in enumerate(lst.messages) if "STOPPING=1" in m)
        ready_i = next(i for i, (_, m) in enumerate(lst.messages) if "READY=1" in m)
        assert ready_i < stop_i
        assert '"event": "stopped"' in out
    finally:
        if proc.poll() is None:
            proc.kill()
        lst.close()


def test_sigterm_while_models_load_exits_cleanly(tmp_path):
    (tmp_path / "s.yaml").write_text(f"daemon:\n  root: {tmp_path}\n  state_dir: state\n")
    lst = Listener(abstract=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.testing", "--fake-all", "--", "run"],
        cwd=REPO, env=_daemon_env(tmp_path, lst, MINUTESD_FAKE_LOAD_S="30"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lst.collect(20, until="loading models")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        lst.collect(0.3)
        assert proc.returncode == 0, out
        assert "READY=1" not in lst.lines()
        assert "STOPPING=1" in lst.lines()
    finally:
        if proc.poll() is None:
            proc.kill()
        lst.close()
