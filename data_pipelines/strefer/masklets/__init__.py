"""Strefer's referring masklet generator (PyTorch side; torch, transformers, sam2 and pycocotools are imported
lazily): detector -> anchor frame -> SAM2 forward/backward tracking -> COCO RLE masklets -> referring matching.

    from data_pipelines.strefer.masklets import MaskletConfig, MaskletGenerator
    gen = MaskletGenerator(MaskletConfig.from_dict({"detector": {...}, "tracker": {...}})).setup()
    result = gen.generate(frames, expressions, nouns=nouns, boxes_fn=None)
"""

__all__ = ["MaskletConfig", "MaskletGenerator", "MaskletInputError", "MaskletResult", "EntityMasklet"]

_WHERE = {"MaskletConfig": "config", "MaskletGenerator": "generator", "MaskletInputError": "generator",
          "MaskletResult": "result", "EntityMasklet": "result"}


def __getattr__(name):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"data_pipelines.strefer.masklets.{_WHERE[name]}"), name)
    raise AttributeError(name)
