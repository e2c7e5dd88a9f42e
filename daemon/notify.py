"""systemd's notify protocol (sd_notify) over a raw AF_UNIX datagram socket.

A dozen lines of protocol do not justify a dependency: the service manager passes the socket
in ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace) and reads
newline-separated ``KEY=VALUE`` assignments from each datagram. Outside systemd (no
``$NOTIFY_SOCKET``) every call is a no-op, so the daemon runs the same from a terminal.

Used: ``READY=1`` once the models are loaded, ``STATUS=...`` for ``systemctl status``,
``WATCHDOG=1`` from the main loop, ``EXTEND_TIMEOUT_USEC`` while models load, ``STOPPING=1``
on SIGTERM.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if addr.startswith("@"):  # abstract namespace
            self.address = "\0" + addr[1:]
        elif addr.startswith("/"):
            self.address = addr
        self._sock: socket.socket | None = None
        self.watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._last_ping = 0.0
        self.sent: list[str] = []  # what was sent, for tests and `status`

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str, wait_s: float = 0.0) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; False if not under systemd or it failed.

        Never blocks the caller (the main loop) for long: the socket is non-blocking, and a
        full queue (a manager not reading) drops the message, after retrying for ``wait_s``.
        """
        if not self.address:
            return False
        msg = "\n".join(assignments)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM
                                               | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
                self._sock.sendto(msg.encode("utf-8"), self.address)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)
            except OSError:
                # The manager went away or the socket is gone: never take the daemon down.
                return False
        self.sent.append(msg)
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []), wait_s=5.0)

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []), wait_s=2.0)

    def extend_timeout(self, seconds: float) -> bool:
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def watchdog(self, force: bool = False) -> bool:
        """``WATCHDOG=1``, at most every quarter of ``WatchdogSec`` (every 10 s if unset)."""
        now = time.monotonic()
        interval = (self.watchdog_s / 4) if self.watchdog_s else 10.0
        if not force and now - self._last_ping < interval:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
