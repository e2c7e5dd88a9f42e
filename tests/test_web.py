"""The review page without a browser: the ASGI app called directly (as uvicorn would, any
client address), over a real archive and job queue in tmp_path.

Security: non-local clients need the token; a non-local bind without one is refused; every
POST needs the CSRF token and our Origin; no file outside the daemon's folders is served
(encoded ``..``, symlinks, absolute paths); names set here do what ``minutesd speakers --set``
does; the listing is paginated and searched with the archive's index."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from daemon.archive.base import ArchiveRecord
from daemon.archive.local import LocalArchive, load_record
from daemon.corrections import speakers_command
from daemon.service.lifecycle import Service
from daemon.service.queue import DB_NAME, JobStore
from daemon.settings import DaemonSettings, Settings, WebSettings
from daemon.testing import FakeProcessor
from daemon.types import (
    ActionItem,
    Minutes,
    QualityFlag,
    Quote,
    Speaker,
    SpeakerSegment,
    SpeakerTranscript,
    Topic,
)
from daemon.web.app import build_app
from daemon.web.guard import SESSION_COOKIE, Guard, WebRefused, check_bind, owned_file
from daemon.web.views import Site

TOKEN = "a-long-secret-token-1234"
REPO_WEB = Path(__file__).resolve().parent.parent / "daemon" / "web"


def record(i: int, title: str = "Budget review") -> ArchiveRecord:
    key = hashlib.sha256(f"meeting {i}".encode()).hexdigest()
    segs = [SpeakerSegment(0.0, 4.0, "SPEAKER_00", "We need to order the seeds."),
            SpeakerSegment(4.5, 9.0, "SPEAKER_01", "I will order them by Friday.")]
    t = SpeakerTranscript(duration_s=9.0, speakers=[Speaker("SPEAKER_00", None, 4.0),
                                                    Speaker("SPEAKER_01", None, 4.5)],
                          segments=segs, language="en", source="x.wav")
    m = Minutes(title=f"{title} {i}", date=f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}",
                attendees=["Speaker 1", "Speaker 2"],
                summary="Speaker 2 orders the seeds.", discussion_points=["Seeds"],
                decisions=[], action_items=[ActionItem("Speaker 2", "Order the seeds")],
                duration_s=9.0, speakers=[Speaker("SPEAKER_00", None, 4.0),
                                          Speaker("SPEAKER_01", None, 4.5)],
                date_source="recording tags")
    return ArchiveRecord(key=key, source_name=f"m{i}.wav", minutes=m, transcript=t,
                         date=m.date, time="10:00")


def make_settings(root: Path, **web) -> Settings:
    s = Settings()
    s.daemon = DaemonSettings(root=root, state_dir=Path("state"))
    s.speakers.voice_profiles = False
    s.web = WebSettings(**web)
    return s


@pytest.fixture
def site(tmp_path):
    s = make_settings(tmp_path, page_size=5)
    for d in ("inbox", "processed", "failed", "state"):
        (tmp_path / d).mkdir()
    a = LocalArchive.from_settings(s)
    for i in range(12):
        a.store(record(i))
    a.close()
    return Site(s)


def call(app, method: str, path: str, *, client: str = "127.0.0.1", headers=None,
         body: bytes = b"", query: str = "",
         messages: list[dict] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request through the ASGI app; ``path`` is sent raw (as on the wire)."""
    hdrs = [(b"host", b"127.0.0.1:8790")] + [(k.lower().encode(), v.encode())
                                              for k, v in (headers or {}).items()]
    from urllib.parse import unquote
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": unquote(path),
             "raw_path": path.encode(), "query_string": query.encode(), "headers": hdrs,
             "client": (client, 50000), "server": ("127.0.0.1", 8790), "root_path": ""}
    out: dict = {"status": None, "headers": {}, "body": b""}
    queue = list(messages or [{"type": "http.request", "body": body, "more_body": False}])

    async def receive():
        if not queue:
            await asyncio.sleep(3600)
        return queue.pop(0)

    async def send(msg):
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
            for k, v in msg.get("headers", []):
                out["headers"].setdefault(k.decode().lower(), v.decode())
        elif msg["type"] == "http.response.body":
            out["body"] += msg.get("body", b"")

    try:
        asyncio.run(app(scope, receive, send))
    except Exception as exc:  # noqa: BLE001 - what the server would log; the test looks at files
        out["error"] = exc
    return out["status"], out["headers"], out["body"]


