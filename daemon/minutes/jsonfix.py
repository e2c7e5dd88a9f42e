"""JSON from a model's answer: tolerate code fences, prose around the object and trailing
commas, and close an object the model was cut off in (keeping only complete values)."""

from __future__ import annotations

import json
import re


def extract_json(text: str) -> dict:
    """The first JSON object in ``text``, tolerating code fences, prose and trailing commas."""
    t = text.strip()
    t = re.sub(r"^```(?:json)?\s*|\s*```$", "", t, flags=re.S)
    start = t.find("{")
    if start < 0:
        raise ValueError("no JSON object in the answer")
    depth, in_str, esc, end = 0, False, False, -1
    for i in range(start, len(t)):
        c = t[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                end = i
                break
    if end < 0:
        repaired = close_truncated(t[start:])
        if repaired is None:
            raise ValueError("the JSON object is not closed (answer cut off?)")
        return repaired
    body = t[start:end + 1]
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        repaired = re.sub(r",\s*([}\]])", r"\1", body)  # trailing commas
        return json.loads(repaired)


def _inside_item(stack: list[str]) -> bool:
    """Inside an object that is an element of a list (a half-written action item)."""
    return len(stack) >= 3 and stack[-1] == "}" and "]" in stack[:-1]


def close_truncated(body: str, tries: int = 200) -> dict | None:
    """A cut-off JSON object (token limit, or stopped because the model was looping) made
    whole: cut back to the end of the last complete value and close what is open. The
    fields before the cut are kept; a half-written value is dropped, never guessed."""
    stack: list[str] = []
    in_str = esc = False
    cuts: list[tuple[int, str]] = []  # (position after a complete value, closers needed)
    for i, c in enumerate(body):
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
                if not _inside_item(stack):  # loads() rejects a cut after a lone key
                    cuts.append((i + 1, "".join(reversed(stack))))
            continue
        if c == '"':
            in_str = True
        elif c in "[{":
            stack.append("]" if c == "[" else "}")
        elif c in "]}":
            if stack:
                stack.pop()
            if not _inside_item(stack):
                cuts.append((i + 1, "".join(reversed(stack))))
    for pos, closers in reversed(cuts[-tries:]):
        try:
            obj = json.loads(re.sub(r",\s*$", "", body[:pos]) + closers)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None
