"""What the model is asked to answer, validated with pydantic (the pipeline adds date,
duration and attendees itself)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

UNASSIGNED = "unassigned"


class DraftDecision(BaseModel):
    """A decision as the model wrote it, with the transcript line it points at (if any)."""

    text: str
    line: int | None = None


class DraftTopic(BaseModel):
    title: str = ""
    points: list[str] = Field(default_factory=list)


def _line_number(v) -> int | None:
    try:
        return int(str(v).strip().strip("[]L#"))
    except (TypeError, ValueError):
        return None


def _first_text(x: dict) -> str:
    for k in ("text", "decision", "point", "title", "topic"):
        if isinstance(x.get(k), str):
            return x[k]
    return next((str(y) for y in x.values() if isinstance(y, str)), "")


class Draft(BaseModel):
    """What the model is asked for (the pipeline adds date, duration and attendees)."""

    title: str = ""
    summary: str = ""
    discussion_points: list[str] = Field(default_factory=list)
    topics: list[DraftTopic] = Field(default_factory=list)
    decisions: list[DraftDecision] = Field(default_factory=list)

    @field_validator("summary", "title", mode="before")
    @classmethod
    def _text(cls, v):
        if isinstance(v, list):
            return " ".join(str(x) for x in v)
        return "" if v is None else str(v)

    @field_validator("decisions", mode="before")
    @classmethod
    def _decisions(cls, v):
        if v is None:
            return []
        out: list[dict] = []
        for x in [v] if isinstance(v, (str, dict)) else v:
            if isinstance(x, dict):
                text = _first_text(x).strip()
                line = _line_number(x.get("line"))
            else:
                text, line = str(x).strip(), None
            if not text or text.lower().rstrip(".") in ("none", "n/a", "null", "nothing"):
                continue
            if text not in [d["text"] for d in out]:
                out.append({"text": text, "line": line})
        return out

    @field_validator("topics", mode="before")
    @classmethod
    def _topics(cls, v):
        if not isinstance(v, list):
            return []
        out = []
        for x in v:
            if isinstance(x, dict):
                points = x.get("points") or []
                if isinstance(points, str):
                    points = [points]
                points = [str(p).strip() for p in points if str(p).strip()]
                title = str(x.get("title") or x.get("topic") or "").strip()
                if title or points:
                    out.append({"title": title, "points": points})
            elif isinstance(x, str) and x.strip():
                out.append({"title": x.strip(), "points": []})
        return out

    @field_validator("discussion_points", mode="before")
    @classmethod
    def _strings(cls, v):
        if v is None:
            return []
        if isinstance(v, str):
            return [v] if v.strip() else []
        out = []
        for x in v:
            if isinstance(x, dict):  # {"decision": "..."} and the like
                x = next((str(y) for y in x.values() if isinstance(y, str)), "")
            if str(x).strip().lower().rstrip(".") in ("none", "n/a", "null", "nothing"):
                continue  # "- None" is not a discussion point
            if str(x).strip() and str(x).strip() not in out:  # a looping model repeats
                out.append(str(x).strip())
        return out


class Decided(BaseModel):
    """The model's verdict on one possible decision, and its wording of it."""

    kind: str = ""
    decision: str = ""

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, v):
        return "" if v is None else str(v).strip().lower()

    @field_validator("decision", mode="before")
    @classmethod
    def _decision(cls, v):
        if v is None or str(v).strip().lower() in ("null", "none", "n/a", ""):
            return ""
        return str(v).strip()

    @property
    def decided(self) -> bool:
        return self.kind.startswith("decision") or self.kind in ("decided", "agreed")
