"""Error raised when dataset files exist but their content is not in the expected format."""


class DatasetFormatError(ValueError):
    """A dataset file or folder exists but its content is malformed or inconsistent.

    Subclasses ValueError so that callers that only expect built-in exceptions still
    catch it. The message names the offending file, says what was expected and how to
    fix the data.

    Examples:
        >>> try:
        ...     raise DatasetFormatError("'train_X.bin' has 5 bytes, expected a multiple of 27648")
        ... except ValueError as error:
        ...     print(error)
        'train_X.bin' has 5 bytes, expected a multiple of 27648
    """
