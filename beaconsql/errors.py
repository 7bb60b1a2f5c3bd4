"""The errors beaconsql raises: one base class and the few a caller branches on.

Every message names the object concerned and the next step. The CLI prints ``FAILED: …``
and exits with :attr:`BeaconsqlError.exit_code` (1 unless stated).
"""

from __future__ import annotations


class BeaconsqlError(Exception):
    """Base class of every error beaconsql raises on purpose."""

    exit_code = 1


class ConfigurationError(BeaconsqlError):
    """No database was configured, or a setting is unusable."""


class DatabaseUnavailableError(BeaconsqlError):
    """The server could not be reached, or the connection was lost mid-way."""


class NotMigratedError(BeaconsqlError):
    """The database lacks the objects a command needs (run ``beaconsql upgrade``)."""


class MigrationError(BeaconsqlError):
    """A revision could not be applied (adoption refused, lock timeout, …)."""


class EmbeddedServerError(BeaconsqlError):
    """The embedded PostgreSQL server could not be started or stopped."""


class InvalidArgumentError(BeaconsqlError, ValueError):
    """A library call got an argument it cannot use; nothing was written."""

    exit_code = 2


class BackfillBusyError(BeaconsqlError):
    """Another backfill holds the single-runner lock on this database."""


class UnknownJobError(BeaconsqlError):
    """No jobs row and no run has this jobspec id; ``closest`` holds the nearest ids there are."""

    def __init__(self, jobspec_id: str, closest: list[str], *, any_jobs: bool = True) -> None:
        self.jobspec_id = jobspec_id
        self.closest = closest
        if closest:
            hint = f"closest jobspec ids: {', '.join(closest)}"
        elif any_jobs:
            hint = "no jobspec id there is close to it"
        else:
            hint = "the database holds no jobs yet"
        super().__init__(
            f"no job {_shown(jobspec_id)} (no jobs row and no run has that jobspec id); {hint}. "
            "Check the id: it is the jobspec id the portal shows, e.g. "
            "bias-detection-1760288315095."
        )


def _shown(text: str, limit: int = 80) -> str:
    """Quote *text* for a one-line message: escaped (newlines, control and bidi characters), and
    cut to *limit* characters with its length when longer."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


class NotFoundError(BeaconsqlError):
    """The job or execution asked for does not exist (HTTP 404 in ``beaconsql serve``)."""
