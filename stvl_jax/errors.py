"""User-facing error types. The CLI prints these as one line (no traceback); library callers can catch them."""


class UserError(Exception):
    """An error caused by user input (bad path, corrupt file, malformed config or annotation)."""


class ConfigError(UserError, ValueError):
    """A config file or override is invalid (unknown key, wrong type, inconsistent values)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, corrupt, or does not match the model (names the key and both shapes)."""


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (a non-finite loss or gradient norm with optim.non_finite=stop)."""


class InputError(UserError, ValueError):
    """A batch or input file is malformed (names the field and what was expected)."""
