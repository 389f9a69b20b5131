"""Exceptions knetflow raises; every one names the op and the user's line where it can."""


class KnetflowError(Exception):
    """Base class of knetflow's own errors."""


class ShapeError(KnetflowError, ValueError):
    """A shape or dtype does not fit an op; raised when the node is built."""


class TracingError(KnetflowError, TypeError):
    """A symbolic value was used where Python needs a concrete one (if, len, float...)."""


class FeedError(KnetflowError, ValueError):
    """A value fed to a plan is missing or does not match its placeholder."""


class ExecutionError(KnetflowError, RuntimeError):
    """An op failed while a plan ran; the message names the op, shapes and user line."""


class NumericsError(ExecutionError):
    """`check_numerics=True` found NaN or Inf; names the first op that made it."""


class FormatError(KnetflowError, ValueError):
    """A saved file is malformed, truncated, hostile or of an unsupported version."""
