"""The daemon's folders: where they are, and layouts that cannot work (outputs inside the
inbox would be picked up again)."""

from __future__ import annotations

from pathlib import Path

from daemon.errors import EXIT_USAGE, OperatorError
from daemon.files import is_within
from daemon.settings import Settings

HEARTBEAT_S = 5.0  # how often the running daemon writes its heartbeat (status reads it)


class LayoutError(OperatorError):
    """Folders that cannot work together (e.g. processed/ inside the inbox)."""

    exit_code = EXIT_USAGE


def daemon_folders(settings: Settings, archive_root: Path | None = None) -> dict[str, Path]:
    """inbox, processed, failed, duplicates, state_dir and (for the local archive) archive."""
    d = settings.daemon
    out = {name: d.resolved(name) for name in ("inbox", "processed", "failed", "duplicates")}
    out["state_dir"] = d.resolved_state_dir()
    if archive_root is None and settings.archive.backend == "local":
        archive_root = settings.archive.resolved_path(d)
    if archive_root is not None:
        out["archive"] = Path(archive_root)
    return out


def check_layout(folders: dict[str, Path]) -> None:
    """Refuse folder layouts that would loop (outputs inside the inbox) or mix up."""
    inbox = folders["inbox"]
    for name, path in folders.items():
        if name == "inbox":
            continue
        label = "archive.path" if name == "archive" else f"daemon.{name}"
        if is_within(path, inbox):
            raise LayoutError(f"{label} ({path}) is inside the inbox ({inbox}): "
                              "minutesd would pick up its own output. Move it out.")
        if is_within(inbox, path):
            raise LayoutError(f"the inbox ({inbox}) is inside {label} ({path}). "
                              "Use separate folders.")
