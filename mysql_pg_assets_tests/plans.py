"""Table plans built without a database, for the unit tests of the pure pieces."""

from __future__ import annotations

from mysql_pg_assets.sync.catalog.casting import MySQLColumn
from mysql_pg_assets.sync.catalog.discover import Index, plan_table
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.spec import TableOverride, parse_spec


def table_plan(name: str = "t", columns: str = "id int NO, v varchar(20) YES", key: tuple[str, ...] = ("id",),
               schema: str = "s", column_settings: dict | None = None, **override: object) -> TablePlan:
    """A plan from ``"name mysql_type NULLABLE, …"`` (``int``, ``varchar(20)``, ``datetime``, …), as the
    catalog would build it from information_schema; ``column_settings``: the spec's ``columns`` of the table."""
    if column_settings is not None:
        override["columns"] = column_settings
    found = []
    for position, text in enumerate(columns.split(","), start=1):
        column, column_type, nullable = text.split()
        data_type = column_type.split("(")[0]
        length = int(column_type[column_type.index("(") + 1:-1]) if data_type in ("varchar", "char") else None
        found.append(MySQLColumn(name=column, position=position, data_type=data_type, column_type=column_type,
                                 nullable=nullable == "YES", char_length=length))
    indexes = {"PRIMARY": Index("PRIMARY", list(key), True, "BTREE")} if key else {}
    return plan_table("db", schema, name, found, indexes, TableOverride.model_validate(override),
                      parse_spec({}).options)
