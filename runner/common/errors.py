"""The one exception type for problems a user can fix (bad config, missing data, bad checkpoint).

The entry points catch it and print its message as one line, without a traceback:

    python -m runner trainer.batch_size=100 trainer.micro_batch_size=32
    ... trainer.batch_size=100 is not a multiple of trainer.micro_batch_size=32. Fix: ...
"""


class UserError(Exception):
    """What went wrong, where, and how to fix it, in one message."""


def one_line(error: UserError) -> str:
    """The message alone, also when a DataLoader worker has wrapped it in its traceback."""
    text = str(error)
    marker = f"{UserError.__module__}.{UserError.__name__}: "
    return text.rsplit(marker, 1)[-1].strip() if marker in text else text
