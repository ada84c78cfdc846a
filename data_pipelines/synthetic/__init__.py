"""The embedded synthetic space-time video set: moving shapes with full ground truth (see docs/data.md).

    from data_pipelines.synthetic import SynthConfig, generate_dataset
    generate_dataset("out/", SynthConfig(num_videos=64, seed=0))
"""

__all__ = ["SynthConfig", "generate_dataset"]


def __getattr__(name):
    if name in __all__:
        from data_pipelines.synthetic import generate

        return getattr(generate, name)
    raise AttributeError(name)
