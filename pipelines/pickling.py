"""Cheap pickling for the frozen dataclasses Beam moves between stages.

Beam pickles every element that crosses a stage boundary, several times per record.
Python's own way with a frozen, slotted dataclass walks `dataclasses.fields()` on every
call, pickles each enum member as a call of its class (a microsecond on loading), and each
aware datetime with its tzinfo through copyreg (ten times the cost of an int).
`compact_pickle` replaces that with one call of the class with its field values in order,
UTC datetimes given as epoch microseconds, timedeltas as microseconds and str-enum members
as their values. The copy that comes back is equal to the original, field for field.

Example:
    @compact_pickle
    @dataclass(frozen=True, slots=True)
    class Seen:
        at: datetime
        kind: Category

    pickle.loads(pickle.dumps(Seen(datetime(2021, 2, 1, tzinfo=UTC), Category.DRUGS)))
    # == Seen(datetime(2021, 2, 1, tzinfo=UTC), Category.DRUGS), at a third of the cost
"""

from __future__ import annotations

import operator
import types
import typing
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, TypeVar, cast

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# Per class: the indexes of its datetime fields, of its timedelta fields, and (index,
# value -> member) of its str-enum fields.
_Plan = tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, dict[Any, Enum]], ...]]
_PLANS: dict[type, _Plan] = {}


def compact_pickle(cls: type[T]) -> type[T]:
    """Class decorator for a frozen, slotted dataclass (see the module docstring).

    Fields typed `datetime` (or `datetime | None`) travel as epoch microseconds when they
    hold a UTC datetime, fields typed `timedelta` as microseconds, fields typed with a
    str-enum as the member's value, which comes back as the member (so a plain str equal
    to a member's value comes back as that member, equal to it). Any other value, in any
    field, travels as it is.
    """
    hints = typing.get_type_hints(cls)
    declared = fields(cast(Any, cls))
    if not all(f.init for f in declared):
        raise TypeError(f"{cls.__name__}: every field must be an __init__ argument")
    names = [f.name for f in declared]
    times: list[int] = []
    spans: list[int] = []
    enums: list[tuple[int, dict[Any, Enum]]] = []
    for i, name in enumerate(names):
        kind = _single_type(hints[name])
        if kind is datetime:
            times.append(i)
        elif kind is timedelta:
            spans.append(i)
        elif isinstance(kind, type) and issubclass(kind, Enum) and issubclass(kind, str):
            enums.append((i, {member.value: member for member in kind}))
    plan: _Plan = (tuple(times), tuple(spans), tuple(enums))
    _PLANS[cls] = plan
    values: Callable[[Any], tuple[Any, ...]]
    if len(names) > 1:
        values = operator.attrgetter(*names)
    else:  # attrgetter of one name returns the bare value
        values = lambda obj: (getattr(obj, names[0]),)  # noqa: E731

    def __reduce__(self: T) -> tuple[Callable[..., T], tuple[type[T], tuple[Any, ...]]]:
        return _restore, (cls, _pack(values(self), plan))

    setattr(cls, "__reduce__", __reduce__)  # noqa: B010 (mypy refuses a method assignment)
    return cls


def _single_type(hint: Any) -> Any:
    """`X` for a hint `X` or `X | None`; None for anything else."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        others = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return others[0] if len(others) == 1 else None
    return hint


def _pack(values: tuple[Any, ...], plan: _Plan) -> tuple[Any, ...]:
    times, spans, enums = plan
    if not (times or spans or enums):
        return values
    out = list(values)
    for i in times:
        value = out[i]
        # Exactly a UTC datetime: a subclass, another tzinfo or fold=1 would not come back
        # the same from microseconds.
        if value.__class__ is datetime and value.tzinfo is UTC and not value.fold:
            out[i] = (value - _EPOCH) // _MICROSECOND
    for i in spans:
        value = out[i]
        if value.__class__ is timedelta:
            out[i] = value // _MICROSECOND
    for i, _ in enums:
        value = out[i]
        if isinstance(value, Enum):
            out[i] = value._value_
    return tuple(out)


def _restore(cls: type[T], values: tuple[Any, ...]) -> T:
    """The instance `compact_pickle`'s __reduce__ packed (pickle calls it by name)."""
    times, spans, enums = _PLANS[cls]
    if times or spans or enums:
        out = list(values)
        for i in times:
            value = out[i]
            if value.__class__ is int:
                out[i] = _EPOCH + timedelta(0, 0, value)
        for i in spans:
            value = out[i]
            if value.__class__ is int:
                out[i] = timedelta(0, 0, value)
        for i, members in enums:
            value = out[i]
            out[i] = members.get(value, value)
        values = tuple(out)
    return cls(*values)
