"""Typed user-input errors of the data path. Each names the input (file, record) and what was expected."""

from __future__ import annotations

from stvl_jax.errors import InputError


class VideoDecodeError(InputError):
    """A video file is missing, empty, corrupt, truncated, not a video, or decoding timed out."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode video {self.path!r}: {reason}")


class AnnotationError(InputError):
    """A record of an annotation/index file is malformed (bad JSON, missing field, time out of range...).

    `reason` is a short stable key used by skip counters (e.g. "bad_json", "missing_field", "time_out_of_range").
    """

    def __init__(self, reason: str, message: str, source: str = ""):
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{message} [{reason}]")


def skip_reason(err: Exception) -> str:
    """The skip counters' key of a bad input: `missing_file` or `bad_video` for a VideoDecodeError, an
    AnnotationError's own `reason`, `invalid_input` for any other input error."""
    if isinstance(err, VideoDecodeError):
        return "missing_file" if err.reason == "file not found" else "bad_video"
    if isinstance(err, AnnotationError):
        return err.reason
    return "invalid_input"
