"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""


class HybridclError(Exception):
    """Base class: the message says what is wrong, where, and how to fix it."""


class ConfigError(HybridclError):
    """A config key, value or file is wrong."""


class DataError(HybridclError):
    """A data file or record is missing, corrupt or unusable."""


class ModelError(HybridclError):
    """A base model cannot be found, loaded or adapted."""


class RunError(HybridclError):
    """A run folder is missing, incompatible or inconsistent."""
