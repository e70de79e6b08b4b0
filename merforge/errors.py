"""Exception types a curator can act on.

Every error merforge raises on purpose derives from `MerforgeError` and carries a
message that says what went wrong and what to do about it.
"""


class MerforgeError(Exception):
    """Base class for errors with a message meant for the person running merforge."""


class ConfigError(MerforgeError):
    """merforge.toml is missing, unreadable or has a bad value."""


class WorkspaceError(MerforgeError):
    """The workspace folder is missing or not a merforge workspace."""


class MediaError(MerforgeError):
    """A media file cannot be used: empty, truncated, not media, no streams, unreadable."""


class StoreError(MerforgeError):
    """The database cannot be opened, migrated or written."""
