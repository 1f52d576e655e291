"""The one exception type of ``jaxden.data``."""


class DataError(Exception):
    """A dataset cannot be loaded or sampled as configured.

    The message says what went wrong (naming the file, folder or dataset) and what to do about
    it, so that the command-line tools can print it as is, without a traceback.
    """
