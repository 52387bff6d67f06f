"""Errors a user or admin can act on: each message says what was wrong and what to do."""


class CloudError(Exception):
    """Base of condor-cloud's errors."""


class ImageError(CloudError):
    """An image id or image file that cannot be used."""


class CacheError(CloudError):
    """The node's image cache cannot hold or copy an image."""


class JobAdError(CloudError):
    """A job ad that does not describe a valid instance."""
