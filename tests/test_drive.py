"""The Google Drive archive against the fake Drive server (tests/fakedrive.py), in process:
the real google-api-python-client over HTTPS to 127.0.0.1 with a certificate made here.

Covers: the layout (dated folders, two converted Docs linked to each other, appProperties),
exactly-once (ledger, appProperties lookup after a lost ledger, dropped connections after a
request took effect), fault classification (retried, permanent, auth), token refresh and
persistence, service accounts with delegation, audio as a chunked resumable upload, search
with escaping, the fake's own honesty (partial responses, multipart), and the network guard.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fakedrive import DOC, FOLDER, FakeDrive

from daemon.archive.base import ArchiveRecord
from daemon.settings import Settings
from daemon.types import ActionItem, Minutes, Speaker, SpeakerSegment, SpeakerTranscript

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake(tmp_path):
    d = FakeDrive(tmp_path / "fake").start()
    yield d
    d.stop()


def settings_for(fake: FakeDrive, root: Path, **drive) -> Settings:
    cfg = {"enabled": True, "api_endpoint": fake.api_endpoint, "ca_certs": str(fake.cert),
           "token_uri": f"{fake.base}/token", "retry_delay_s": 0.01, "timeout_s": 5}
    cfg.update(drive)
    return Settings.model_validate({"daemon": {"root": str(root), "state_dir": "state"},
                                    "archive": {"drive": cfg}})


def archive_for(fake: FakeDrive, root: Path, token: bool = True, **drive):
    from integrations.gdrive import DriveArchive

    s = settings_for(fake, root, **drive)
    if token:
        fake.write_token(s.archive.drive.resolved_token_file(s.daemon))
    return DriveArchive(s), s


def record(key: str = "a" * 64, date: str = "2024-05-14", hhmm: str = "09:30",
           title: str = "Library renovation", said: str | None = None) -> ArchiveRecord:
    spk = [Speaker("SPEAKER_00", "Maria Lopez", 6.0), Speaker("SPEAKER_01", None, 4.0)]
    segs = [SpeakerSegment(0, 4, "SPEAKER_00", said or "The electrical quote from O'Brien "
                           "came in high, about twelve thousand dollars."),
            SpeakerSegment(4, 8, "SPEAKER_01", "Then let's get three quotes by Friday.")]
    t = SpeakerTranscript(duration_s=8, speakers=spk, segments=segs, language="en",
                          source="meeting.mp3")
    m = Minutes(title=title, date=date, attendees=["Maria Lopez"],
                summary="The roof came in under budget; electrical work needs more quotes.",
                discussion_points=["Roof budget", "Electrical wiring in the east wing"],
                decisions=["Collect three quotes before deciding"],
                action_items=[ActionItem("Maria Lopez", "Collect three electrical quotes",
                                         "Friday")], duration_s=8, speakers=spk)
    return ArchiveRecord(key=key, source_name="meeting.mp3", minutes=m, transcript=t, date=date,
                         time=hhmm)


def docs(fake: FakeDrive, key: str) -> dict[str, list[dict]]:
    return dict(fake.by_key().get(key, {}))


def test_store_two_linked_docs_in_dated_folders(fake, tmp_path):
    arch, _ = archive_for(fake, tmp_path)
    rec = record()
    link = arch.store(rec)
    got = docs(fake, rec.key)
    assert sorted(got) == ["minutes", "transcript"]
    m, t = got["minutes"][0], got["transcript"][0]
    assert len(got["minutes"]) == len(got["transcript"]) == 1
    assert m["name"] == "2024-05-14 09:30 — Library renovation"
    assert t["name"] == "2024-05-14 09:30 — Library renovation (transcript)"
    assert fake.path_of(m) == fake.path_of(t) == "root/Minutes/2024/05"
    assert m["mimeType"] == t["mimeType"] == DOC
    converted = {c["id"] for c in fake.conversions if c["from"].startswith("text/html")}
    assert {m["id"], t["id"]} <= converted
    assert m["appProperties"] == {"minutesd_sha256": rec.key, "minutesd_kind": "minutes",
                                  "minutesd_date": "2024-05-14", "minutesd_time": "09:30"}
    assert t["appProperties"]["minutesd_kind"] == "transcript"
    assert link.startswith("https://docs.google.com/document/d/" + m["id"])
    # linked both ways; headings, lists and check boxes in the HTML Drive converted
    assert any(t["id"] in u for u in m["links"]) and any(m["id"] in u for u in t["links"])
    html = m["content"].decode()
    assert "<h1>Library renovation</h1>" in html and "<h2>Action items</h2>" in html
    assert "<li>☐ <b>Maria Lopez</b> — Collect three electrical quotes (Friday)</li>" in html
    assert "O&#x27;Brien" in t["content"].decode() and "<b>Maria Lopez:</b>" in \
        t["content"].decode()
    folders = [f for f in fake.live() if f["mimeType"] == FOLDER]
    assert sorted(fake.path_of(f) + "/" + f["name"] for f in folders) == [
        "root/Minutes", "root/Minutes/2024", "root/Minutes/2024/05"]
    # a second meeting in another month reuses Minutes/2024; storing again sends nothing
    arch.store(record("b" * 64, "2024-06-03", "14:00", "Atlas launch review"))
    before = fake.stats["requests"]
    assert arch.store(rec) == link and arch.lookup(rec.key) == link
    assert fake.stats["requests"] == before
    assert sorted(fake.path_of(f) + "/" + f["name"] for f in fake.live()
                  if f["mimeType"] == FOLDER) == [
        "root/Minutes", "root/Minutes/2024", "root/Minutes/2024/05", "root/Minutes/2024/06"]
    assert fake.duplicates() == 0


def test_lost_ledger_finds_the_files_by_appproperties(fake, tmp_path):
    """A crash between a create and its ledger write: the next attempt looks the file up
    by appProperties instead of creating it again."""
    from integrations.gdrive import DriveArchive

    arch, s = archive_for(fake, tmp_path)
    rec = record()
    link = arch.store(rec)
    created = fake.stats["files_created"]
    fresh = DriveArchive(s, ledger_path=tmp_path / "other-ledger.sqlite3")
    assert fresh.store(rec) == link
    assert fake.stats["files_created"] == created
    assert fresh.stats["found_existing"] == 2 and fresh.stats["created"] == 0
    assert fake.duplicates() == 0


def test_dropped_connections_after_the_effect_never_duplicate(fake, tmp_path):
    """httplib2 silently sends a request again when the connection drops before the answer.
    A plain POST create would then make two files (shown first, so the fault is real);
    minutesd's creates (resumable sessions, folders with generated ids) make one."""
    import httplib2

    h = httplib2.Http(ca_certs=str(fake.cert), timeout=5)
    hdr = {"Authorization": "Bearer " + fake.issue_access_token(),
           "Content-Type": "application/json"}
    fake.schedule("drop_after", 1, "POST /drive/v3/files")
    h.request(fake.base + "/drive/v3/files", "POST", body=b'{"name": "naive"}', headers=hdr)
    assert [f["name"] for f in fake.live()].count("naive") == 2  # the hazard
    for f in list(fake.files.values()):
        fake.files.pop(f["id"])

    arch, _ = archive_for(fake, tmp_path)
    for match in ("POST /drive/v3/files?", "POST /upload/drive/v3/files?",
                  "PUT /upload/drive/v3/files?", "PATCH /upload/drive/v3/files/"):
        fake.schedule("drop_after", 2, match)
    rec = record()
    arch.store(rec)
    assert all(n == 0 for _, n, _ in fake.scheduled), fake.scheduled  # all faults landed
    assert fake.duplicates() == 0
    got = docs(fake, rec.key)
    assert len(got["minutes"]) == 1 and len(got["transcript"]) == 1
    assert fake.stats["session_replays"] >= 1  # a re-sent PUT got the same file back
    assert len([f for f in fake.live() if f["mimeType"] == FOLDER]) == 3


