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


class ResourceError(MerforgeError):
    """The machine, not one item, failed: the disk is full or the database stayed locked.

    A run stops on these (every further item would fail the same way); work already
    committed is kept and a rerun continues from there.
    """


def resource_error(error: BaseException) -> ResourceError | None:
    """A ResourceError describing `error` when it is a disk-full or database-locked failure, else None.

    Per-item error handlers call this first and re-raise, so a full disk stops the run with
    one clear message instead of recording "No space left on device" against every clip.
    """
    import errno

    if isinstance(error, ResourceError):
        return error
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:  # look through wrapped causes
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return ResourceError(_disk_full_message(current))
        text = str(current).lower()
        if "database is locked" in text or "database table is locked" in text:
            return ResourceError(
                "the workspace database is locked: another process held its write lock for longer than "
                "store.busy_timeout_s. Stop the other merforge process (or wait for it), or use PostgreSQL "
                "(store.database_url) when several processes write at once; then rerun: finished work is kept.")
        if "no space left on device" in text or "database or disk is full" in text:
            return ResourceError(_disk_full_message(current))
        current = current.__cause__ or current.__context__
    return None


def _disk_full_message(error: BaseException) -> str:
    import os
    import shutil

    where = getattr(error, "filename", None) or ""
    free = ""
    probe = where or os.getcwd()
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if probe:
        try:
            free = f" ({shutil.disk_usage(probe).free / 2**20:.0f} MiB free there now)"
        except OSError:
            pass
    target = f" while writing {where}" if where else ""
    return (f"disk full: no space left on the device{target}{free}. Free some space (or move the workspace) "
            "and rerun: finished work is kept and skipped.")
