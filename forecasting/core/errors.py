"""The project's error types: one message that names what is wrong."""


class ForecastingError(Exception):
    """Base class for every error the pipeline reports to a user."""


class DataError(ForecastingError):
    """Input data is unreadable or breaks the data contract (column, series or row named)."""


class DivergedError(ForecastingError):
    """Training produced a non-finite loss."""


class ModelNotFoundError(ForecastingError):
    """A registered model or alias does not exist."""


class NothingToForecastError(ForecastingError):
    """Every series of a batch forecast was skipped: there is nothing to write."""


class SurplusTrialError(ForecastingError):
    """A trial started by one of several workers when the others' trials already fill the study."""


class StoreError(ForecastingError):
    """A store or service the command needs does not answer or cannot be used (named in the message)."""


class RecordError(StoreError):
    """The work was done and its output written, but its run could not be recorded (the message
    says what was written, so the output and the store never silently disagree)."""
