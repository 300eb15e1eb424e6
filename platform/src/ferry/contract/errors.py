"""The root of every error ferry reports to a person.

Every failure a user can cause or meet (a bad spec, a service that is down, a step that failed) is a FerryError:
its `user_message` is what the CLI prints, and `exit_code` what the command exits with. Anything else that
reaches the CLI is a bug in ferry, reported as one (with FERRY_DEBUG=1 for the traceback).
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_TRANSIENT = 75  # EX_TEMPFAIL (ferry.contract.names says when)


class FerryError(Exception):
    """A failure with a message written for the person who runs ferry: what went wrong and what to do."""

    exit_code: int = EXIT_FAILED

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(message, *args)
        self.message = message

    @property
    def user_message(self) -> str:
        return self.message or type(self).__name__


class StateStoreUnavailable(FerryError):
    """The online feature state store cannot be reached or refused a command: serving answers 503 and scores
    nothing, never with missing state."""


class RequestInFlight(FerryError):
    """The same transaction is being scored by another request right now: serving answers 409; retry it."""


# The step errors live here, not beside StepContext (which imports MLflow): Ray pickles Tune's trial wrapper
# (ferry.steps.gpu) by reference, so every trial process imports what its module imports.
class StepFailed(FerryError):
    """A failure a person must act on; the message says what to do."""


class TransientStepError(StepFailed):
    """Retryable (exit 75): the rendered retryStrategy and the local runner try again."""

    exit_code = EXIT_TRANSIENT
