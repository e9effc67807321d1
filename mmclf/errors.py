"""Errors a user can cause and fix: they end the run with one clear line, not a traceback."""


class MMClfError(Exception):
    """Base for user-facing errors; the message names the key or path and the fix."""


class ConfigError(MMClfError):
    """A config value is out of range or inconsistent with this machine."""


class DataError(MMClfError):
    """A dataset is missing, corrupt or not in the expected format."""


class StepError(MMClfError):
    """A step cannot run because an earlier step's output is missing."""