def test_rate_limits_and_server_errors_are_retried(fake, tmp_path):
    arch, _ = archive_for(fake, tmp_path, num_retries=6)
    for kind in ("429", "403rate", "500", "503", "drop_before", "401"):
        fake.schedule(kind, 1, "GET /drive/v3/files")
    arch.store(record())
    assert sum(fake.faults.values()) == 6
    assert arch.stats["http_retries"] >= 4  # 401 and drops are re-sent by the transport
    assert fake.stats["token_requests"] >= 1  # the 401 made the client refresh its token
    assert fake.duplicates() == 0


def test_stalled_request_times_out_and_is_retried(fake, tmp_path):
    arch, _ = archive_for(fake, tmp_path, timeout_s=0.5)
    fake.stall_s = 1.5
    fake.schedule("stall", 1, "GET /drive/v3/files")
    t0 = time.monotonic()
    arch.store(record())
    assert fake.faults["stall"] == 1 and time.monotonic() - t0 < 10
    assert arch.stats["http_retries"] >= 1


def test_persistent_errors_are_classified(fake, tmp_path):
    from integrations.gdrive import DrivePermanent, DriveTransient
    from integrations.google_auth import AuthProblem

    arch, _ = archive_for(fake, tmp_path, num_retries=2)
    fake.schedule("500", 3, "GET /drive/v3/files")
    with pytest.raises(DriveTransient, match="HTTP 500"):
        arch.store(record())
    fake.schedule("quota", 1, "POST /upload/drive/v3/files")
    with pytest.raises(DrivePermanent, match="storageQuotaExceeded.*Fix: free space"):
        arch.store(record())
    assert fake.faults["quota"] == 1
    assert fake.stats["POST /upload/drive/v3/files"] == 1  # reported at once, not retried
    bad, _ = archive_for(fake, tmp_path / "b", parent_id="no-such-folder")
    with pytest.raises(DrivePermanent, match="404.*parent_id"):
        bad.store(record())
    fake.revoke_all()
    with pytest.raises(AuthProblem, match="revoked.*minutesd auth google"):
        arch.store(record("c" * 64))
    none, _ = archive_for(fake, tmp_path / "c", token=False)
    with pytest.raises(AuthProblem, match="not authorised yet"):
        none.store(record())


