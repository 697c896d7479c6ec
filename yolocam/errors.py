"""The package's one exception type."""


class YolocamError(ValueError):
    """Bad input or an unusable model: the message names what was expected and what was received."""
