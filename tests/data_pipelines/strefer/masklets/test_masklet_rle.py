"""COCO RLE of masklets through pycocotools: hand-built masks, round trips, the synthetic set's format."""

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from data_pipelines.rle import rle_encode  # noqa: E402
from data_pipelines.strefer.masklets import coco_rle  # noqa: E402


def test_uncompressed_counts_decode_to_the_hand_mask():
    # column-major runs over [[0, 1], [1, 1]]: column 0 = 0, 1; column 1 = 1, 1 -> 1 zero then 3 ones
    want = np.array([[0, 1], [1, 1]], bool)
    assert (coco_rle.decode({"size": [2, 2], "counts": [1, 3]}) == want).all()


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 96)])
def test_round_trip_and_area(shape):
    rng = np.random.default_rng(sum(shape))
    for p in (0.0, 0.3, 1.0):
        m = rng.random(shape) < p
        r = coco_rle.encode(m)
        assert isinstance(r["counts"], str) and r["size"] == list(shape)
        assert (coco_rle.decode(r) == m).all()
        assert coco_rle.area(r) == int(m.sum())
        # the synthetic set's uncompressed RLE of the same mask decodes the same
        assert (coco_rle.decode(rle_encode(m)) == m).all()


def test_encode_refuses_a_stack():
    with pytest.raises(ValueError, match="one \\(H, W\\) mask"):
        coco_rle.encode(np.zeros((2, 3, 3), bool))