def test_expired_token_is_refreshed_and_saved_0600(fake, tmp_path):
    arch, s = archive_for(fake, tmp_path, token=False)
    path = s.archive.drive.resolved_token_file(s.daemon)
    fake.write_token(path, expired=True)
    old = json.loads(path.read_text())["token"]
    arch.store(record())
    new = json.loads(path.read_text())
    assert new["token"] != old and new["token"] in fake.access_tokens
    assert new["refresh_token"] and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_service_account_with_delegation(fake, tmp_path):
    from integrations.gdrive import DriveArchive

    key = fake.write_service_account(tmp_path / "sa.json")
    s = settings_for(fake, tmp_path, auth="service_account", service_account_file=str(key),
                     subject="alice@example.com")
    DriveArchive(s).store(record())
    assert fake.jwt_claims and fake.jwt_claims[0]["sub"] == "alice@example.com"
    assert fake.jwt_claims[0]["scope"] == "https://www.googleapis.com/auth/drive.file"
    assert len(docs(fake, "a" * 64)["minutes"]) == 1


def test_audio_is_a_chunked_resumable_upload(fake, tmp_path):
    from integrations.gdrive import DriveArchive

    _, s = archive_for(fake, tmp_path, upload_audio=True)
    arch = DriveArchive(s, chunk_size=256 * 1024)
    audio = tmp_path / "meeting.mp3"
    audio.write_bytes(os.urandom(600_000))
    rec = record()
    rec.audio_path = str(audio)
    arch.store(rec)
    got = docs(fake, rec.key)
    a = got["audio"][0]
    assert a["content"] == audio.read_bytes() and a["mimeType"] == "audio/mpeg"
    assert a["name"] == "2024-05-14 09:30 — Library renovation.mp3"
    assert fake.stats["PUT /upload/drive/v3/files"] >= 3  # three chunks
    assert any(a["id"] in u for u in got["minutes"][0]["links"])


def test_search_escapes_quotes_and_restricts_to_the_minutes_folder(fake, tmp_path):
    arch, _ = archive_for(fake, tmp_path)
    arch.store(record())
    other = record("b" * 64, "2024-06-03", "14:00", "Atlas launch review",
                   said="A crash on login for some older Android phones, back\\slash.")
    other.minutes.summary = "The release candidate is nearly ready."
    other.minutes.discussion_points = ["Login crash"]
    other.minutes.decisions = []
    other.minutes.action_items = [ActionItem("Kenji", "Fix the login crash", "Friday")]
    arch.store(other)
    # the same words outside the minutes folder are not found
    fake.create({"name": "electrical notes", "mimeType": DOC, "parents": ["root"]},
                b"<p>electrical quote</p>", "text/html")
    hits = arch.search("electrical")
    assert [(h.date, h.time, h.title) for h in hits] == [
        ("2024-05-14", "09:30", "Library renovation")]
    minutes_doc = docs(fake, "a" * 64)["minutes"][0]
    assert hits[0].ref == minutes_doc["webViewLink"] and "minutes" in hits[0].snippet
    only_t = arch.search("O'Brien")  # only the transcript says it: still the minutes' link
    assert [(h.title, h.snippet, h.ref) for h in only_t] == [
        ("Library renovation", "matched in the transcript", minutes_doc["webViewLink"])]
    assert [h.title for h in arch.search('"older Android phones"')] == ["Atlas launch review"]
    assert arch.search('"phones Android older"') == []
    assert [h.title for h in arch.search("back\\slash")] == ["Atlas launch review"]
    assert arch.search("electrical android") == []  # every word must appear
    assert {h.title for h in arch.search("Friday")} == {"Library renovation",
                                                        "Atlas launch review"}
    q = [p for m, p, _ in fake.log if m == "GET" and "fullText" in p][-1]
    assert "in+parents" in q  # restricted to the minutes folders


