"""Stage 2: the synthetic annotator against the raw ground truth; the chat annotator's parsing, retries and
skips; the OpenAI-compatible backend against an in-process fake server."""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from strefer_helpers import MULTISHOT


def _clip(root, vid, a, b, fps=4.0):
    return {"clip_id": f"{vid}/x", "video": os.path.join(root, "videos", vid + ".mp4"), "video_id": vid, "shot": 0,
            "segment": 0, "start_frame": a, "end_frame": b, "start": a / fps, "end": b / fps, "fps": fps}


def test_synthetic_annotator_matches_ground_truth(strefer_set):
    from data_pipelines.strefer.annotators import SyntheticAnnotator

    ann = json.load(open(os.path.join(strefer_set, "annotations", "synth_00001.json")))
    ann_ = SyntheticAnnotator()
    ann_.setup()
    meta = ann_.annotate(_clip(strefer_set, "synth_00001", 8, 32))
    # hand rule: the entities with a visible instance in frames 8..31; every action overlapping [2 s, 8 s)
    visible = sorted({o["entity"] for fr in ann["frames"][8:32] for o in fr["objects"]})
    assert [e["id"] for e in meta["entities"]] == visible
    for e in meta["entities"]:
        gt = next(x for x in ann["entities"] if x["id"] == e["id"])
        assert e["expression"] == f"the {gt['color']} {gt['category']}" and e["noun"] == gt["category"]
        want = [(a["action"], max(a["start"], 2.0) - 2.0, min(a["end"], 8.0) - 2.0) for a in ann["actions"]
                if a["entity"] == e["id"] and a["start"] < 8.0 and a["end"] > 2.0]
        got = [(a["action"], a["start"], a["end"]) for a in e["actions"]]
        assert [g[0] for g in got] == [w[0] for w in want]
        assert np.allclose([g[1:] for g in got], [w[1:] for w in want], atol=1e-4) if want else got == []


def test_synthetic_annotator_multishot_offsets_and_cut(strefer_set):
    from data_pipelines.errors import AnnotationError
    from data_pipelines.strefer.annotators import SyntheticAnnotator
    from data_pipelines.synthetic.multishot import multishot_id

    vid = multishot_id(MULTISHOT)
    ms = json.load(open(os.path.join(strefer_set, "annotations", vid + ".json")))
    second = ms["shots"][1]
    a = SyntheticAnnotator()
    a.setup()
    meta = a.annotate(_clip(strefer_set, vid, second["start_frame"], second["start_frame"] + 16))
    own = a.annotate(_clip(strefer_set, second["vid"], 0, 16))  # the same shot seen in its own video
    assert meta == own
    cut = second["start_frame"]
    with pytest.raises(AnnotationError, match="clip_crosses_cut"):
        a.annotate(_clip(strefer_set, vid, cut - 4, cut + 4))


def test_synthetic_annotator_without_ground_truth(bad_videos):
    from data_pipelines.errors import AnnotationError
    from data_pipelines.strefer.annotators import SyntheticAnnotator

    a = SyntheticAnnotator()
    a.setup()
    with pytest.raises(AnnotationError, match="no_ground_truth"):
        a.annotate({"clip_id": "good/x", "video": bad_videos["good"], "start_frame": 0, "end_frame": 8})


class _Script:
    """A fake chat: replies from a list, records prompts."""

    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def __call__(self, frames, times, prompt):
        self.prompts.append(prompt)
        return self.replies.pop(0)


def _chat_annotator(replies, tries=3):
    from data_pipelines.strefer.annotators import ChatAnnotator
    from data_pipelines.strefer.config import AnnotatorConfig

    script = _Script(replies)
    a = ChatAnnotator("fake", lambda: script, AnnotatorConfig(name="openai", url="http://x", model="m", tries=tries))
    a.setup()
    return a, script


CLIP = {"clip_id": "v/s000c000", "start": 0.0, "end": 6.0}
FRAMES, TIMES = np.zeros((4, 8, 8, 3), np.uint8), np.arange(4) * 1.5


