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


class Unavailable(CloudError):
    """HTCondor cannot be reached or did not answer in time."""


class ImageError(CloudError):
    """An image id or image file that cannot be used."""


class CacheError(CloudError):
    """The node's image cache cannot hold or copy an image."""


class JobAdError(CloudError):
    """A job ad that does not describe a valid instance."""
