"""The errors a user can fix. The CLI catches ``AblateError`` and prints its one-line message."""


class AblateError(ValueError):
    """Bad input; the message is one line that says what to change."""


class ConfigError(AblateError):
    """A config setting that cannot work."""


class DataError(AblateError):
    """A dataset setting that cannot work (a missing root or file, say)."""


class CheckpointError(AblateError):
    """No usable checkpoint although some exist."""
