"""Serving the review page: ``minutesd web`` (its own process; the queue is polled) or a
thread of ``minutesd run`` when ``web.enabled`` (live progress and tokens from the hub).
uvicorn is imported only here, when a page is served."""

from __future__ import annotations

import threading

from daemon.live import Live
from daemon.settings import Settings
from daemon.web.app import build_app
from daemon.web.guard import Guard, check_bind
from daemon.web.views import Site


class WebServer:
    def __init__(self, settings: Settings, live: Live | None = None,
                 host: str | None = None, port: int | None = None):
        cfg = settings.web
        self.host = host or cfg.host
        self.port = cfg.port if port is None else port
        check_bind(self.host, cfg.token)
        self.app = build_app(Site(settings), Guard(cfg.token), live)
        self._server = None
        self._thread: threading.Thread | None = None

    def _config(self):
        import uvicorn

        return uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning",
                              access_log=False, server_header=False, lifespan="off",
                              timeout_graceful_shutdown=2)  # open event streams end then

    def serve(self) -> None:
        """In this thread, until SIGINT/SIGTERM (``minutesd web``)."""
        import uvicorn

        uvicorn.Server(self._config()).run()

    def start(self) -> WebServer:
        """In a thread of the daemon (uvicorn leaves signals to the main thread)."""
        import uvicorn

        server = uvicorn.Server(self._config())
        self._server = server
        self._thread = threading.Thread(target=server.run, name="minutesd-web", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
