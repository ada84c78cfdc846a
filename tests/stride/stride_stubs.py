"""Test doubles shared by the STRIDE loop tests."""

import numpy as np


class Recorder:
    """predict() stub: fixed p(active); records the labels it was called with."""

    def __init__(self, p):
        self.p = np.asarray(p, np.float32)
        self.calls = []

    def __call__(self, labels):
        self.calls.append(labels.copy())
        return self.p
