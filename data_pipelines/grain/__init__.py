"""Grain pipelines: JSONL/ArrayRecord sources -> decode/resize/patchify/tokenize/labels/positions -> padded
batches (numpy dicts), sharded by JAX process, with worker processes and checkpointable state.

    from data_pipelines.grain import PipelineConfig, make_pipeline
    it = make_pipeline(PipelineConfig(index="data/captions/train.jsonl", tokenizer="tok/", batch_size=4))
    batch = next(it); state = it.get_state(); ...; it.set_state(state)
"""

__all__ = ["PipelineConfig", "make_pipeline", "BatchIterator"]


def __getattr__(name):
    if name in __all__:
        from data_pipelines.grain import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
