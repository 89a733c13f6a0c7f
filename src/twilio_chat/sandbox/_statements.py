"""Temporary: the driver-cursor statements the sandbox uses until it has a store of its own."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import BindParameter, Connection, DateTime, Table, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

T = TypeVar("T")


def per_driver(build: Callable[[Dialect], T]) -> Callable[[Dialect], T]:
    """Make `build(dialect)` run once per database driver; later calls return what it built."""
    built: dict[tuple[str, str], T] = {}

    @functools.wraps(build)
    def once(dialect: Dialect) -> T:
        key = (dialect.name, dialect.driver)
        found = built.get(key)
        if found is None:
            found = built.setdefault(key, build(dialect))
        return found

    return once


def _bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """Return the column type's bind processor; a timestamp's remembers its last conversion.

    Every row of an inbound batch carries the same timestamp object several times over (the
    message's two, its conversation's two, its job's two), and each conversion to SQLite's text
    form cost 2.4 us, more than the insert's own binding.
    """
    convert = type_.dialect_impl(dialect).bind_processor(dialect)
    if convert is None or not _is_datetime(type_):
        return convert
    last: list[tuple[Any, Any]] = [(object(), None)]  # (value, converted): replaced whole

    def remembered(value: Any) -> Any:
        seen, converted = last[0]
        if value is seen:  # the same object: datetimes are immutable
            return converted
        converted = convert(value)
        last[0] = (value, converted)
        return converted

    return remembered


def _is_datetime(type_: TypeEngine[Any]) -> bool:
    return isinstance(getattr(type_, "impl_instance", type_), DateTime)  # or a TypeDecorator's


class DriverStatement:
    """A Core statement compiled once for a dialect, run straight on the DBAPI cursor.

    For the few statements a hot path runs per row (each webhook's insert), SQLAlchemy's
    per-call machinery (cache key, execution context, result object) costs several times what
    SQLite itself spends, and on SQLite that time is spent holding the one write lock. The
    statement is still SQLAlchemy's, built from the models' tables and compiled by the dialect;
    its parameters still go through each column type's own bind processor, and returned values
    through its result processor. Only the execution is the driver's. It must run on a
    connection inside the caller's transaction (`run(session.connection(), ...)`).
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: list[str]) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect, column_keys=keys))
        self.sql = compiled.string
        self._positions = compiled.positiontup  # None for a named paramstyle (psycopg)
        self.named = self._positions is None
        # Parameters of equal types (every row's created_at, say) share one processor.
        shared: dict[str, Callable[[Any], Any] | None] = {}
        self._binds: dict[str, Callable[[Any], Any] | None] = {}
        for name, bind in compiled.binds.items():
            kind = repr(bind.type)  # a type's constructor arguments: equal ones convert alike
            if kind not in shared:
                shared[kind] = _bind_processor(bind.type, dialect)
            self._binds[name] = shared[kind]
        # Values written into the statement itself (`column == "outbound"`, an IN list of
        # constants) are parameters too: they keep their value unless the caller gives one.
        self.fixed = {
            name: bind.value
            for name, bind in compiled.binds.items()
            if not bind.required and bind.callable is None
        }
        columns = getattr(statement, "exported_columns", ())
        self._results = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ]

    def run(self, conn: Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Execute with `values` (by column key) on the connection's cursor; return its rows."""
        binds = self._binds
        if self.fixed:
            values = {**self.fixed, **values}
        if self._positions is None:
            named = {
                name: (value if (convert := binds.get(name)) is None else convert(value))
                for name, value in values.items()
            }
            return self.execute(conn, named)
        return self.execute(
            conn,
            [
                values[name] if (convert := binds[name]) is None else convert(values[name])
                for name in self._positions
            ],
        )

    def execute(
        self, conn: Connection, params: list[Any] | dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Execute with parameters already bound, in the driver's form; return the rows."""
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self.sql, params)
            if cursor.description is None:
                return []
            results = self._results
            return [
                tuple(
                    value if convert is None else convert(value)
                    for value, convert in zip(row, results, strict=True)
                )
                for row in cursor.fetchall()
            ]
        finally:
            cursor.close()

    def plan(self) -> list[tuple[str, Callable[[Any], Any] | None]]:
        """Return each parameter's name and bind processor, in the driver's order."""
        names = self._positions if self._positions is not None else list(self._binds)
        return [(name, self._binds.get(name)) for name in names]


class CountedStatement:
    """A statement shaped by how many rows it takes (VALUES lists, IN lists), run like a
    DriverStatement: compiled once per dialect and row count, on first use.

    `build(n)` makes the statement for n rows, naming the parameters of row i `<key>_<i>`
    (see `row_binds`); `run` takes the rows as mappings by key. One statement for a batch's n
    rows costs SQLite about what one row's statement does, and Python one call instead of n.
    """

    def __init__(self, dialect: Dialect, build: Callable[[int], ClauseElement]) -> None:
        self.dialect = dialect
        self.build = build
        self._by_count: dict[int, tuple[DriverStatement, list[_RowParam]]] = {}

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """Execute for these rows (at least one) and return the statement's rows."""
        count = len(rows)
        found = self._by_count.get(count)
        if found is None:
            statement = DriverStatement(self.build(count), self.dialect, [])
            plan = [
                _RowParam.of(name, convert, statement.fixed) for name, convert in statement.plan()
            ]
            found = self._by_count.setdefault(count, (statement, plan))
        statement, plan = found
        values = [
            p.value
            if p.row < 0
            else (rows[p.row][p.key] if p.convert is None else p.convert(rows[p.row][p.key]))
            for p in plan
        ]
        if statement.named:
            return statement.execute(conn, {p.name: v for p, v in zip(plan, values, strict=True)})
        return statement.execute(conn, values)


@dataclass(frozen=True, slots=True)
class _RowParam:
    """One parameter of a CountedStatement: which row's which key, and its bind processor;
    or (row -1) a value written into the statement itself, bound once."""

    name: str
    row: int
    key: str
    convert: Callable[[Any], Any] | None
    value: Any = None

    @classmethod
    def of(
        cls, name: str, convert: Callable[[Any], Any] | None, fixed: Mapping[str, Any]
    ) -> _RowParam:
        """Read the row and key back from a parameter named `<key>_<row>`, unless it is fixed."""
        if name in fixed:
            value = fixed[name]
            return cls(name, -1, "", None, value if convert is None else convert(value))
        key, _, row = name.rpartition("_")
        return cls(name, int(row), key, convert)


def row_binds(table: Table, keys: Sequence[str], row: int) -> dict[str, BindParameter[Any]]:
    """Return row `row`'s parameters for these columns, named `<key>_<row>`, typed as they are."""
    return {key: bindparam(f"{key}_{row}", type_=table.c[key].type) for key in keys}