def test_chat_annotator_parses_three_steps():
    a, script = _chat_annotator([
        '```json\n["child in a red shirt", "small white dog"]\n```',
        '```json\n["person", "dog"]\n```',
        '```json\n[{"action": "runs", "start": 0.5, "end": 2}, {"action": "waves", "start": 0, "end": 0.5}]\n```',
        '[{"action": "barks", "start": 1, "end": 6.0}]',
    ])
    meta = a.annotate(CLIP, FRAMES, TIMES)
    assert meta == {"entities": [
        {"id": 1, "expression": "child in a red shirt", "noun": "person", "general_noun": "person",
         "actions": [{"action": "waves", "start": 0.0, "end": 0.5}, {"action": "runs", "start": 0.5, "end": 2.0}]},
        {"id": 2, "expression": "small white dog", "noun": "dog", "general_noun": "dog",
         "actions": [{"action": "barks", "start": 1.0, "end": 6.0}]}]}
    assert '"child in a red shirt"' in script.prompts[1] and "6.0 seconds" in script.prompts[2]


@pytest.mark.parametrize("bad", ["no json here", '```json\n{"a": 1}\n```', '["x", 3]', "[]"])
def test_chat_annotator_malformed_entities_skip_after_tries(bad):
    from data_pipelines.errors import AnnotationError

    a, script = _chat_annotator([bad] * 3)
    with pytest.raises(AnnotationError, match="malformed_model_output"):
        a.annotate(CLIP, FRAMES, TIMES)
    assert len(script.prompts) == 3  # three tries, as Strefer's parser


def test_chat_annotator_retry_recovers_and_checks_lengths_and_times():
    from data_pipelines.errors import AnnotationError

    a, _ = _chat_annotator(['garbage', '["a man"]', '["person", "extra"]', '["person"]']
                           + ['[{"action": "walks", "start": 2, "end": 9}]'] * 3, tries=3)
    with pytest.raises(AnnotationError, match="end <= 6.0"):  # 9 s is past the 6 s clip, three times
        a.annotate(CLIP, FRAMES, TIMES)
    a, _ = _chat_annotator(['garbage', '["a man"]', '["person"]', '[{"action": "walks", "start": 2, "end": 5}]'])
    assert a.annotate(CLIP, FRAMES, TIMES)["entities"][0]["actions"] == [{"action": "walks", "start": 2.0,
                                                                          "end": 5.0}]


class _FakeOpenAI(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeOpenAI.requests.append((self.path, self.headers.get("Authorization"), body))
        text = body["messages"][0]["content"][-1]["text"]
        reply = '```json\n["red ball"]\n```' if text.startswith("List every") else (
            '```json\n["ball"]\n```' if "generalized noun" in text else '[{"action": "rolls", "start": 0, "end": 1}]')
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_annotator_against_fake_server(monkeypatch):
    from data_pipelines.errors import AnnotationError
    from data_pipelines.strefer.annotators import make_annotator
    from data_pipelines.strefer.config import AnnotatorConfig

    server = HTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("TEST_KEY", "sk-test")
        url = f"http://127.0.0.1:{server.server_port}/v1"
        a = make_annotator(AnnotatorConfig(name="openai", url=url, model="tiny", api_key_env="TEST_KEY",
                                           num_frames=2))
        a.setup()
        meta = a.annotate(CLIP, FRAMES, TIMES)
        assert meta["entities"] == [{"id": 1, "expression": "red ball", "noun": "ball", "general_noun": "ball",
                                     "actions": [{"action": "rolls", "start": 0.0, "end": 1.0}]}]
        path, auth, body = _FakeOpenAI.requests[0]
        assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "tiny"
        parts = body["messages"][0]["content"]
        assert [p["type"] for p in parts] == ["text", "image_url", "text", "image_url", "text"]
        assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    finally:
        server.shutdown()
    dead = make_annotator(AnnotatorConfig(name="openai", url=url, model="tiny", tries=1, timeout_s=2))
    dead.setup()
    with pytest.raises(AnnotationError, match="annotator_http_error"):
        dead.annotate(CLIP, FRAMES, TIMES)


def test_stvl_annotator_needs_the_cli_hook():
    from data_pipelines.strefer.annotators import make_annotator
    from data_pipelines.strefer.config import AnnotatorConfig
    from stvl_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="stvl data strefer"):
        make_annotator(AnnotatorConfig(name="stvl", checkpoint="ckpt/"))
