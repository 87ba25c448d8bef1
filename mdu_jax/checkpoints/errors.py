"""The errors of reading and writing checkpoints; each message names the file and tensor at fault."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, malformed, or does not match the model it should hold."""


class ConversionError(CheckpointError):
    """A conversion cannot start or finish (bad arguments, an existing destination, ...)."""
