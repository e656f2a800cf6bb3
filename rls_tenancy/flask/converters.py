"""URL converters for ids bounded to their column's range: ``<int4:id>``, ``<int8:id>``.

Flask's ``<int:id>`` takes any number of digits, and ``2147483648`` against
an ``integer`` column is an error of the database's (the extension answers
it with 400). These match only what the column can hold, so a larger id
matches no route and is a 404, like any other id that names nothing, and
never reaches the database. They take ``<int>``'s arguments (``signed``,
``min``, ``max``, ``fixed_digits``), narrowed to the type's range.

:class:`~rls_tenancy.flask.Tenancy` registers both in ``init_app``; routes
added before that need ``app.url_map.converters.update(CONVERTERS)`` first.
"""

from __future__ import annotations

from typing import ClassVar

from werkzeug.routing import IntegerConverter, Map


class _ColumnRangeConverter(IntegerConverter):
    bits: ClassVar[int]

    def __init__(
        self, map: Map, fixed_digits: int = 0, min: int | None = None, max: int | None = None, signed: bool = False
    ) -> None:
        low, high = -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        super().__init__(
            map,
            fixed_digits,
            low if min is None else sorted((low, min, high))[1],
            high if max is None else sorted((low, max, high))[1],
            signed,
        )


class Int4Converter(_ColumnRangeConverter):
    """An ``integer`` (``int4``) column's value: at most 2,147,483,647."""

    bits = 32


class Int8Converter(_ColumnRangeConverter):
    """A ``bigint`` (``int8``) column's value: at most 9,223,372,036,854,775,807."""

    bits = 64


CONVERTERS: dict[str, type[IntegerConverter]] = {"int4": Int4Converter, "int8": Int8Converter}
