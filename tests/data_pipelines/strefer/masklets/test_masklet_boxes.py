"""Box geometry of the masklet generator against hand-computed values and Strefer's own matcher example."""

import numpy as np
import pytest

from data_pipelines.strefer.masklets.boxes import (anchor_search_order, box_iou, generalized_box_iou,
                                                   hungarian_match, masks_to_boxes)


def test_anchor_search_order_is_bfs_over_a_balanced_tree():
    # n=7: root 3; children of [0,2] and [4,6]: 1, 5; leaves 0, 2, 4, 6
    assert anchor_search_order(7) == [3, 1, 5, 0, 2, 4, 6]
    # n=8: root (0+7)//2 = 3; [0,2] -> 1, [4,7] -> 5; then 0, 2, 4, [6,7] -> 6; then [7,7] -> 7
    assert anchor_search_order(8) == [3, 1, 5, 0, 2, 4, 6, 7]
    assert anchor_search_order(1) == [0]
    assert anchor_search_order(2) == [0, 1]
    # n=32 starts at the middle, then the quartiles
    assert anchor_search_order(32)[:7] == [15, 7, 23, 3, 11, 19, 27]
    assert sorted(anchor_search_order(32)) == list(range(32))


def test_masks_to_boxes_exclusive_max_and_nan_for_empty():
    m = np.zeros((2, 5, 6), bool)
    m[0, 1:3, 2:5] = True  # rows 1-2, cols 2-4
    assert masks_to_boxes(m)[0].tolist() == [2, 1, 5, 3]
    assert np.isnan(masks_to_boxes(m)[1]).all()


def test_giou_hand_values():
    a = np.array([[0, 0, 2, 2]], float)
    b = np.array([[1, 1, 3, 3], [2, 0, 3, 1], [0, 0, 2, 2]], float)
    # overlap: inter 1, union 7, hull 9 -> 1/7 - 2/9; disjoint: a=(0,0,2,2), b=(2,0,3,1): iou 0, hull 3x2=6,
    # union 4+1=5 -> -1/6; identical: 1
    np.testing.assert_allclose(generalized_box_iou(a, b)[0], [1 / 7 - 2 / 9, -1 / 6, 1.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(box_iou(a, b)[0], [1 / 7, 0.0, 1.0], rtol=0, atol=1e-12)
    # a missing box is the worst match
    assert generalized_box_iou(a, np.full((1, 4), np.nan))[0, 0] == -1.0


def test_hungarian_matches_strefers_example():
    # Strefer's matcher.py __main__: two box lists with rows 1 and 2 swapped -> {0: 0, 1: 2, 2: 1, 3: 3}
    box1 = np.array([[159, 170, 273, 351], [398, 0, 453, 176], [248, 185, 308, 313], [514, 278, 639, 359]], float)
    box2 = np.array([[158, 170, 273, 352], [248, 185, 308, 313], [398, 0, 453, 176], [514, 278, 639, 359]], float)
    assert hungarian_match(box1, box2) == {0: 0, 1: 2, 2: 1, 3: 3}


def test_hungarian_prefers_global_optimum_over_greedy():
    # greedy on a0 would take b0 (GIoU 1) and leave a1 with b1 far away; here a0~b0 exactly, a1 overlaps b1 only
    a = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    b = np.array([[21, 0, 31, 10], [0, 0, 10, 10]], float)
    assert hungarian_match(a, b) == {0: 1, 1: 0}


@pytest.mark.parametrize("n", [2, 3])
def test_hungarian_ties_keep_identity(n):
    empty = np.full((n, 4), np.nan)
    assert hungarian_match(empty, empty) == {i: i for i in range(n)}


def test_grounding_dino_prompt_is_strefers():
    from data_pipelines.strefer.masklets.detectors import grounding_dino_prompt

    assert grounding_dino_prompt(["car", "Person", "dog", "car"]) == "person.car.dog. "
