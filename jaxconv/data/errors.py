"""The errors `jaxconv.data` raises.

Both are `ValueError`s, like the rest of jaxconv's user-facing errors, so
`except ValueError` still catches them. A missing dataset is also a
`FileNotFoundError`, so `except OSError` works as it would for `open`.
"""


class DatasetError(ValueError):
    """A dataset file is malformed: wrong magic number, truncated, too long, bad gzip.

    The message names the file and what is wrong with the numbers (expected and
    found bytes, dimensions, label values).
    """


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """No searched directory holds the files of the requested dataset split.

    The message lists every directory searched, what each one lacks, and how to
    get the files.
    """
