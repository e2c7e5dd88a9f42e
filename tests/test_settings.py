"""Settings: shipped file valid and fully documented; bad values fail with key, value, allowed."""

from __future__ import annotations

import re

import pytest
import yaml
from pydantic import BaseModel

from daemon.settings import SHIPPED_SETTINGS, Settings, SettingsError, load_settings


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _leaf_paths(ann, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def test_shipped_settings_equal_defaults():
    s = load_settings(SHIPPED_SETTINGS, environ={})
    assert s.model_dump() == Settings().model_dump()


def test_every_knob_is_in_the_shipped_file_with_a_comment():
    text = SHIPPED_SETTINGS.read_text()
    data = yaml.safe_load(text)
    lines = text.splitlines()
    for path in _leaf_paths(Settings):
        node = data
        for key in path.split("."):
            assert isinstance(node, dict) and key in node, f"{path} missing from settings.yaml"
            node = node[key]
        pos = 0  # find the key's own line: walk down the sections, each indented 2 more
        for depth, key in enumerate(path.split(".")):
            pat = re.compile(rf"^{' ' * 2 * depth}{key}:")
            pos = next(i for i in range(pos, len(lines)) if pat.match(lines[i]))
        assert lines[pos - 1].strip().startswith("#") or "#" in lines[pos], (
            f"{path} has no comment in settings.yaml"
        )


def test_config_flag_and_env_var(tmp_path, monkeypatch):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("asr:\n  beam_size: 2\n")
    assert load_settings(cfg, environ={}).asr.beam_size == 2
    monkeypatch.setenv("MINUTESD_CONFIG", str(cfg))
    assert load_settings(None, environ={}).asr.beam_size == 2


def test_env_overrides_are_typed():
    s = load_settings(SHIPPED_SETTINGS, environ={
        "MINUTESD__ASR__BEAM_SIZE": "1",
        "MINUTESD__DIARIZATION__BACKEND": "pyannote",
        "MINUTESD__ASR__OPENAI__BASE_URL": "http://127.0.0.1:9/v1",
        "UNRELATED": "x",
    })
    assert s.asr.beam_size == 1
    assert s.diarization.backend == "pyannote"
    assert s.asr.openai.base_url == "http://127.0.0.1:9/v1"


def test_bad_choice_names_key_value_and_allowed(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("asr:\n  backend: whisperx\n")
    with pytest.raises(SettingsError) as e:
        load_settings(cfg, environ={})
    msg = str(e.value)
    assert "asr.backend" in msg and "'whisperx'" in msg
    assert "faster-whisper" in msg and "openai" in msg


def test_bad_number_and_unknown_key_reported_together(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("asr:\n  beam_size: 0\n  beemsize: 3\n")
    with pytest.raises(SettingsError) as e:
        load_settings(cfg, environ={})
    msg = str(e.value)
    assert "asr.beam_size" in msg and "greater than or equal to 1" in msg
    assert "asr.beemsize" in msg and "unknown setting" in msg


def test_min_max_speakers_consistency(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("diarization:\n  min_speakers: 5\n  max_speakers: 2\n")
    with pytest.raises(SettingsError, match="min_speakers"):
        load_settings(cfg, environ={})


def test_missing_explicit_file_and_bad_yaml(tmp_path):
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("asr: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(bad, environ={})


def test_an_unquoted_date_is_taken_as_the_date_text():
    from daemon.settings import load_settings

    s = load_settings(environ={"MINUTESD__MINUTES__DATE": "2026-03-04"})
    assert s.minutes.date == "2026-03-04"



def _bomb(levels: int, flow: bool = False) -> str:
    """The "billion laughs": each level a list of nine aliases to the one before (9**levels
    values once expanded; 9 levels hung the old loader for a minute at 1.4 GB)."""
    parts = ["&a0 [" + ",".join(["lol"] * 9) + "]"]
    parts += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    if flow:  # one line, as an environment override's value
        return "[" + ", ".join(parts) + "]"
    return "daemon:\n  ignore:\n" + "".join(f"    - {p}\n" for p in parts)


def test_a_yaml_alias_bomb_is_refused(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(_bomb(6))
    with pytest.raises(SettingsError, match="alias bomb"):
        load_settings(f, environ={})
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(SettingsError, match="MINUTESD__DAEMON__IGNORE: .*alias bomb"):
        load_settings(empty, environ={"MINUTESD__DAEMON__IGNORE": _bomb(6, True)})
    # aliases themselves are fine: a small document using them loads
    f.write_text("daemon:\n  ignore: &names [Ann, Bo]\nminutes:\n  roster: *names\n")
    assert load_settings(f, environ={}).minutes.roster == ["Ann", "Bo"]


def test_a_huge_settings_file_is_refused(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("# padding\n" * 200_000)  # 2 MB
    with pytest.raises(SettingsError, match="at most"):
        load_settings(f, environ={})


@pytest.mark.parametrize("key,value", [
    ("daemon.poll_interval_s", ".inf"), ("daemon.rescan_interval_s", ".inf"),
    ("daemon.retry_backoff_s", ".nan"), ("daemon.retry_backoff_max_s", "1e300"),
    ("daemon.stop_timeout_s", "-.inf"), ("turns.merge_gap_s", ".inf"),
    ("llm.openai.timeout_s", ".inf"), ("archive.drive.retry_backoff_s", ".inf"),
    ("daemon.step_budget_factor", ".inf"),
])
def test_intervals_must_be_finite_and_sane(tmp_path, key, value):
    section, *rest = key.split(".")
    f = tmp_path / "s.yaml"
    body = "".join(f"{'  ' * (i + 1)}{k}:\n" for i, k in enumerate(rest[:-1]))
    f.write_text(f"{section}:\n{body}{'  ' * len(rest)}{rest[-1]}: {value}\n")
    with pytest.raises(SettingsError, match=re.escape(rest[-1])):
        load_settings(f, environ={})
    env = "MINUTESD__" + "__".join(k.upper() for k in key.split("."))
    f.write_text("")
    with pytest.raises(SettingsError, match=re.escape(rest[-1])):
        load_settings(f, environ={env: value})
