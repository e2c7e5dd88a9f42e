"""Test-session guard (on PYTHONPATH for every Python the tests start, and installed in the
pytest process by conftest): resolving or connecting to a real Google host raises at once
and is written to ``$MINUTESD_NET_GUARD_LOG``, which the session checks at its end. The fake
Drive server is on 127.0.0.1; Google's servers must never be reached from the tests."""

from __future__ import annotations

import os
import socket

GOOGLE = ("googleapis.com", "google.com", "googleusercontent.com", "gstatic.com",
          "google.internal", "metadata.google.internal")


class RealGoogleHostBlocked(ConnectionRefusedError):
    pass


def _is_google(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    h = host.lower().rstrip(".")
    return h == "169.254.169.254" or any(h == g or h.endswith("." + g) for g in GOOGLE)


def _blocked(host) -> None:
    msg = f"test guard: attempt to reach the real Google host {host!r} (pid {os.getpid()})"
    log = os.environ.get("MINUTESD_NET_GUARD_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(msg + "\n")
    raise RealGoogleHostBlocked(msg)


def install() -> None:
    if getattr(socket, "_minutesd_guarded", False):
        return
    real_getaddrinfo = socket.getaddrinfo
    real_gethostbyname = socket.gethostbyname
    real_create_connection = socket.create_connection

    def getaddrinfo(host, *args, **kwargs):
        if _is_google(host):
            _blocked(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def gethostbyname(host):
        if _is_google(host):
            _blocked(host)
        return real_gethostbyname(host)

    def create_connection(address, *args, **kwargs):
        if _is_google(address[0]):
            _blocked(address[0])
        return real_create_connection(address, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = gethostbyname
    socket.create_connection = create_connection
    socket._minutesd_guarded = True


if os.environ.get("MINUTESD_NET_GUARD", "1") != "0":
    install()