def session(app) -> tuple[str, str]:
    """(cookie header, csrf token) as a browser gets them from a first page."""
    st, h, body = call(app, "GET", "/meetings")
    assert st == 200
    sid = re.search(f"{SESSION_COOKIE}=([^;]+)", h["set-cookie"]).group(1)
    csrf = re.search(r'name="csrf" content="([0-9a-f]+)"', body.decode()).group(1)
    return f"{SESSION_COOKIE}={sid}", csrf


# ------------------------------------------------------------------ who may ask


def test_non_local_bind_needs_a_token():
    with pytest.raises(WebRefused, match="web.token is not set"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", TOKEN)
    check_bind("127.0.0.1", None)
    check_bind("::1", None)


def test_a_non_local_client_without_the_token_is_refused(site):
    app = build_app(site, Guard(TOKEN))
    st, h, _ = call(app, "GET", "/meetings", client="192.0.2.7")
    assert st == 303 and h["location"] == "/login"
    st, _, _ = call(app, "GET", "/recording/" + "0" * 64, client="192.0.2.7")
    assert st == 303
    st, _, _ = call(app, "POST", "/upload", client="192.0.2.7", query="name=a.wav")
    assert st == 401
    st, _, _ = call(app, "GET", "/meetings", client="192.0.2.7",
                    headers={"authorization": "Bearer wrong-token-wrong-token"})
    assert st == 303
    st, _, body = call(app, "GET", "/meetings", client="192.0.2.7",
                       headers={"authorization": f"Bearer {TOKEN}"})
    assert st == 200 and b"Budget review" in body
    st, _, _ = call(app, "GET", "/meetings", client="192.0.2.7",
                    headers={"cookie": f"minutesd_token={TOKEN}"})
    assert st == 200
    # without a token configured, a non-local client is never served
    st, _, _ = call(build_app(site, Guard(None)), "GET", "/meetings", client="192.0.2.7")
    assert st == 303


def test_login_sets_the_token_cookie(site):
    app = build_app(site, Guard(TOKEN))
    hdr = {"origin": "http://127.0.0.1:8790",
           "content-type": "application/x-www-form-urlencoded"}
    st, _, _ = call(app, "POST", "/login", client="192.0.2.7", headers=hdr, body=b"token=nope")
    assert st == 401
    st, h, _ = call(app, "POST", "/login", client="192.0.2.7", headers=hdr,
                    body=f"token={TOKEN}".encode())
    assert st == 303 and f"minutesd_token={TOKEN}" in h["set-cookie"]


# ------------------------------------------------------------------ forgery


def test_every_post_needs_the_csrf_token_and_our_origin(site):
    app = build_app(site, Guard(None))
    cookie, csrf = session(app)
    key = record(3).key
    form = {"content-type": "application/x-www-form-urlencoded", "cookie": cookie}
    good = f"csrf={csrf}&label=SPEAKER_01&name=Grace+Kim".encode()
    # no Origin (nor Referer): refused
    assert call(app, "POST", f"/meeting/{key}/speakers", headers=form, body=good)[0] == 403
    # another site's Origin, with a valid token: refused
    evil = dict(form, origin="http://evil.example")
    assert call(app, "POST", f"/meeting/{key}/speakers", headers=evil, body=good)[0] == 403
    ours = dict(form, origin="http://127.0.0.1:8790")
    # our Origin, no token or another session's token: refused
    assert call(app, "POST", f"/meeting/{key}/speakers", headers=ours,
                body=b"label=SPEAKER_01&name=Grace+Kim")[0] == 403
    other = Guard(None).csrf_for("another-session")
    assert call(app, "POST", f"/meeting/{key}/speakers", headers=ours,
                body=f"csrf={other}&label=SPEAKER_01&name=X".encode())[0] == 403
    assert call(app, "POST", "/upload", headers=dict(ours, **{"x-csrf-token": "0" * 64}),
                query="name=a.wav", body=b"x")[0] == 403
    assert call(app, "POST", f"/retry/{key}", headers=ours, body=b"")[0] == 403
    assert load_record(Path(site.folder_of(key))).transcript.speakers[1].name is None
    # all three: accepted, then the page again by GET (a reload sets nothing twice)
    st, h, _ = call(app, "POST", f"/meeting/{key}/speakers", headers=ours, body=good)
    assert st == 303 and h["location"].startswith(f"/meeting/{key}/speakers?said=")
    assert load_record(Path(site.folder_of(key))).transcript.speakers[1].name == "Grace Kim"
    path, _, query = h["location"].partition("?")
    st, _, body = call(app, "GET", path, query=query, headers={"cookie": cookie})
    assert st == 200 and "set: SPEAKER_01 — → Grace Kim" in body.decode()
    # a label the meeting does not have: the page says so
    st, _, body = call(app, "POST", f"/meeting/{key}/speakers", headers=ours,
                       body=f"csrf={csrf}&label=SPEAKER_09&name=X".encode())
    assert st == 400 and "no speaker" in body.decode()


# ------------------------------------------------------------------ files


def _job(site: Site, key: str, dest: str, name: str = "m.wav") -> None:
    store = JobStore(site.state_dir / DB_NAME)
    store.add_archived(key, name, dest, str(site.folder_of(key)), "T", None, None)
    store.set_dest(key, dest)
    store.close()


def test_only_the_daemons_own_files_are_served(site, tmp_path):
    app = build_app(site, Guard(None))
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (tmp_path / "processed" / "m.wav").write_bytes(b"RIFF fake")
    link = tmp_path / "processed" / "link.wav"
    link.symlink_to(secret)
    roots = site.roots()
    assert owned_file(tmp_path / "processed" / "m.wav", roots) is not None
    assert owned_file(link, roots) is None  # a link, even inside
    assert owned_file(tmp_path / "processed" / ".." / "secret.txt", roots) is None
    assert owned_file(secret, roots) is None
    assert owned_file("/etc/passwd", roots) is None
    (tmp_path / "processed" / "sub").symlink_to(tmp_path)
    assert owned_file(tmp_path / "processed" / "sub" / "secret.txt", roots) is None
    # a job whose recording is a link to outside: not served
    key = record(4).key
    _job(site, key, str(link))
    assert call(app, "GET", f"/recording/{key}")[0] == 404
    for path in ("/recording/..%2f..%2fsecret.txt", "/recording/%2e%2e%2fsecret.txt",
                 "/recording/%2Fetc%2Fpasswd", "/static/..%2f..%2f..%2fsecret.txt",
                 "/static/%2e%2e/app.py", "/clip/..%2f..%2f/secret.txt",
                 "/static//etc/passwd", "/recording//etc/passwd", "/../secret.txt",
                 "/%2e%2e/%2e%2e/secret.txt", "/meeting/..%2f..%2fsecret.txt"):
        st, _, body = call(app, "GET", path)
        assert st in (404, 405), (path, st)
        assert b"top secret" not in body and b"root:" not in body, path
    # a good one is served
    (tmp_path / "processed" / "r.wav").write_bytes(b"RIFF real")
    key5 = record(5).key
    _job(site, key5, str(tmp_path / "processed" / "r.wav"))
    st, _, body = call(app, "GET", f"/recording/{key5}")
    assert st == 200 and body == b"RIFF real"


def test_upload_keeps_recordings_only_and_never_half_a_file(site, tmp_path):
    app = build_app(site, Guard(None))
    cookie, csrf = session(app)
    hdr = {"cookie": cookie, "origin": "http://127.0.0.1:8790", "x-csrf-token": csrf}
    inbox = tmp_path / "inbox"
    st, _, body = call(app, "POST", "/upload", headers=hdr, query="name=notes.txt", body=b"x")
    assert st == 400 and b"not a recording" in body
    st, _, body = call(app, "POST", "/upload", headers=hdr, query="name=bad.wav",
                       body=os.urandom(5000))
    assert st == 400 and b"not an audio or video file" in body
    st, _, body = call(app, "POST", "/upload", headers=hdr, query="name=..%2F..%2Fx.wav",
                       body=b"")
    assert st == 400
    assert sorted(os.listdir(inbox)) == []  # nothing kept, no temp file left
    # a good recording under a name that climbs out: kept in the inbox under its last part
    from conftest import encode, tone
    wav = encode(tmp_path / "t.wav", tone(1.0))
    st, _, body = call(app, "POST", "/upload", headers=hdr, query="name=..%2F..%2Fevil.wav",
                       body=wav.read_bytes())
    assert st == 200 and b'"name":"evil.wav"' in body
    assert sorted(os.listdir(inbox)) == ["evil.wav"]
    assert (inbox / "evil.wav").read_bytes() == wav.read_bytes()
    assert not (tmp_path.parent / "evil.wav").exists()
    (inbox / "evil.wav").unlink()
    # the browser goes away half-way: nothing of it is left, not even the temporary file
    half = wav.read_bytes()
    call(app, "POST", "/upload", headers=hdr, query="name=gone.wav",
         messages=[{"type": "http.request", "body": half[:3000], "more_body": True},
                   {"type": "http.disconnect"}])
    assert sorted(os.listdir(inbox)) == []
    site.settings.web.max_upload_mb = 1
    st, _, body = call(app, "POST", "/upload", headers=dict(hdr, **{"content-length": str(2 << 20)}),
                       query="name=big.wav", body=b"")
    assert st == 400 and b"max_upload_mb" in body
    assert sorted(os.listdir(inbox)) == []


# ------------------------------------------------------------------ pages


def test_meetings_are_paginated_newest_first_and_searched(site):
    app = build_app(site, Guard(None))
    st, _, body = call(app, "GET", "/meetings")
    html = body.decode()
    assert st == 200 and "page 1 of 3" in html
    dates = re.findall(r"<td>(\d{4}-\d\d-\d\d) ", html)
    assert len(dates) == 5 and dates == sorted(dates, reverse=True)
    st, _, body = call(app, "GET", "/meetings", query="page=3")
    assert len(re.findall(r"<td>(\d{4}-\d\d-\d\d) ", body.decode())) == 2
    st, _, body = call(app, "GET", "/meetings", query="q=%22Budget+review+7%22")
    assert "Budget review 7" in body.decode() and "Budget review 3" not in body.decode()


def test_set_name_does_what_minutesd_speakers_set_does(site, tmp_path, capsys):
    app = build_app(site, Guard(None))
    cookie, csrf = session(app)
    a, b = record(1).key, record(2).key
    hdr = {"cookie": cookie, "origin": "http://127.0.0.1:8790",
           "content-type": "application/x-www-form-urlencoded"}
    st, _, _ = call(app, "POST", f"/meeting/{a}/speakers", headers=hdr,
                    body=f"csrf={csrf}&label=SPEAKER_01&name=Grace++Kim".encode())
    assert st == 303
    assert speakers_command(site.settings, b, ["SPEAKER_01=Grace Kim"], [], []) == 0
    fa, fb = site.folder_of(a), site.folder_of(b)
    for f in ("minutes.md", "transcript.md", "minutes.json", "transcript.json"):
        ta = (fa / f).read_text().replace("Budget review 1", "T").replace(fa.name, "")
        tb = (fb / f).read_text().replace("Budget review 2", "T").replace(fb.name, "")
        ta = re.sub(r"\d{4}-\d\d-\d\d( \d\d:\d\d)?", "D", ta)
        tb = re.sub(r"\d{4}-\d\d-\d\d( \d\d:\d\d)?", "D", tb)
        assert ta == tb, f
    hits = LocalArchive.from_settings(site.settings).search("Grace Kim")
    assert {h.key for h in hits} == {a, b}
    st, _, body = call(app, "GET", f"/meeting/{a}")
    assert "Grace Kim</b>: Order the seeds" in body.decode()
    assert "<b class=\"who\">Grace Kim</b>" in body.decode()
    # where the date came from survives the correction, on the page and in the files
    assert '<span id="date-source">(from the recording&#39;s tags)</span>' in body.decode()
    assert json.loads((fa / "minutes.json").read_text())["date_source"] == "recording tags"
    assert "10:00 (from the recording's tags)" in (fa / "minutes.md").read_text()


def test_the_meeting_page_plays_each_items_evidence_and_says_what_to_check(site):
    rec = record(40, "Evidence")
    q = Quote(1, 4.5, "SPEAKER_01", "I will order them by Friday.")
    rec.minutes.action_items = [ActionItem("Speaker 2", "Order the seeds", "Friday", [q],
                                           "model", weak=True)]
    rec.minutes.decisions = ["Seeds are ordered."]
    rec.minutes.decision_evidence = [[Quote(0, 0.0, "SPEAKER_00", "We need to order the seeds.")]]
    rec.minutes.topics = [Topic("Garden", ["Seeds <b>now</b>"])]
    rec.minutes.flags = [QualityFlag("unnamed speaker", "Speaker 2 (0:04 of speech) is not "
                                     "named", 4.5), QualityFlag("model repair", "Repaired")]
    a = LocalArchive.from_settings(site.settings)
    a.store(rec)
    a.close()
    st, _, body = call(build_app(site, Guard(None)), "GET", f"/meeting/{rec.key}")
    html = body.decode()
    assert st == 200
    # a time link like the transcript's (app.js makes every a.t play the recording there)
    link = '<a href="#t=4.5" class="t ev" data-t="4.5">00:00:04</a>'
    assert f"<b>Speaker 2</b>: Order the seeds (Friday) {link}" in html
    assert '<i class="check">check: only the model says who owns it</i>' in html
    assert 'Seeds are ordered. <a href="#t=0.0" class="t ev" data-t="0.0">00:00:00</a>' in html
    assert "<h4>Garden</h4><ul><li>Seeds &lt;b&gt;now&lt;/b&gt;</li>" in html
    flags = html.split('<ul id="flags">')[1].split("</ul>")[0]
    assert ('<li data-kind="unnamed speaker">Speaker 2 (0:04 of speech) is not named '
            '<a href="#t=4.5" class="t" data-t="4.5">00:00:04</a></li>') in flags
    assert '<li data-kind="model repair">Repaired</li>' in flags
    assert 'querySelectorAll("a.t")' in (REPO_WEB / "static" / "app.js").read_text()
    st, _, body = call(build_app(site, Guard(None)), "GET", f"/meeting/{record(1).key}")
    assert "Check these" not in body.decode() and 'class="t ev"' not in body.decode()


# ------------------------------------------------------------------ live hub, command


def test_the_live_hub_hands_watchers_what_happened_in_order():
    import threading

    from daemon.live import Live

    hub = Live(max_events=100)
    seen = hub.seq
    got: list = []
    t = threading.Thread(target=lambda: got.extend(hub.since(seen, timeout=10)))
    t.start()
    hub.begin("abc", "m.wav", "minutes_written", "writing minutes")
    t.join(10)
    assert [e["kind"] for e in got] == ["step"]  # a waiting watcher wakes at once
    hub.progress("transcribe", 5.0, 10.0)
    # a streamer thread of its own: the tokens still belong to the job writing minutes
    th = threading.Thread(target=lambda: [hub.token(p) for p in ("{", "\"title\"")])
    th.start()
    th.join()
    hub.end("abc", "minutes_written", True)
    evs = hub.since(got[-1]["seq"])
    assert [e["kind"] for e in evs] == ["progress", "token", "token", "step_end"]
    assert evs[0]["percent"] == 50.0
    assert "".join(e["text"] for e in evs if e["kind"] == "token") == '{"title"'
    assert {e["sha"] for e in evs} == {"abc"}
    for i in range(300):
        hub.publish("x", i=i)
    assert len(hub.since(0)) == 100  # bounded


def test_minutesd_web_refuses_a_non_local_address_without_a_token(tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-m", "daemon.cli", "web", "--host", "0.0.0.0",
                        "--port", "0"], cwd=repo, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, MINUTESD__DAEMON__ROOT=str(tmp_path)))
    assert r.returncode == 2
    assert "web.token is not set" in r.stderr


