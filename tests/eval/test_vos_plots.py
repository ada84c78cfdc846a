"""The VOS plots render from an `aggregate` summary (PNG files a user can open)."""

import numpy as np

from stvl_jax.eval.vos_metrics import aggregate, score_object
from stvl_jax.eval.vos_plots import plot_jf_per_case, plot_per_frame


def test_plots_write_pngs(tmp_path):
    gt = np.zeros((4, 8, 8), bool)
    gt[:, 2:5, 2:5] = True
    pred = gt.copy()
    pred[2:] = False
    objs = []
    for cases in (["late_entry"], ["exit_reentry", "twin"], []):
        o = score_object(gt, pred)
        o["cases"] = cases
        objs.append(o)
    s = aggregate(objs)
    assert sorted(s["per_case"]) == ["exit_reentry", "late_entry", "plain", "twin"]
    for fn, name in ((plot_jf_per_case, "cases.png"), (plot_per_frame, "frames.png")):
        path = fn(s, str(tmp_path / name))
        data = open(path, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
