"""Verifier for text-to-SQL prompts: the query must run against the schema the prompt gives.

The prompt's CREATE TABLE statements load into an in-memory DuckDB (empty tables), and the
answer's SQL runs there under a watchdog. Both texts are untrusted: no file or network
access, no extensions, locked settings, and a time limit on everything that runs.
"""
from __future__ import annotations

import re
import threading

from trainer.prompts import Candidate, Prompt, request_text

SQL_TIMEOUT_S = 5.0
SQL_NO_PARSE, SQL_FAILS, SQL_RUNS = 0.1, 0.3, 1.0

_CREATE_TABLE_RE = re.compile(r"\bCREATE\s+(?:TEMP(?:ORARY)?\s+)?TABLE\b", re.IGNORECASE)
_ASKS_SQL_RE = re.compile(r"\b(?:sql|query|queries)\b", re.IGNORECASE)
_SQL_FENCE_RE = re.compile(r"```[ \t]*([\w-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_SQL_START_LINE_RE = re.compile(r"^[ \t]*(?:WITH|SELECT)\b", re.IGNORECASE | re.MULTILINE)
_SQL_START_ANY_RE = re.compile(r"\b(?:WITH|SELECT)\b")  # upper case only: "select" in prose is a verb


def schema_statements(text: str) -> list[str]:
    """The CREATE TABLE statements in a prompt, each up to its closing parenthesis."""
    out = []
    for m in _CREATE_TABLE_RE.finditer(text):
        depth, i = 0, text.find("(", m.end())
        if i < 0:
            break
        for j in range(i, len(text)):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            if depth == 0:
                out.append(text[m.start() : j + 1])
                break
    return out


def extract_sql(answer: str) -> str | None:
    """The SQL in an answer: a ```sql fence (or any fence), else a bare statement starting with
    SELECT or WITH up to its ';' or the first blank line."""
    fences = [(lang.lower(), body.strip()) for lang, body in _SQL_FENCE_RE.findall(answer) if body.strip()]
    for lang, body in fences:
        if "sql" in lang:
            return body
    if fences:
        return fences[0][1]
    m = _SQL_START_LINE_RE.search(answer) or _SQL_START_ANY_RE.search(answer)
    if not m:
        return None
    sql = re.split(r";|\n\s*\n", answer[m.start() :], maxsplit=1)[0]
    return sql.strip() or None


class _Watchdog:
    """Interrupts what a DuckDB connection runs once `timeout_s` has passed, for as long as
    the `with` block lasts. It keeps interrupting: DuckDB forgets an interrupt that comes
    between two statements, and the next statement would then run unbounded."""

    def __init__(self, con, timeout_s: float):
        self.con, self.timeout_s = con, timeout_s
        self._done = threading.Event()
        self.expired = False

    def _watch(self) -> None:
        if self._done.wait(self.timeout_s):
            return
        self.expired = True
        while True:
            self.con.interrupt()
            if self._done.wait(0.05):
                return

    def __enter__(self) -> "_Watchdog":
        self._thread = threading.Thread(target=self._watch, name="sql-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()  # never interrupt a connection after it is closed or reused


def _plain_create_table(ddl: str) -> bool:
    """True for `CREATE [OR REPLACE] [TEMP] TABLE [IF NOT EXISTS] name (columns...)` alone: the
    schema is untrusted text from a prompt, and a CREATE TABLE AS SELECT over range() (or a
    second statement hidden behind a parenthesis in a string or comment) would compute or
    store whatever it asks. DuckDB's own tokenizer knows what is a string or a comment."""
    import duckdb

    try:
        tokens = duckdb.tokenize(ddl)
    except duckdb.Error:
        return False
    ends = [off for off, _ in tokens[1:]] + [len(ddl)]
    words = [(ddl[off:end].strip(), kind) for (off, kind), end in zip(tokens, ends)
             if kind != duckdb.token_type.comment]
    head = [w.upper() for w, _ in words[:5]]
    for optional in ("OR", "REPLACE", "TEMP", "TEMPORARY"):
        if optional in head[1:3]:
            head.remove(optional)
    if head[:2] != ["CREATE", "TABLE"]:
        return False
    depth, closed = 0, False
    for text, kind in words:
        if closed:
            if text != ";":
                return False  # anything after the column list: AS SELECT, a second statement
        elif kind == duckdb.token_type.operator and text in ("(", ")"):
            depth += 1 if text == "(" else -1
            closed = depth == 0
        elif depth == 0 and (text.upper() == "AS" or text == ";"):
            return False  # CREATE TABLE t AS ..., or a statement with no column list
    return closed


def _sql_connection(schema: list[str], timeout_s: float = SQL_TIMEOUT_S):
    """An in-memory DuckDB with the prompt's tables (empty), or None when none of them load
    (or loading them takes longer than `timeout_s`). Prompts and answers are untrusted: no
    file or network access, no extension loading, and the settings are locked before any
    of their text runs."""
    import duckdb

    con = duckdb.connect(":memory:", config={"threads": 1, "memory_limit": "256MB",
                                             "enable_external_access": False,
                                             "autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False,
                                             "lock_configuration": True})
    loaded, pending = 0, [d for d in map(_to_duckdb_ddl, schema) if _plain_create_table(d)]
    # Tables may reference each other in any order: retry until a pass loads nothing new.
    with _Watchdog(con, timeout_s) as watchdog:
        while pending and not watchdog.expired:
            failed = []
            for ddl in pending:
                try:
                    con.execute(ddl)
                    loaded += 1
                except duckdb.Error:
                    failed.append(ddl)
            if len(failed) == len(pending):
                break
            pending = failed
    if not loaded or watchdog.expired:
        con.close()
        return None
    return con


def _to_duckdb_ddl(ddl: str) -> str:
    # Schemas in prompts are often SQLite or MySQL flavoured; these bits are all DuckDB minds.
    ddl = ddl.replace("`", '"')
    return re.sub(r"\bAUTO_?INCREMENT\b|\bUNSIGNED\b", "", ddl, flags=re.IGNORECASE)


def score_sql(answer: str, schema: list[str], timeout_s: float = SQL_TIMEOUT_S) -> float | None:
    """0 with no SQL, 0.1 if it does not parse, 0.3 if it parses but fails (unknown table or
    column, type error, timeout), 1.0 if it runs on the schema's empty tables. None when the
    schema itself does not load (no opinion): no plain CREATE TABLE in it runs, or loading
    takes longer than `timeout_s`."""
    import duckdb

    sql = extract_sql(answer)
    if sql is None:
        return 0.0
    con = _sql_connection(schema, timeout_s)  # one per candidate: an answer's DROP TABLE must not hurt the next
    if con is None:
        return None
    try:
        try:
            con.extract_statements(sql)
        except duckdb.Error:
            return SQL_NO_PARSE
        # Empty tables make most queries instant, but a cross join of range() does not.
        with _Watchdog(con, timeout_s):
            try:
                con.execute(sql).fetchmany(1)
                return SQL_RUNS
            except duckdb.Error:
                return SQL_FAILS
    finally:
        con.close()


def sql_verifier(prompt: Prompt, candidates: list[Candidate]) -> list[float | None]:
    """Verifier for text-to-SQL prompts (a CREATE TABLE schema and a request for a query);
    no opinion on other prompts."""
    text = request_text(prompt)
    schema = schema_statements(text)
    if not schema or not _ASKS_SQL_RE.search(_CREATE_TABLE_RE.sub(" ", text)):
        return [None] * len(candidates)
    return [score_sql(c.text, schema) for c in candidates]
