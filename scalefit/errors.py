"""Typed errors: one root, one subclass per area, each message ends with what to do next."""

from __future__ import annotations


class ScalefitError(Exception):
    """Root of every error scalefit raises on purpose."""


class DatasetError(ScalefitError, ValueError):
    """A curated dataset (``datasets/``) is malformed or fails its schema.

    Attributes carry the evidence: ``path`` (the file), ``row_number`` (1-based data row, the
    header excluded), ``column``, and ``failures`` (every failure found, not only the first).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        row_number: int | None = None,
        column: str | None = None,
        failures: list[dict] | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.row_number = row_number
        self.column = column
        self.failures = failures or []


class IngestError(ScalefitError):
    """A user log could not be ingested."""


class UnknownFormatError(IngestError, ValueError):
    """The format of an input file could not be detected or is not supported."""


class StoreError(ScalefitError):
    """The DuckDB store could not be opened, read or written."""


class DatabaseBusyError(StoreError, TimeoutError):
    """Another process held the DuckDB file for longer than the wait allowed."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class DatabaseMissingError(StoreError, FileNotFoundError):
    """The DuckDB file does not exist (and the caller asked not to create it)."""


class QueryError(StoreError, ValueError):
    """A SQL query given by the user failed."""


class FitError(ScalefitError, ValueError):
    """A law cannot be fitted to the data given (too few points, degenerate inputs, …)."""


class ReportError(ScalefitError, OSError):
    """A report cannot be written where it was asked for (e.g. ``--out`` names a file)."""


class PlanError(ScalefitError, ValueError):
    """A planning input (``scalefit plan``: budget, tokens, target loss) is out of range."""


class ConfigError(ScalefitError, ValueError):
    """``scalefit.toml`` or a command-line setting is invalid."""


class UpstreamError(ScalefitError):
    """An upstream source could not be downloaded or failed its pinned hash."""


class ValidationError(ScalefitError, ValueError):
    """A whole frame does not fit its schema (missing or unexpected columns).

    Row-level failures are not errors: they are returned as rejected rows with reasons.
    """

    def __init__(
        self, message: str, *, missing: list[str] | None = None, extra: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.missing = missing or []
        self.extra = extra or []


class AllocationUnavailableError(ScalefitError, ValueError):
    """A law cannot give a compute-optimal allocation (e.g. only exponents were published)."""


class UnknownLawError(ScalefitError, ValueError):
    """A law form or its parameters are not known to :func:`scalefit.laws.law_from_parameters`."""


class UpstreamConfigError(UpstreamError, ValueError):
    """An ``[upstreams.<name>]`` entry of ``sources.toml`` is malformed.

    Attributes: ``path`` (the TOML file) and ``upstream`` (the entry's name, if known).
    """

    def __init__(self, message: str, *, path: str | None = None, upstream: str | None = None):
        super().__init__(message)
        self.path = path
        self.upstream = upstream


class HashMismatchError(UpstreamError):
    """A downloaded upstream file does not have its pinned sha256 (the last good copy is kept).

    Attributes: ``upstream``, ``expected`` and ``actual`` (hex digests).
    """

    def __init__(
        self,
        message: str,
        *,
        upstream: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
    ) -> None:
        super().__init__(message)
        self.upstream = upstream
        self.expected = expected
        self.actual = actual


class UpstreamUnavailableError(UpstreamError):
    """No copy of an upstream file can be had: no network (or offline) and nothing cached."""


class UpstreamFormatError(UpstreamError, ValueError):
    """An upstream file cannot be read, or lacks a column its entry maps."""
