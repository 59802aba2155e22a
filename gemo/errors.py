"""Errors the CLI reports as a message and exit status 2 (usage / input errors)."""


class GemoError(Exception):
    """An error in what the user asked for; the message says what to do."""
