"""Promptable video segmentation data (SAM2 training / `stvl eval vos`) from the synthetic set's masklets.

    from data_pipelines.vos import VosReader, simulate_prompts
    reader = VosReader("synth/", "train")
    clip = reader.sample(rng)                    # 8 frames, masks (O, T, H, W), case labels
    prompts = simulate_prompts(clip, rng)        # SAM2-style box / click / mask prompts on 1-2 frames
    batch = collate([clip_arrays(clip, prompts, max_objects=4)])   # fixed shapes for a jitted step

Generate a set with returning entities (the exit/re-entry case) with `vos_synth_config`.
"""

from data_pipelines.vos.batch import CASE_NAMES, clip_arrays, collate
from data_pipelines.vos.clips import CASES, VosClip, VosClipConfig, VosReader, load_video_annotation, make_clip
from data_pipelines.vos.prompts import (
    Prompt, PromptConfig, box_prompt, first_frame_box_prompts, mask_to_box, sample_points, simulate_prompts,
)

__all__ = ["CASES", "CASE_NAMES", "Prompt", "PromptConfig", "VosClip", "VosClipConfig", "VosReader", "box_prompt",
           "clip_arrays", "collate", "first_frame_box_prompts", "load_video_annotation", "make_clip", "mask_to_box",
           "sample_points", "simulate_prompts", "vos_synth_config"]

RETURN_PROB = 0.5  # 45 % of the entities leave and come back within the video (10 % in the default scenes)


def vos_synth_config(num_videos: int = 64, seed: int = 0, p_return: float = RETURN_PROB):
    """SynthConfig of a set for promptable video segmentation: the default scenes plus returning entities."""
    from data_pipelines.synthetic.generate import SynthConfig
    from data_pipelines.synthetic.scene import SceneParams

    return SynthConfig(num_videos=num_videos, seed=seed, scene=SceneParams(p_return=p_return))
