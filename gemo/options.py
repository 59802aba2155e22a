"""Typed options of feature sets and model families: one frozen dataclass each, checked once.

An extractor's ``Params`` or a model's ``Options`` is a subclass of
:class:`Options` whose fields carry a type and a default. :meth:`Options.parse`
is the one place where given values become options: unknown names are
refused, strings from the command line (``-p frames.count=16``,
``-o hidden=32``) are read by the field's type, other values must already have
it (an int is accepted for a float), and ``Literal`` fields take one of their
values. A subclass adds range checks in :meth:`Options.check`.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class FrameOptions(Options):
...     count: int = 10
...     exact: bool = False
>>> FrameOptions.parse({"count": "16", "exact": "yes"}, owner="frames")
FrameOptions(count=16, exact=True)
>>> FrameOptions.parse({}, owner="frames").as_dict()
{'count': 10, 'exact': False}
"""

import dataclasses
import typing

from gemo.errors import GemoError

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class Options:
    """Base of every options dataclass; subclasses are ``@dataclass(frozen=True)``."""

    @classmethod
    def parse(cls, given, *, owner, word="parameter"):
        """An instance from ``given`` (a mapping; missing names keep their defaults)."""
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise GemoError(f"{owner}: unknown {word}(s) {', '.join(unknown)}; "
                            f"known: {', '.join(fields) or 'none'}")
        hints = typing.get_type_hints(cls)
        values = {name: _convert(f"{owner}.{name}", hints[name], value)
                  for name, value in given.items()}
        options = cls(**values)
        problem = options.check()
        if problem:
            raise GemoError(f"{owner}: {problem}")
        return options

    def check(self):
        """A message saying what is wrong with these values, or None (override to add ranges)."""
        return None

    def as_dict(self):
        """Plain ``{name: value}``: what caches and checkpoints store."""
        return dataclasses.asdict(self)

    @classmethod
    def defaults(cls):
        """``{name: default}`` of every option, for listings and ``--help``."""
        return cls().as_dict()


def _convert(label, kind, value):
    """``value`` as type ``kind`` (strings are parsed; anything else must fit already)."""
    choices = typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else None
    if choices is not None:
        kind = type(choices[0])
    if isinstance(value, str) and kind is not str:
        value = _from_text(label, kind, value)
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise GemoError(f"{label}: {value!r} is not a {kind.__name__}")
    if choices is not None and value not in choices:
        raise GemoError(f"{label}: {value!r} is not one of {', '.join(map(str, choices))}")
    return value


def _from_text(label, kind, text):
    if kind is bool:
        if text.lower() not in _TRUE + _FALSE:
            raise GemoError(f"{label}: {text!r} is not a bool (true or false)")
        return text.lower() in _TRUE
    try:
        return kind(text)
    except ValueError:
        raise GemoError(f"{label}: {text!r} is not a {kind.__name__}") from None
