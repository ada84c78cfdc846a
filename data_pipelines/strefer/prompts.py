"""The model annotator's prompts (one per Strefer step) and the strict parsers of their answers.

Steps: (1) active entities with referring expressions (Strefer's Active Entity Recognizer, a video LLM);
(2) generalized nouns (Strefer's Referring Parser: the rules of its upstream prompt: every human -> "person",
others -> their broad category, answer a JSON list in a ```json fence); (3) each entity's action timeline.
A parser returns the parsed value or raises AnnotationError("malformed_model_output") naming what was wrong.
"""

from __future__ import annotations

import json
import re

from data_pipelines.errors import AnnotationError

ENTITIES_PROMPT = (
    "List every active entity in this video clip: each person, animal or object that moves or acts. Write one "
    "referring expression per entity that singles it out from the others (appearance, position or what it does, "
    "e.g. \"child in a red T-shirt\", \"dog that jumps first\"). Answer only with a JSON list of strings in a "
    "```json fence."
)

NOUNS_PROMPT = (
    "Your goal is to extract the generalized noun for each item in a list and return the results as a JSON "
    "list of the same length.\n"
    "Rules:\n1. Replace all humans, children included, with \"person\".\n"
    "2. Replace every other item by its broad category noun (\"baby elephant\" -> \"elephant\", \"parrot\" -> "
    "\"bird\").\n"
    "Keep only the main noun. Answer only with the JSON list in a ```json fence.\n\n"
    "Entities:\n```json\n{entities}\n```\nNouns:\n"
)

ACTIONS_PROMPT = (
    "The video clip lasts {duration:.1f} seconds. Describe what {expression} does over time. Answer only with a "
    "JSON list, in a ```json fence, of objects {{\"action\": short verb phrase, \"start\": seconds, \"end\": "
    "seconds}} in time order, with 0 <= start < end <= {duration:.1f}."
)

_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)


def _json_payload(text: str, what: str):
    """The JSON value inside the first ```json fence (or the whole reply when it has no fence)."""
    m = _FENCE.search(text)
    body = m.group(1) if m else text.strip()
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise AnnotationError("malformed_model_output", f"{what}: not JSON ({e.msg}): {text[:120]!r}") from None


def parse_string_list(text: str, what: str, length: int | None = None) -> list[str]:
    value = _json_payload(text, what)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise AnnotationError("malformed_model_output", f"{what}: expected a non-empty JSON list of strings, got "
                                                        f"{text[:120]!r}")
    if length is not None and len(value) != length:
        raise AnnotationError("malformed_model_output", f"{what}: expected {length} items, got {len(value)}")
    return [v.strip() for v in value]


def parse_actions(text: str, duration: float, what: str) -> list[dict]:
    value = _json_payload(text, what)
    if not isinstance(value, list):
        raise AnnotationError("malformed_model_output", f"{what}: expected a JSON list of actions, got "
                                                        f"{text[:120]!r}")
    out = []
    for a in value:
        ok = (isinstance(a, dict) and isinstance(a.get("action"), str) and a["action"].strip()
              and all(isinstance(a.get(k), (int, float)) and not isinstance(a.get(k), bool) for k in ("start", "end")))
        if not ok or not 0 <= a["start"] < a["end"] <= duration + 1e-6:
            raise AnnotationError("malformed_model_output", f"{what}: bad action {a!r} (need action, 0 <= start < "
                                                            f"end <= {duration:.1f})")
        out.append({"action": a["action"].strip(), "start": float(a["start"]), "end": float(min(a["end"], duration))})
    return sorted(out, key=lambda a: (a["start"], a["end"]))