def test_fake_honours_fields_and_multipart(fake, tmp_path):
    """The fake answers only the fields asked for (as Drive does), and takes multipart."""
    import io

    from googleapiclient.http import MediaIoBaseUpload

    arch, _ = archive_for(fake, tmp_path)
    files = arch.service().files()
    media = MediaIoBaseUpload(io.BytesIO(b"<h1>Hi</h1><ul><li>x</li></ul>"), "text/html",
                              resumable=False)
    f = files.create(body={"name": "m", "mimeType": DOC, "appProperties": {"k": "v"}},
                     media_body=media).execute()
    assert set(f) == {"id", "name", "mimeType", "kind"}  # no fields: the default set
    assert fake.conversions[-1] == {"id": f["id"], "from": "text/html", "to": DOC}
    assert fake.stats["POST /upload/drive/v3/files"] == 1
    got = files.list(q="appProperties has { key='k' and value='v' }",
                     fields="files(id)").execute()
    assert got == {"files": [{"id": f["id"]}]}
    from googleapiclient.errors import HttpError

    with pytest.raises(HttpError) as e:
        files.list(q="name = 'it\\s'").execute()  # a bad escape is a 400, as in Drive
    assert e.value.resp.status == 400


def test_cli_does_not_import_the_google_client(fake, tmp_path):
    """The CLI starts fast with Drive on: status, doctor's Drive check and search's local
    path never import google-api-python-client or google-auth."""
    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"daemon:\n  root: {tmp_path}\n  state_dir: state\narchive:\n  drive:\n"
                   "    enabled: true\n")
    code = ("import sys; from daemon.cli import main; main(['status']); "
            "from daemon.doctor import check_drive; from daemon.settings import load_settings; "
            "check_drive(load_settings()); "
            "print('LOADED', sorted(m for m in sys.modules if m.startswith(('googleapiclient', "
            "'google.auth', 'google.oauth2', 'httplib2'))))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, MINUTESD_CONFIG=str(cfg)))
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stdout, r.stdout[-500:]
    from daemon.registry import build_mirrors

    off = Settings.model_validate({"daemon": {"root": str(tmp_path)}})
    assert build_mirrors(off) == []  # Drive off by default: no mirror, nothing sent


def test_network_guard_blocks_google_hosts(tmp_path, monkeypatch):
    log = tmp_path / "guard.log"
    monkeypatch.setenv("MINUTESD_NET_GUARD_LOG", str(log))
    with pytest.raises(ConnectionRefusedError, match="real Google host"):
        socket.getaddrinfo("www.googleapis.com", 443)
    r = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(("
                        "'oauth2.googleapis.com', 443), timeout=5)"], capture_output=True,
                       text=True, timeout=60, env=dict(os.environ))
    assert r.returncode != 0 and "real Google host" in r.stderr
    assert log.read_text().count("real Google host") == 2


def run_auth_flow(fake: FakeDrive, config: Path, port: int | None = None) -> str:
    """`minutesd auth google` as a user does it: the command prints the URL and waits; the
    "browser" (this function) opens it at the fake Google, which consents at once and
    redirects to http://localhost:<port>/, where the command takes the code. Its output."""
    port = port or _free_port()
    p = subprocess.Popen([sys.executable, "-m", "daemon.cli", "auth", "google", "--port",
                          str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=dict(os.environ, MINUTESD_CONFIG=str(config)))
    try:
        lines: list[str] = []
        while not any("Waiting" in ln for ln in lines):
            ln = p.stdout.readline()
            assert ln, "".join(lines)
            lines.append(ln)
        text = "".join(lines)
        url = re.search(r"(https://\S+/o/oauth2/auth\?\S+)", text).group(1)
        assert f"ssh -L {port}:localhost:{port}" in text
        ctx = ssl.create_default_context(cafile=str(fake.cert))
        with urllib.request.urlopen(url, context=ctx, timeout=30) as resp:  # follows the redirect
            assert b"authorised" in resp.read()
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, text + out
    return text + out


def test_auth_google_installed_app_flow(fake, tmp_path):
    """`minutesd auth google`: the URL is printed (no browser here) with the SSH port-forward
    hint; the token lands in the state folder with mode 0600."""
    root = tmp_path
    secrets = fake.write_client_secrets(root / "client_secret.json")
    port = _free_port()
    (root / "s.yaml").write_text(
        f"daemon:\n  root: {root}\n  state_dir: state\narchive:\n  drive:\n    enabled: true\n"
        f"    client_secrets: {secrets}\n    ca_certs: {fake.cert}\n"
        f"    token_uri: {fake.base}/token\n")
    out = run_auth_flow(fake, root / "s.yaml", port)
    assert "token saved to" in out
    token = root / "state" / "google-token.json"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    data = json.loads(token.read_text())
    assert data["refresh_token"] in fake.refresh_tokens
    req = fake.auth_requests[0]
    assert req["redirect_uri"] == f"http://localhost:{port}/"
    assert req["scope"] == "https://www.googleapis.com/auth/drive.file"
    assert req["access_type"] == "offline"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
