"""Acceptance for the Drive archive with the real daemon (``python -m daemon.testing
--fake-all -- run``: fast stand-in models, so a "recording" is a text file whose lines are the
transcript) and the fake Drive server of tests/fakedrive.py, over HTTPS, in this process.

The two dev meetings are the eval kit's ``reference.txt`` transcripts (a short stand-in with
the same phrases when the kit is absent).

1. End to end: both land in Drive as two Docs each, in Minutes/YYYY/MM/, appProperties set,
   and ``minutesd search --drive`` finds a phrase from each.
2. Faults: about 30% of Drive requests fail (429, 403 userRateLimitExceeded, 500, 503, 401,
   connections dropped before or after the request took effect), and the daemon is killed
   with SIGKILL between an upload and its ledger write, then between the ledger write and
   the queue's record: every meeting is in Drive exactly once. The figures are printed.
3. Revoked token: uploads wait, ``status`` and ``doctor`` say why and what to do, the local
   archive has everything; after ``minutesd auth google`` they upload.
4. A full Drive is reported and not retried until ``minutesd drive retry``; meetings archived
   while Drive was off go up after ``minutesd drive backfill`` (and with Drive off, nothing
   is sent at all).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakedrive import DOC, FOLDER, FakeDrive
from test_drive import run_auth_flow

from daemon.files import sha256_file
from daemon.service.queue import DB_NAME, JobStore

REPO = Path(__file__).resolve().parent.parent
# The eval kit beside the checkout; MINUTESD_EVAL_DEV points elsewhere (e.g. from a worktree).
EVAL = Path(os.environ.get("MINUTESD_EVAL_DEV") or REPO.parent / "shared" / "eval" / "dev"
            ).resolve()
FALLBACK = {
    "library-renovation": "This is the weekly sync for the Riverside Library renovation. The "
    "electrical work will cost more than we planned, because the wiring in the east wing is "
    "older than we thought. David, can you collect at least three quotes?",
    "product-launch": "This is the launch readiness review for the Atlas mobile app. The one "
    "that worries me is a crash on login for some older Android phones. Can it be fixed "
    "this week?",
}


def meeting_text(name: str) -> str:
    ref = EVAL / name / "reference.txt"
    text = ref.read_text() if ref.exists() else FALLBACK[name]
    return "\n".join(s.strip() for s in re.split(r"(?<=[.?!])\s+", text) if s.strip()) + "\n"


@pytest.fixture
def fake(tmp_path):
    d = FakeDrive(tmp_path / "fake").start()
    yield d
    d.stop()


def write_settings(root: Path, fake: FakeDrive, **drive) -> Path:
    d = {"root": str(root), "state_dir": "state", "stable_seconds": 0.2, "retry_backoff_s": 0.1,
         "retry_backoff_max_s": 0.5, "rescan_interval_s": 1, "min_free_mb": 0,
         "stop_timeout_s": 10, "max_attempts": 10, "facts_wait_s": 0}
    g = {"enabled": "true", "api_endpoint": fake.api_endpoint, "ca_certs": str(fake.cert),
         "token_uri": f"{fake.base}/token",
         "client_secrets": str(fake.write_client_secrets(root / "client_secret.json")),
         "retry_delay_s": 0.01, "retry_backoff_s": 0.2, "retry_backoff_max_s": 1,
         "timeout_s": 5}
    g.update({k: str(v).lower() if isinstance(v, bool) else v for k, v in drive.items()})
    text = "daemon:\n" + "".join(f"  {k}: {v}\n" for k, v in d.items())
    text += "archive:\n  drive:\n" + "".join(f"    {k}: {v}\n" for k, v in g.items())
    (root / "s.yaml").write_text(text)
    return root / "s.yaml"


def start(root: Path, log: Path, **env_extra: str) -> subprocess.Popen:
    env = dict(os.environ)
    for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "MINUTESD_TEST_CRASH_AT"):
        env.pop(k, None)
    env.update({"MINUTESD_CONFIG": str(root / "s.yaml"), "PYTHONUNBUFFERED": "1"})
    env.update(env_extra)
    return subprocess.Popen(
        [sys.executable, "-m", "daemon.testing", "--fake-all", "--", "run", "--json-logs"],
        cwd=REPO, env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT)  # noqa: SIM115


def drop(root: Path, name: str, text: str) -> str:
    inbox = root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox / f".{name}.part"
    tmp.write_text(text)
    os.replace(tmp, inbox / name)
    return sha256_file(inbox / name)


def queue(root: Path) -> JobStore | None:
    db = root / "state" / DB_NAME
    if not db.exists():
        return None
    try:
        return JobStore(db, readonly=True)
    except sqlite3.Error:
        return None


def uploads(root: Path) -> list[dict]:
    s = queue(root)
    if s is None:
        return []
    try:
        return s.uploads("u.target='gdrive'")
    except sqlite3.Error:
        return []
    finally:
        s.close()


def wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode} waiting for {what}\n"
                                 + (log.read_text()[-4000:] if log else ""))
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n"
                         + (log.read_text()[-4000:] if log else ""))


def stop(p: subprocess.Popen) -> int:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=REPO,
                          env=dict(os.environ, MINUTESD_CONFIG=str(root / "s.yaml")),
                          capture_output=True, text=True, timeout=120)


def check_exactly_once(fake: FakeDrive, shas: dict[str, str]) -> None:
    """Each meeting: one minutes Doc and one transcript Doc (trashed ones count too), in its
    dated folder; no folder twice."""
    by = fake.by_key()
    assert sorted(by) == sorted(shas.values())
    for name, sha in shas.items():
        kinds = by[sha]
        assert sorted(kinds) == ["minutes", "transcript"], (name, dict(kinds))
        for kind, files in kinds.items():
            assert len(files) == 1, (name, kind, [f["id"] for f in files])
            f = files[0]
            assert f["mimeType"] == DOC and not f["trashed"]
            date = f["appProperties"]["minutesd_date"]
            assert fake.path_of(f) == f"root/Minutes/{date[:4]}/{date[5:7]}"
    assert fake.duplicates() == 0


# ---------------------------------------------------------------------- 1. end to end


def test_daemon_uploads_two_meetings_and_search_drive_finds_them(fake, tmp_path):
    root = tmp_path
    write_settings(root, fake)
    fake.write_token(root / "state" / "google-token.json")
    log = root / "daemon.log"
    p = start(root, log)
    try:
        shas = {
            "lib": drop(root, "2024-05-14 0930 library renovation.mp3",
                        meeting_text("library-renovation")),
            "launch": drop(root, "2024-06-03 1400 atlas launch review.mp3",
                           meeting_text("product-launch")),
        }
        wait_for(lambda: sum(u["state"] == "done" for u in uploads(root)) == 2, 60,
                 "both uploads", p, log)
        hit_lib = cli(root, "search", "--drive", "--json", "electrical", "east wing")
        hit_launch = cli(root, "search", "--drive", "older Android phones")
        local = cli(root, "search", "--json", "electrical")
        status = cli(root, "status")
    finally:
        rc = stop(p)
    out = log.read_text()
    assert rc == 0, out[-3000:]
    check_exactly_once(fake, {k: v for k, v in shas.items()})
    by = fake.by_key()
    lib_m = by[shas["lib"]]["minutes"][0]
    assert re.fullmatch(r"2024-05-14 09:30 — .+", lib_m["name"])
    assert lib_m["appProperties"]["minutesd_sha256"] == shas["lib"]
    assert by[shas["launch"]]["transcript"][0]["name"].startswith("2024-06-03 14:00 — ")
    assert {fake.path_of(f) for f in fake.live() if f["mimeType"] == FOLDER} == {
        "root", "root/Minutes", "root/Minutes/2024"}
    # search --drive: a phrase from each meeting finds it, with title, date and link
    assert hit_lib.returncode == 0, hit_lib.stderr
    hits = json.loads(hit_lib.stdout)["hits"]
    assert [h["date"] for h in hits] == ["2024-05-14"]
    assert hits[0]["link"] == lib_m["webViewLink"]
    assert hit_launch.returncode == 0, hit_launch.stderr
    first = hit_launch.stdout.splitlines()
    assert first[0].startswith("2024-06-03 14:00  ") and "docs.google.com/document/d/" in first[1]
    # the local archive has both too, and status tells the Drive side
    assert json.loads(local.stdout)["hits"][0]["date"] == "2024-05-14"
    assert "drive:    on (oauth, token present, scope drive.file); 2 uploaded, 0 upload " \
           "pending, 0 failed" in status.stdout, status.stdout
    print(f"\ndrive e2e: {fake.stats['requests']} requests, {fake.stats['files_created']} "
          f"files created ({len(fake.conversions)} HTML→Docs conversions incl. the link "
          f"updates); search --drive: {hits[0]['title']!r}, {first[0]!r}")


# ---------------------------------------------------------------------- 2. faults + kill -9


def test_faults_and_kill9_every_meeting_in_drive_exactly_once(fake, tmp_path):
    root = tmp_path
    write_settings(root, fake, num_retries=1)  # few client retries: job-level retries too
    fake.write_token(root / "state" / "google-token.json")
    fake.fault_rate = 0.3
    log = root / "daemon.log"
    shas = {
        "lib": drop(root, "2024-05-14 0930 library renovation.mp3",
                    meeting_text("library-renovation")),
        "launch": drop(root, "2024-06-03 1400 atlas launch review.mp3",
                       meeting_text("product-launch")),
    }
    for i, (date, topic) in enumerate([("2024-07-01", "budget"), ("2024-07-15", "roadmap"),
                                       ("2024-09-02", "security"), ("2024-12-09", "retro"),
                                       ("2025-01-20", "hiring"), ("2025-02-03", "offsite")]):
        shas[topic] = drop(root, f"{date} 1{i}00 {topic}.mp3",
                           f"The {topic} meeting number {i}.\nWe agree on item {i * 7}.\n")
    kills = []
    for point in ("drive:created", "upload:stored"):
        p = start(root, log, MINUTESD_TEST_CRASH_AT=point)
        try:
            rc = p.wait(timeout=90)
        finally:
            if p.poll() is None:
                p.kill()
        assert rc == -signal.SIGKILL, f"{point}: exit {rc}\n{log.read_text()[-3000:]}"
        assert f"crash point {point}: SIGKILL" in log.read_text()
        kills.append(point)
        if point == "drive:created":
            # the file is in Drive, the ledger does not know it
            led = sqlite3.connect(root / "state" / "drive.sqlite3")
            known = {r[0] for r in led.execute("SELECT file_id FROM files")}
            led.close()
            in_drive = {f["id"] for kinds in fake.by_key().values() for fs in kinds.values()
                        for f in fs}
            assert in_drive - known, "the kill did not land between upload and ledger write"
    p = start(root, log)
    try:
        wait_for(lambda: sum(u["state"] == "done" for u in uploads(root)) == len(shas), 180,
                 "all uploads", p, log)
    finally:
        rc = stop(p)
    assert rc == 0, log.read_text()[-3000:]
    check_exactly_once(fake, shas)
    s = queue(root)
    assert s is not None
    try:
        assert all(j.state == "done" for j in s.jobs())
        uploaded = [e["sha256"] for e in s.events("uploaded", limit=1000)]
        job_retries = len(s.events("upload_retry", limit=10000))
    finally:
        s.close()
    assert sorted(uploaded) == sorted(shas.values())  # recorded once each
    out = log.read_text()
    lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    http_retries = sum(ln.get("event") == "drive request retry" for ln in lines)
    found = sum(ln.get("event", "").startswith("drive file found by appProperties")
                for ln in lines)
    faults = sum(fake.faults.values())
    figures = {"meetings": len(shas), "requests": fake.stats["requests"], "faults": faults,
               "fault_share": round(faults / fake.stats["requests"], 2),
               "faults_by_kind": dict(sorted(fake.faults.items())),
               "http_retries": http_retries, "job_retries": job_retries,
               "kills": kills, "found_by_appProperties": found,
               "session_replays": fake.stats["session_replays"],
               "files_created": fake.stats["files_created"], "duplicates": fake.duplicates()}
    print(f"\ndrive fault run: {json.dumps(figures)}")
    assert faults >= 15 and 0.15 <= figures["fault_share"] <= 0.45
    assert found >= 1  # the file made before the kill was found, not made again
    assert http_retries >= 10
    assert figures["duplicates"] == 0


# ---------------------------------------------------------------------- 3. revoked token


def test_revoked_token_uploads_wait_then_resume_after_reauth(fake, tmp_path):
    from daemon.doctor import check_drive
    from daemon.settings import load_settings

    root = tmp_path
    cfg = write_settings(root, fake)
    fake.write_token(root / "state" / "google-token.json")
    log = root / "daemon.log"
    p = start(root, log)
    try:
        shas = {"lib": drop(root, "2024-05-14 0930 library renovation.mp3",
                            meeting_text("library-renovation"))}
        wait_for(lambda: sum(u["state"] == "done" for u in uploads(root)) == 1, 60,
                 "the first upload", p, log)
        fake.revoke_all()  # the user removed minutesd's access in their Google account
        shas["launch"] = drop(root, "2024-06-03 1400 atlas launch review.mp3",
                              meeting_text("product-launch"))
        shas["budget"] = drop(root, "2024-07-01 1000 budget.mp3",
                              "The budget review for July.\nWe approve the second quote.\n")
        wait_for(lambda: sum(u["waiting"] == "auth" for u in uploads(root)) == 2, 60,
                 "uploads waiting for credentials", p, log)
        # nothing lost: both are in the local archive and their originals filed
        s = queue(root)
        assert s is not None
        jobs = {j.sha256: j for j in s.jobs()}
        s.close()
        assert all(jobs[sha].state == "done" and Path(jobs[sha].archive_ref, "minutes.md")
                   .exists() for sha in shas.values())
        assert len(list((root / "processed").iterdir())) == 3
        status = cli(root, "status")
        assert "uploads WAIT for Google credentials: Google refused the saved authorisation" \
               in status.stdout, status.stdout
        assert "minutesd auth google" in status.stdout
        assert "1 uploaded, 2 upload pending" in status.stdout
        checks = {c.name: c for c in check_drive(load_settings(cfg))}
        assert checks["drive uploads"].level == "fail"
        assert "minutesd auth google" in (checks["drive uploads"].fix or "")
        time.sleep(1.5)
        assert sum(u["state"] == "done" for u in uploads(root)) == 1  # still waiting
        # re-authorise while the daemon runs: it notices the new token and uploads
        t0 = time.monotonic()
        run_auth_flow(fake, cfg)
        wait_for(lambda: sum(u["state"] == "done" for u in uploads(root)) == 3, 60,
                 "uploads after re-auth", p, log)
        resumed_s = time.monotonic() - t0
        status2 = cli(root, "status")
    finally:
        rc = stop(p)
    assert rc == 0, log.read_text()[-3000:]
    check_exactly_once(fake, shas)
    assert "WAIT" not in status2.stdout and "3 uploaded, 0 upload pending" in status2.stdout
    assert "uploads wait: google credentials" in log.read_text()
    print("\n" + "\n".join(ln for ln in status.stdout.splitlines()
                            if ln.startswith(("drive:", "health:")) or "upload" in ln or
                            "nothing is lost" in ln))
    print(f"revoked token: 2 uploads waited ({status.stdout.count('waiting for credentials')}"
          f" shown in status); uploaded {resumed_s:.1f} s after `minutesd auth google`")


# ---------------------------------------------------------------------- quota, backfill


def test_quota_is_reported_not_retried_then_retry_and_backfill(fake, tmp_path):
    """A full Drive fails the upload with the reason and the fix, and it is not retried on
    its own; `minutesd drive retry` sends it. A meeting archived while Drive was off goes up
    after `minutesd drive backfill`."""
    root = tmp_path
    write_settings(root, fake, enabled=False)
    log = root / "daemon.log"
    p = start(root, log)  # Drive off: local archive only, nothing sent
    try:
        old = drop(root, "2024-04-02 0800 before drive.mp3", "Archived before Drive.\nOk.\n")
        wait_for(lambda: (s := queue(root)) and s.counts()["done"] == 1, 60, "local", p, log)
    finally:
        assert stop(p) == 0
    assert fake.stats["requests"] == 0 and uploads(root) == []
    write_settings(root, fake)
    fake.write_token(root / "state" / "google-token.json")
    fake.schedule("quota", 1, "POST /upload/drive/v3/files")
    p = start(root, log)
    try:
        sha = drop(root, "2024-05-14 0930 library renovation.mp3",
                   meeting_text("library-renovation"))
        wait_for(lambda: any(u["state"] == "failed" for u in uploads(root)), 60, "failure", p,
                 log)
        posts = fake.stats["POST /upload/drive/v3/files"]
        time.sleep(2.0)  # well past retry_backoff_s: a failed upload is not retried
        assert fake.stats["POST /upload/drive/v3/files"] == posts
        status = cli(root, "status")
        assert "upload FAILED: Google Drive quota" in status.stdout, status.stdout
        assert "storageQuotaExceeded" in status.stdout and "minutesd drive retry" in status.stdout
        assert "1 uploads queued again" in cli(root, "drive", "retry").stdout
        assert "1 archived meetings queued" in cli(root, "drive", "backfill").stdout
        wait_for(lambda: sum(u["state"] == "done" for u in uploads(root)) == 2, 60,
                 "uploads after retry and backfill", p, log)
    finally:
        assert stop(p) == 0
    check_exactly_once(fake, {"old": old, "lib": sha})
