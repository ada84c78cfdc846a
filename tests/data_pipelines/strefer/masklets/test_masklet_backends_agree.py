"""The two SAM2 backends on one set of weights give the same masklets: Meta's hiera-t (its yaml at 256 px, every
tensor redrawn) through Meta's `sam2` video predictor, and the same weights converted to transformers'
`Sam2VideoModel` (converters.sam2_meta's key map) through transformers' inference session; the generator around
each (anchor, forward/backward runs, merge, RLE) is the same code. Frames are drawn at the model's 256 px, so the
two resizes (Meta: PIL bicubic; transformers: antialiased bilinear) are both the identity."""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")
pytest.importorskip("pycocotools")
pytestmark = [pytest.mark.torch, pytest.mark.slow]  # ~30 s on a busy 2-core CPU (a 39M-param Meta model)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "converters"))

from data_pipelines.strefer.masklets import MaskletGenerator  # noqa: E402

S = 256
T = 4
BOXES = [lambda k: [50, 40 + 10 * k, 130, 120 + 10 * k], lambda k: [140 + 5 * k, 150, 230 + 5 * k, 220]]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(Meta .pt path, HF directory) of one redrawn hiera-t."""
    from sam2.build_sam import build_sam2
    from sam2_fixtures import redraw
    from transformers import Sam2VideoConfig, Sam2VideoModel

    from converters.sam2_convert import config_from_hf, hf_names
    from converters.sam2_meta import hf_config, load_meta_state, meta_to_hf_state

    d = tmp_path_factory.mktemp("sam2_both")
    torch.manual_seed(0)
    meta = redraw(build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu", mode="eval",
                             hydra_overrides_extra=[f"++model.image_size={S}"]), 0)
    pt = str(d / "sam2.1_hiera_tiny.pt")
    torch.save({"model": meta.state_dict()}, pt)
    state = load_meta_state(pt)
    cj = hf_config(state, "tiny", S)
    names = [n for n, _ in hf_names("sam2_video", config_from_hf("sam2_video", cj))]
    hf_state = meta_to_hf_state(state, names, where=pt, family="sam2_video")
    hf = Sam2VideoModel(Sam2VideoConfig(**{k: v for k, v in cj.items() if k not in ("model_type", "architectures")}))
    hf.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in hf_state.items()}, strict=True)
    hf.save_pretrained(str(d / "hf"))
    return pt, str(d / "hf")


def video():
    fr = np.full((T, S, S, 3), 60, np.uint8)
    for k in range(T):
        for box, rgb in zip(BOXES, [(200, 40, 40), (40, 200, 60)]):
            x0, y0, x1, y1 = box(k)
            fr[k, y0:y1, x0:x1] = rgb
    return fr


def test_meta_and_transformers_backends_agree(weights):
    pt, hf_dir = weights
    out = {}
    for name, tracker in (("meta", {"backend": "sam2", "path": pt, "model_overrides": [f"++model.image_size={S}"]}),
                          ("hf", {"backend": "hf", "path": hf_dir})):
        gen = MaskletGenerator({"torch_threads": 1, "tracker": tracker,
                                "detector": {"kind": "oracle", "oracle_jitter": 0.0}}).setup()
        out[name] = gen.generate(video(), ["the red box", "the green box"],
                                 boxes_fn=lambda k: [(b(k), i) for i, b in enumerate(BOXES)])
    a, b = out["meta"], out["hf"]
    assert a.anchor_frame == b.anchor_frame == 1 and a.counts == b.counts
    assert len(a.entities) == len(b.entities) == 2
    for ea, eb in zip(a.entities, b.entities):
        assert ea.expression_index == eb.expression_index
        np.testing.assert_allclose(ea.object_scores, eb.object_scores, rtol=0, atol=1e-4)
        assert ea.present == eb.present
        ma, mb = a.mask_array(ea), b.mask_array(eb)
        # binarised at logit 0 after the same bilinear upsampling: equal up to pixels within float error of it
        assert (ma != mb).mean() <= 1e-4, (ma != mb).sum()
    assert any(any(e.present) for e in a.entities)  # something was segmented: not a comparison of empties
