"""Referring matching (stage 4): the generalized-noun groups, Strefer's one-to-one resolution and the candidate
builders, hand-built cases."""

import numpy as np

from data_pipelines.strefer.masklets.matching import (NounGroup, assign_one_to_one, noun_groups, parse_object_indices,
                                                      synthetic_candidates, vlm_candidates)


def test_single_answers_first_then_first_free():
    # e0 -> [2, 0] (several), e1 -> [2] (single): e1 claims 2 first, e0 takes its first free one, 0
    assert assign_one_to_one([[2, 0], [2]]) == ({1: 2, 0: 0}, [], [])


def test_conflicting_single_answers_are_dropped_and_counted():
    # e0 and e2 both answer only masklet 1; e1 answers nothing; e3 -> [1, 3] must avoid the contested 1
    assigned, conflicts, unmatched = assign_one_to_one([[1], [], [1], [1, 3]])
    assert assigned == {3: 3} and conflicts == [0, 2] and unmatched == [1]


def test_several_answers_with_nothing_free_is_unmatched():
    assert assign_one_to_one([[0], [1], [0, 1]]) == ({0: 0, 1: 1}, [], [2])


def test_parse_object_indices():
    assert parse_object_indices("<ground>the red car</ground><objects><obj0><obj2></objects>") == [0, 2]
    assert parse_object_indices("boxes 1 and 3") == [1, 3]
    assert parse_object_indices("none") == []


def test_synthetic_candidates_by_iou():
    prompts = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float)
    # expression 1's box overlaps prompt 0 with IoU 81/100 (9x9 inside 10x10); expression 0's box overlaps
    # prompt 1 with IoU 25/175 = 0.14 (< 0.5: no candidate); expression 2 has no box
    gt = [([55, 55, 65, 65], 0), ([1, 1, 10, 10], 1)]
    assert synthetic_candidates(gt, prompts, 3, 0.5) == [[], [0], []]
    assert synthetic_candidates(gt, prompts, 3, 0.1) == [[1], [0], []]


def test_vlm_candidates_drop_out_of_range_and_repeats():
    prompts = np.zeros((3, 4))
    answers = {"a": "<obj2><obj2><obj7>", "b": "1"}
    got = vlm_candidates(lambda img, boxes, e: parse_object_indices(answers[e]), np.zeros((4, 4, 3), np.uint8),
                         ["a", "b"], prompts)
    assert got == [[2], [1]]


def test_noun_groups_partition_expressions_and_masklets():
    # Strefer's demo: three people and a dog; the detector labelled masklets dog, person, cat, person, "t - shirt"
    nouns = ["person", "dog", "Person", "t-shirt", "person"]
    labels = ["dog", "person", "cat", "person", "t - shirt"]
    assert noun_groups(nouns, labels) == [NounGroup("person", (0, 2, 4), (1, 3)), NounGroup("dog", (1,), (0,)),
                                          NounGroup("t-shirt", (3,), (4,))]  # "cat" (masklet 2): no group
    assert noun_groups(["bird", "..."], ["bird", "", "-"]) == [NounGroup("bird", (0,), (0,)),
                                                               NounGroup("...", (1,), ())]
