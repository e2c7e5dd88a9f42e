"""What the model is asked to answer, validated with pydantic (the pipeline adds date,
duration and attendees itself)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

UNASSIGNED = "unassigned"


class DraftAction(BaseModel):
    owner: str = UNASSIGNED
    task: str
    due: str | None = None

    @field_validator("owner", mode="before")
    @classmethod
    def _owner(cls, v):
        return UNASSIGNED if v in (None, "", "null", "None") else str(v)

    @field_validator("due", mode="before")
    @classmethod
    def _due(cls, v):
        if v in (None, "", "null", "None", "none", "N/A", "n/a", "unspecified", "not specified"):
            return None
        return str(v)


class Draft(BaseModel):
    """What the model is asked for (the pipeline adds date, duration and attendees)."""

    title: str = ""
    summary: str = ""
    discussion_points: list[str] = Field(default_factory=list)
    decisions: list[str] = Field(default_factory=list)
    action_items: list[DraftAction] = Field(default_factory=list)

    @field_validator("discussion_points", "decisions", mode="before")
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
