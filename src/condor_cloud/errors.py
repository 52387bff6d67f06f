"""Errors a user or admin can act on: each message says what was wrong and what to do.

Every entry point (API, command line, hooks, wrapper, cron) catches CloudError;
the frontends map its kinds to their own error codes.
"""


class CloudError(Exception):
    """Base of condor-cloud's errors."""


class ParameterError(CloudError):
    """A request parameter that cannot be used."""


class NotFound(CloudError):
    """An unknown id (or one the user may not see)."""


class NotAllowed(CloudError):
    """An action the instance's state does not allow."""


class Refused(CloudError):
    """A request beyond what the user may do (a limit)."""


class Unavailable(CloudError):
    """HTCondor cannot be reached or did not answer in time."""


class Busy(Unavailable):
    """Too much already under way: nothing was done; try again shortly."""


class OutcomeUnknown(Unavailable):
    """A change HTCondor did not confirm and cannot be asked about: it may or may not be made."""

    def __init__(self, message: str, client_token: str = ""):
        super().__init__(message)
        self.client_token = client_token


class ImageError(CloudError):
    """An image id or image file that cannot be used."""


class CacheError(CloudError):
    """The node's image cache cannot hold or copy an image."""


class JobAdError(CloudError):
    """A job ad that does not describe a valid instance."""
