"""Closed vocabulary of the synthetic set: palette, shapes, sizes, and every sentence template.

Everything text-side (questions, answers, captions, referring expressions) is built from these templates, so
the tiny tokenizer (`data_pipelines.tokenizer`) is trained on `corpus_lines()` and covers it compactly.
"""

from __future__ import annotations

# Distinct in luma and chroma so that the per-pixel colour survives H.264 4:2:0 compression.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 225, 40),
    "magenta": (225, 50, 225),
    "cyan": (40, 225, 230),
    "white": (245, 245, 245),
    "orange": (250, 140, 30),
}
BACKGROUND = (24, 24, 24)
OCCLUDER = (120, 120, 120)
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"small": 10, "large": 15}  # half-extent in pixels at 128 px frames

ACTIONS = ("enter", "exit", "move_left", "move_right", "stop", "bounce", "collide", "occluded")

# Event phrases: (verb phrase for questions, past-tense sentence for answers/captions).
EVENT_PHRASES = {
    "enter": ("enter the scene", "enters the scene"),
    "reenter": ("come back into the scene", "comes back into the scene"),
    "exit": ("leave the scene", "leaves the scene"),
    "stop": ("stop moving", "stops moving"),
    "bounce": ("bounce off the wall", "bounces off the wall"),
    "collide": ("bump into another shape", "bumps into the {other}"),
}
# Durative states for QVHighlights-style queries (the window is where the sentence is true).
STATE_QUERIES = {
    "move_right": "the {ref} is moving to the right",
    "move_left": "the {ref} is moving to the left",
    "stop": "the {ref} is standing still",
    "enter": "the {ref} is coming into view",
    "exit": "the {ref} is going out of view",
    "occluded": "the {ref} is partly hidden",
}

STREAMO_EVENT_QUESTION = "Tell me when the {ref} {verb}."  # verb: third_person(EVENT_PHRASES[k][0])
STREAMO_EVENT_ANSWER = "The {ref} {sentence}."
STREAMO_COUNT_QUESTION = "How many shapes can you see right now?"
STREAMO_COUNT_ANSWER = "I can see {n} {noun}."
STREAMO_NARRATION_QUESTION = "Tell me every time a shape enters or leaves the scene."
STRIDE_QUERY = "When does the {ref} {verb}?"
CAPTION_QUESTION = "Describe what happens in the video."
CAPTION_SENTENCE = "At {t:.1f} seconds the {ref} {sentence}."
YESNO_QUESTION = "At {t:.1f} seconds, is it true that {query}? Answer Yes or No."

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")

# Tokenizer-corpus text only (no stream carries it): the one-paragraph system prompt the synthetic set once used.
# Kept verbatim so the tiny tokenizer trained on `corpus_lines()`, and every result recorded with it (the demo's),
# stay byte-identical; the streams now carry Streamo's own prompt (`formats.streamo.STREAMO_SYSTEM_PROMPT`), which
# this tokenizer encodes in about as many tokens (516 vs 513 had it been trained on it).
_TOKENIZER_PROMPT_TEXT = (
    "You are a helpful assistant specializing in streaming video analysis. You will receive input frame by "
    "frame, each labeled with absolute time intervals in the exact format <Xs-Ys> (e.g., <0s-1s>). "
    "Use </Silence> when no relevant event has started or the input is irrelevant to the question. "
    "Use </Standby> when an event is in progress or the question cannot be answered yet. "
    "Use </Response> when an event has concluded or the information is sufficient, followed by the answer."
)


def third_person(verb_phrase: str) -> str:
    """'enter the scene' -> 'enters the scene' (every verb of EVENT_PHRASES takes a plain -s)."""
    verb, _, rest = verb_phrase.partition(" ")
    return f"{verb}s {rest}".strip()


def entity_name(color: str, shape: str) -> str:
    return f"{color} {shape}"


def corpus_lines() -> list[str]:
    """Deterministic text covering every template with every word of the vocabulary (tokenizer training)."""
    lines = [_TOKENIZER_PROMPT_TEXT, STREAMO_COUNT_QUESTION, STREAMO_NARRATION_QUESTION, CAPTION_QUESTION,
             "You are a helpful assistant.", "Yes", "No", "Yes.", "No."]
    refs = []
    for color in PALETTE:
        for shape in SHAPES:
            refs.append(entity_name(color, shape))
    for size in SIZES:
        for shape in SHAPES:
            refs += [f"{size} {shape}", f"{shape} that enters last", f"{shape} that enters first",
                     f"{shape} that leaves and comes back", f"only {shape}", f"{size} {shape} that enters last"]
    for i, ref in enumerate(refs):
        for verb, sentence in EVENT_PHRASES.values():
            other = refs[(i + 7) % len(refs)]
            lines.append(STREAMO_EVENT_QUESTION.format(ref=ref, verb=third_person(verb)))
            lines.append(STREAMO_EVENT_ANSWER.format(ref=ref, sentence=sentence.format(other=other)))
            lines.append(STRIDE_QUERY.format(ref=ref, verb=verb))
        for q in STATE_QUERIES.values():
            lines.append(YESNO_QUESTION.format(t=(i % 20) + 0.5, query=q.format(ref=ref)))
        lines.append(CAPTION_SENTENCE.format(t=i / 4, ref=ref, sentence="enters the scene from the left"))
        lines.append(CAPTION_SENTENCE.format(t=i / 3, ref=ref, sentence="leaves the scene on the right"))
    for n, word in enumerate(NUMBER_WORDS):
        lines.append(STREAMO_COUNT_ANSWER.format(n=word, noun="shape" if n == 1 else "shapes"))
    for s in range(0, 121):
        lines.append(f"<{s}s-{s + 1}s>")
        lines.append(f"<{s + 0.5:.1f} seconds> <{s:.1f} seconds> {s} {s}.{s % 10}")
    lines += [f"{role}\n" for role in ("system", "user", "assistant") for _ in range(200)]
    lines += [" " + ln for ln in lines if ln[:1].isupper()]  # answers follow a state token: " The ..."
    return lines
