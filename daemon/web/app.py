"""The review page's routes (Starlette; imported only here, and only when the page is built,
so ``minutesd``'s other commands never load the web stack).

Pages: ``/`` the queue (live), ``/meetings`` the archive (paginated, searched with the
archive's own index), ``/meeting/KEY`` minutes and transcript with the recording,
``/meeting/KEY/speakers`` clips and names. Files: ``/recording/KEY``, ``/clip/KEY/LABEL``
and ``/static/NAME`` (a fixed list). Every POST needs the CSRF token and our own Origin;
every request from a non-loopback client the token (:mod:`daemon.web.guard`).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from daemon.archive.local import load_record
from daemon.corrections import CorrectionError
from daemon.live import Live
from daemon.web.clips import make_clip
from daemon.web.guard import SESSION_COOKIE, TOKEN_COOKIE, Guard, owned_file
from daemon.web.views import BadUpload, Site

HERE = Path(__file__).resolve().parent
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
CHUNK = 1 << 20


def build_app(site: Site, guard: Guard, live: Live | None = None):
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import (
        FileResponse,
        HTMLResponse,
        JSONResponse,
        PlainTextResponse,
        RedirectResponse,
        Response,
        StreamingResponse,
    )
    from starlette.routing import Route

    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(["html"]))

    class Gate:
        """Auth for non-local clients, a session cookie for everyone, CSRF on POST."""

        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            req = Request(scope, receive)
            client = scope.get("client") or (None, None)
            if req.url.path != "/login" and not guard.allowed(
                    client[0], req.cookies.get(TOKEN_COOKIE), req.headers.get("authorization")):
                resp: Response = (RedirectResponse("/login", 303) if req.method == "GET"
                                  else PlainTextResponse("token required", 401))
                return await resp(scope, receive, send)
            session = req.cookies.get(SESSION_COOKIE)
            if req.method not in ("GET", "HEAD"):
                if not guard.same_origin(req.headers.get("origin"), req.headers.get("referer"),
                                         req.headers.get("host")):
                    return await PlainTextResponse("cross-site request refused", 403)(
                        scope, receive, send)
                given = req.headers.get("x-csrf-token") or req.query_params.get("csrf")
                if given is None and req.headers.get("content-type", "").startswith(
                        "application/x-www-form-urlencoded"):
                    body = await req.body()
                    given = (parse_qs(body.decode("utf-8", "replace")).get("csrf") or [None])[0]

                    async def replay(body=body):
                        return {"type": "http.request", "body": body, "more_body": False}
                    receive = replay
                if not guard.csrf_ok(session, given) and req.url.path != "/login":
                    return await PlainTextResponse("missing or wrong CSRF token", 403)(
                        scope, receive, send)
            scope.setdefault("state", {})["session"] = session or guard.new_session()
            new = session is None

            async def send_cookie(msg):
                if new and msg["type"] == "http.response.start":
                    msg["headers"] = list(msg.get("headers", [])) + [(
                        b"set-cookie", f"{SESSION_COOKIE}={scope['state']['session']}; "
                        "Path=/; HttpOnly; SameSite=Strict".encode())]
                await send(msg)
            return await self.app(scope, receive, send_cookie)

    def page(req: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            csrf=guard.csrf_for(req.state.session), live=live is not None, **ctx)
        return HTMLResponse(html, status_code, headers={
            "content-security-policy": "default-src 'self'; media-src 'self'; "
                                       "frame-ancestors 'none'; form-action 'self'",
            "x-content-type-options": "nosniff", "referrer-policy": "same-origin"})

    async def form(req: Request) -> dict[str, str]:
        body = await req.body()
        return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}

    async def queue(req: Request):
        return page(req, "queue.html", q=await run_in_threadpool(site.queue), tab="queue")

    async def queue_json(req: Request):
        return JSONResponse(await run_in_threadpool(site.queue))

    async def events(req: Request):
        """Server-sent events: the queue every 2 s, and (inside the daemon) stage, progress
        and the LLM's tokens as they come."""
        async def gen():
            seq = live.seq if live else 0
            last_q = 0.0
            loop = asyncio.get_running_loop()
            while not await req.is_disconnected():
                if loop.time() - last_q >= 2.0:
                    last_q = loop.time()
                    q = await run_in_threadpool(site.queue)
                    yield f"event: queue\ndata: {json.dumps(q, ensure_ascii=False)}\n\n"
                if live:
                    evs = await run_in_threadpool(live.since, seq, 1.0)
                    for e in evs:
                        seq = e["seq"]
                        yield (f"event: {e['kind']}\n"
                               f"data: {json.dumps(e, ensure_ascii=False)}\n\n")
                else:
                    await asyncio.sleep(1.0)
        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})

    async def upload(req: Request):
        name = req.query_params.get("name", "")
        length = req.headers.get("content-length")
        max_bytes = site.settings.web.max_upload_mb * 1024 * 1024
        try:
            if length and int(length) > max_bytes:
                raise BadUpload(f"{name}: larger than web.max_upload_mb "
                                f"({site.settings.web.max_upload_mb} MB)")
            tmp, final = site.upload_path(name)
            size = 0
            with open(tmp, "xb") as f:
                try:
                    async for chunk in req.stream():
                        size += len(chunk)
                        if size > max_bytes:
                            raise BadUpload(f"{name}: larger than web.max_upload_mb "
                                            f"({site.settings.web.max_upload_mb} MB)")
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                except BaseException:
                    f.close()
                    tmp.unlink(missing_ok=True)
                    raise
            kept = await run_in_threadpool(site.finish_upload, tmp, final)
        except BadUpload as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, 400)
        return JSONResponse({"ok": True, "name": kept})

    async def retry(req: Request):
        try:
            name = await run_in_threadpool(site.retry, req.path_params["key"])
        except BadUpload as exc:
            return PlainTextResponse(str(exc), 404)
        return RedirectResponse(f"/?retried={name}", 303)

    async def meetings(req: Request):
        q = (req.query_params.get("q") or "").strip() or None
        try:
            pg = int(req.query_params.get("page") or 1)
        except ValueError:
            pg = 1
        data = await run_in_threadpool(site.meetings, q, pg)
        return page(req, "meetings.html", d=data, tab="meetings")

    async def meeting(req: Request):
        data = await run_in_threadpool(site.meeting, req.path_params["key"])
        if data is None:
            return PlainTextResponse("no such meeting", 404)
        return page(req, "meeting.html", d=data, tab="meetings")

    async def speakers(req: Request):
        key = req.path_params["key"]
        said: list[str] = []
        error = None
        if req.method == "POST":
            f = await form(req)
            try:
                said = await run_in_threadpool(site.set_name, key, f.get("label", ""),
                                               f.get("name", ""), "confirm" in f)
            except CorrectionError as exc:
                error = str(exc)
            else:  # post/redirect/get: reloading the page does not set the name again
                return RedirectResponse(f"/meeting/{quote(key)}/speakers?"
                                        + urlencode([("said", x) for x in said]), 303)
        said = req.query_params.getlist("said")[:20]
        data = await run_in_threadpool(site.speakers, key)
        if data is None:
            return PlainTextResponse("no such meeting", 404)
        return page(req, "speakers.html", d=data, said=said, error=error, tab="meetings",
                    status_code=400 if error else 200)

    async def recording(req: Request):
        f = await run_in_threadpool(site.recording, req.path_params["key"])
        if f is None:
            return PlainTextResponse("no recording kept for that meeting", 404)
        return FileResponse(f)

    async def clip(req: Request):
        key, label = req.path_params["key"], req.path_params["label"]
        folder = await run_in_threadpool(site.folder_of, key)
        rec_path = await run_in_threadpool(site.recording, key)
        if folder is None or rec_path is None:
            return PlainTextResponse("no recording kept for that meeting", 404)
        rec = await run_in_threadpool(load_record, folder)
        if label not in {s.id for s in rec.transcript.speakers}:
            return PlainTextResponse("no such speaker", 404)
        out = await run_in_threadpool(make_clip, rec_path, rec.transcript, label,
                                      site.settings.web.clip_s, site.clips_dir, key)
        out = owned_file(out, [site.clips_dir]) if out else None
        if out is None:
            return PlainTextResponse("that speaker has no speech to play", 404)
        return FileResponse(out, media_type="audio/wav")

    async def static(req: Request):
        name = req.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("not found", 404)
        return FileResponse(HERE / "static" / name, media_type=STATIC[name])

    async def login(req: Request):
        if req.method == "POST":
            f = await form(req)
            if guard.token_ok(f.get("token", "")):
                resp = RedirectResponse("/", 303)
                resp.set_cookie(TOKEN_COOKIE, f["token"], httponly=True, samesite="strict")
                return resp
            return HTMLResponse(env.get_template("login.html").render(error="wrong token"), 401)
        return HTMLResponse(env.get_template("login.html").render(error=None))

    routes = [
        Route("/", queue), Route("/queue.json", queue_json), Route("/events", events),
        Route("/upload", upload, methods=["POST"]),
        Route("/retry/{key:str}", retry, methods=["POST"]),
        Route("/meetings", meetings), Route("/meeting/{key:str}", meeting),
        Route("/meeting/{key:str}/speakers", speakers, methods=["GET", "POST"]),
        Route("/recording/{key:str}", recording), Route("/clip/{key:str}/{label:str}", clip),
        Route("/static/{name:str}", static), Route("/login", login, methods=["GET", "POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(Gate)])