def test_the_daemon_will_not_open_the_page_to_the_network_without_a_token(tmp_path):
    """``web.enabled`` on a non-local address with no token: the daemon refuses to start
    (exit 2, saying why) rather than run with the page open or silently off."""
    s = Settings()
    s.daemon = DaemonSettings(root=tmp_path, state_dir=Path("state"), min_free_mb=0)
    s.web = WebSettings(enabled=True, host="0.0.0.0", port=0)
    taken = []
    svc = Service(s, processor_factory=lambda *a: taken.append(a) or FakeProcessor(s))
    assert svc.run() == 2
    assert taken == []  # no models loaded, nothing processed


def test_minutesd_web_alone_serves_and_polls_the_queue(site, tmp_path):
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, MINUTESD__DAEMON__ROOT=str(tmp_path), MINUTESD__DAEMON__STATE_DIR="state")
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "web", "--port", str(port)],
                            cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                body = urllib.request.urlopen(url + "/meetings", timeout=2).read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.1)
        assert "Meetings (12)" in body
        with urllib.request.urlopen(url + "/events", timeout=10) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            first = r.readline().decode()
        assert first == "event: queue\n"  # polled: the queue, no live hub in this process
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_failed_file_shows_its_reason_and_retry_puts_it_back_in_the_inbox(site, tmp_path):
    app = build_app(site, Guard(None))
    cookie, csrf = session(app)
    failed = tmp_path / "failed" / "standup.mp3"
    failed.write_bytes(b"recording")
    failed.with_name("standup.mp3.error.json").write_text("{}")
    failed.with_name("standup.meeting.yaml").write_text("attendees: [Ana Ruiz]\n")  # filed with it
    key = hashlib.sha256(b"recording").hexdigest()
    store = JobStore(site.state_dir / DB_NAME)
    store.add(key, "standup.mp3", str(tmp_path / "inbox" / "standup.mp3"), 9, 0, None, None)
    store.fail(key, "transcribed", "not an audio or video file FFmpeg recognises", None)
    store.set_dest(key, str(failed))
    store.finish_move(key, str(failed))
    store.close()
    st, _, body = call(app, "GET", "/")
    html = body.decode()
    assert st == 200 and "standup.mp3" in html and "not an audio or video file" in html
    assert f'action="/retry/{key}"' in html
    hdr = {"cookie": cookie, "origin": "http://127.0.0.1:8790",
           "content-type": "application/x-www-form-urlencoded"}
    st, h, _ = call(app, "POST", f"/retry/{key}", headers=hdr, body=f"csrf={csrf}".encode())
    assert st == 303
    assert (tmp_path / "inbox" / "standup.mp3").read_bytes() == b"recording"
    # its facts go back with it: the daemon reads the same sidecar again
    assert (tmp_path / "inbox" / "standup.meeting.yaml").read_text() == "attendees: [Ana Ruiz]\n"
    assert sorted(os.listdir(tmp_path / "failed")) == []
    # once more: nothing left in failed/ to retry
    assert call(app, "POST", f"/retry/{key}", headers=hdr, body=f"csrf={csrf}".encode())[0] == 404
    # a key the queue does not know, or a path instead of a key: nothing moves
    assert call(app, "POST", "/retry/" + "0" * 64, headers=hdr,
                body=f"csrf={csrf}".encode())[0] == 404
