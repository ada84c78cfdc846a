"""Shared pieces of the VIRST tests: the tiny config and a TEST DOUBLE of the TDAU tracker.

`FakeTdau` stands in for `stvl_jax.models.virst.tdau` (written separately): it implements the agreed anchor rule
round(linspace(0, T-1, max(1, T // 4))) and records the arguments of `segment_with_anchors` instead of tracking.
"""

from __future__ import annotations

import sys
import types

import jax.numpy as jnp
import numpy as np

from stvl_jax.models.virst.config import load_virst_config


def tiny_config(**overrides):
    cfg = load_virst_config("virst_tiny")
    return cfg.replace(**overrides) if overrides else cfg


class FakeTdau(types.ModuleType):
    """TEST DOUBLE of the tdau module: no tracking, records calls."""

    def __init__(self):
        super().__init__("stvl_jax.models.virst.tdau")
        self.calls = []

    @staticmethod
    def anchor_frames_for(t_seg: int) -> tuple[int, ...]:
        return tuple(int(i) for i in np.round(np.linspace(0, t_seg - 1, max(1, t_seg // 4))))

    def segment_with_anchors(self, sam2, pixel_values, anchor_frames, anchor_prompts, *, multimask, features=None):
        self.calls.append(dict(anchor_frames=anchor_frames, prompts_shape=tuple(anchor_prompts.shape),
                               pixels_shape=tuple(pixel_values.shape), multimask=multimask))
        n, t = anchor_prompts.shape[0], pixel_values.shape[0]
        return {"low_res_logits": jnp.zeros((n, t, 4, 4)), "iou": jnp.zeros((n, t)),
                "object_score_logits": jnp.zeros((n, t)), "features": features}  # out of jit for the test


def install_fake_tdau(monkeypatch) -> FakeTdau:
    import stvl_jax.models.virst as pkg

    fake = FakeTdau()
    monkeypatch.setitem(sys.modules, "stvl_jax.models.virst.tdau", fake)
    monkeypatch.setattr(pkg, "tdau", fake, raising=False)
    return fake
