"""Types whose casts name ``pg_catalog``, so that no temporary type stands in for them.

With psycopg, SQLAlchemy casts a ``text[]`` parameter as ``::TEXT[]``, and
``text``, ``jsonb`` or ``bytea`` (no keywords of the grammar) are looked up in
``pg_temp`` first: a temporary domain of that name left in a pooled session by
SQL run earlier would run its ``CHECK`` (the planter's SQL) on the next
transaction's values, with that transaction's settings (its grants) in reach.
``VARCHAR``, ``BIGINT`` and ``TIMESTAMP WITH TIME ZONE`` are keywords, which
always mean ``pg_catalog``'s. Shared by the binding, the users, tokens, flags
and the audit log.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Text, type_coerce
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeDecorator, UserDefinedType


class _CatalogTextArray(UserDefinedType[list[str]]):
    """``pg_catalog.text[]``, as a bind cast only (the column keeps ``ARRAY(Text)``)."""

    cache_ok = True
    render_bind_cast = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "pg_catalog.text[]"


class TextArray(TypeDecorator[list[str]]):
    """``text[]`` whose parameters are cast as ``pg_catalog.text[]``; DDL and autogenerate see ``TEXT[]``."""

    impl = ARRAY(Text)
    cache_ok = True

    def bind_expression(self, bindvalue: Any) -> ColumnElement[list[str]]:
        return type_coerce(bindvalue, _CatalogTextArray())


class CatalogText(UserDefinedType[str]):
    """``pg_catalog.text``, for ``cast()``."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "pg_catalog.text"


class CatalogJsonb(UserDefinedType[Any]):
    """``pg_catalog.jsonb``, for ``cast()``."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "pg_catalog.jsonb"
