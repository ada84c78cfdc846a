"""The `openai` annotator's backend: one OpenAI-compatible `/chat/completions` call per prompt (stdlib HTTP).

Frames travel as PNG data URLs in one user message, each after a "t=<s>s" text part, the prompt last. The API
key (if the server wants one) is read from the environment variable the config names; it never enters a config
or an output. A server that cannot be reached or answers an error raises AnnotationError("annotator_http_error").
"""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.error
import urllib.request

import numpy as np

from data_pipelines.errors import AnnotationError
from data_pipelines.strefer.config import AnnotatorConfig


def _png_data_url(frame: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def chat_messages(frames, times, prompt: str) -> list[dict]:
    parts = []
    if frames is not None:
        for f, t in zip(frames, times):
            parts.append({"type": "text", "text": f"t={float(t):.2f}s"})
            parts.append({"type": "image_url", "image_url": {"url": _png_data_url(np.asarray(f))}})
    parts.append({"type": "text", "text": prompt})
    return [{"role": "user", "content": parts}]


class OpenAIChat:
    def __init__(self, cfg: AnnotatorConfig):
        self.cfg = cfg
        self.endpoint = cfg.url.rstrip("/") + "/chat/completions"
        self.key = os.environ.get(cfg.api_key_env)

    def __call__(self, frames, times, prompt: str) -> str:
        body = {"model": self.cfg.model, "messages": chat_messages(frames, times, prompt),
                "temperature": self.cfg.temperature, "top_p": self.cfg.top_p, "max_tokens": self.cfg.max_new_tokens}
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        req = urllib.request.Request(self.endpoint, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                reply = json.loads(resp.read())
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as e:
            raise AnnotationError("annotator_http_error", f"chat endpoint {self.endpoint} failed: {e}") from None
        try:
            text = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise AnnotationError("malformed_model_output", f"chat endpoint {self.endpoint} answered no "
                                                            f"choices[0].message.content: {str(reply)[:120]}") from None
        if not isinstance(text, str):
            raise AnnotationError("malformed_model_output", f"chat endpoint {self.endpoint}: content is not text")
        return text


class OpenAIChatFactory:
    """Picklable (Beam ships it to workers); builds the client in the worker's `setup`."""

    def __init__(self, cfg: AnnotatorConfig):
        self.cfg = cfg

    def __call__(self) -> OpenAIChat:
        return OpenAIChat(self.cfg)
