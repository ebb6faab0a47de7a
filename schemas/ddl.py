"""The DuckDB DDL, shipped as package data (schemas/ddl.sql)."""
from importlib.resources import files


def ddl() -> str:
    return files("schemas").joinpath("ddl.sql").read_text()
