#!/usr/bin/env python3
"""The review page's time to first byte with a large archive.

    python bench/web.py [--meetings 1000] [--requests 50] [--json FILE]

Makes an archive of N synthetic meetings in a temporary folder (``LocalArchive.store``, each
with a two-speaker transcript of 40 turns), serves the page with ``minutesd web``'s server
(uvicorn, 127.0.0.1, a free port) in a thread, and times first bytes over loopback with
``http.client``: the queue, the first and the last page of the archive listing, a search,
one meeting and its speakers page. Prints the median and the 95th percentile per page;
``--screenshot PNG`` also keeps a picture of the listing's second page.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.archive.base import ArchiveRecord  # noqa: E402
from daemon.archive.local import LocalArchive  # noqa: E402
from daemon.settings import DaemonSettings, Settings, WebSettings  # noqa: E402
from daemon.types import (  # noqa: E402
    ActionItem,
    Minutes,
    Speaker,
    SpeakerSegment,
    SpeakerTranscript,
)
from daemon.web.server import WebServer  # noqa: E402

WORDS = ["budget", "roadmap", "hiring", "launch", "design", "review", "garden", "seeds",
         "android", "vendor", "invoice", "schedule", "migration", "outage", "retro", "sprint",
         "customer", "renewal"]


def record(i: int) -> ArchiveRecord:
    key = hashlib.sha256(f"bench meeting {i}".encode()).hexdigest()
    segs = [SpeakerSegment(j * 6.0, j * 6.0 + 5.0, f"SPEAKER_{j % 2:02d}",
                           " ".join(WORDS[(i + j + k) % len(WORDS)] for k in range(14)))
            for j in range(40)]
    spk = [Speaker("SPEAKER_00", None, 100.0), Speaker("SPEAKER_01", None, 100.0)]
    t = SpeakerTranscript(duration_s=240.0, speakers=spk, segments=segs, language="en",
                          source=f"m{i}.mp3")
    m = Minutes(title=f"{WORDS[i % len(WORDS)].title()} sync {i}",
                date=f"{2020 + i // 336}-{1 + i // 28 % 12:02d}-{1 + i % 28:02d}",
                attendees=["Speaker 1", "Speaker 2"], summary=segs[0].text,
                discussion_points=[s.text for s in segs[:5]], decisions=[],
                action_items=[ActionItem("Speaker 2", "Follow up")], duration_s=240.0,
                speakers=spk)
    return ArchiveRecord(key=key, source_name=f"m{i}.mp3", minutes=m, transcript=t,
                         date=m.date, time=f"{9 + i % 8:02d}:00")


def ttfb(port: int, path: str) -> float:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t0 = time.perf_counter()
    c.request("GET", path)
    r = c.getresponse()
    r.read(1)
    dt = time.perf_counter() - t0
    assert r.status == 200, (path, r.status)
    r.read()
    c.close()
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meetings", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--screenshot", help="a PNG of the archive listing (headless chromium)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="minutesd-web-bench-") as tmp:
        root = Path(tmp)
        s = Settings()
        s.daemon = DaemonSettings(root=root, state_dir=Path("state"))
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            port = sk.getsockname()[1]
        s.web = WebSettings(port=port)
        a = LocalArchive.from_settings(s)
        t0 = time.perf_counter()
        keys = [a.store(record(i)) and record(i).key for i in range(args.meetings)]
        made_s = time.perf_counter() - t0
        a.close()
        server = WebServer(s).start()
        try:
            for _ in range(100):
                try:
                    ttfb(port, "/queue.json")
                    break
                except OSError:
                    time.sleep(0.1)
            pages = s.web.page_size
            last = -(-args.meetings // pages)
            paths = {"queue": "/", "meetings p1": "/meetings",
                     f"meetings p{last}": f"/meetings?page={last}",
                     "search": "/meetings?q=android+vendor", "meeting": f"/meeting/{keys[500 % len(keys)]}",
                     "speakers": f"/meeting/{keys[500 % len(keys)]}/speakers"}
            out = {}
            for name, path in paths.items():
                ttfb(port, path)  # warm
                xs = sorted(ttfb(port, path) for _ in range(args.requests))
                out[name] = {"median_ms": round(1000 * statistics.median(xs), 2),
                             "p95_ms": round(1000 * xs[int(0.95 * (len(xs) - 1))], 2)}
            if args.screenshot and shutil.which("chromium"):
                subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
                                "--hide-scrollbars", "--window-size=1100,1400",
                                f"--screenshot={Path(args.screenshot).absolute()}",
                                f"http://127.0.0.1:{port}/meetings?page=2"],
                               capture_output=True, timeout=120)
        finally:
            server.stop()
    print(f"{args.meetings} meetings archived in {made_s:.1f} s; time to first byte over "
          f"loopback, {args.requests} requests each:")
    for name, v in out.items():
        print(f"  {name:<16} median {v['median_ms']:7.2f} ms   p95 {v['p95_ms']:7.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps({"meetings": args.meetings, "pages": out},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
