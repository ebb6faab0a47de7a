import time

import pytest

from trainer.prompts import Candidate, Prompt
from trainer.rewards.sql import _sql_connection, extract_sql, schema_statements, score_sql, sql_verifier


def prompt(text):
    return Prompt("p1", [{"role": "user", "content": text}])


SCHEMA = """CREATE TABLE customers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    city VARCHAR(40)
);
CREATE TABLE `orders` (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER REFERENCES customers(id),
    total DECIMAL(10, 2),
    placed_at DATE
);"""
SQL_TASK = f"Given this schema:\n{SCHEMA}\nWrite a SQL query that lists each city with its number of orders."
GOOD_SQL = ("SELECT c.city, COUNT(o.id) AS n FROM customers c JOIN orders o ON o.customer_id = c.id "
            "GROUP BY c.city")


def test_schema_statements_are_cut_at_their_closing_parenthesis():
    stmts = schema_statements(SQL_TASK)
    assert len(stmts) == 2
    assert stmts[0].startswith("CREATE TABLE customers") and stmts[0].endswith(")")
    assert "DECIMAL(10, 2)" in stmts[1] and "Write a SQL" not in stmts[1]


@pytest.mark.parametrize("answer,expected", [
    (f"```sql\n{GOOD_SQL};\n```\nThis counts orders per city.", GOOD_SQL + ";"),
    (f"Here you go:\n```\n{GOOD_SQL}\n```", GOOD_SQL),
    (f"{GOOD_SQL};\nThis joins the two tables.", GOOD_SQL),
    (f"The query is:\n{GOOD_SQL}\n\nIt groups by city.", GOOD_SQL),
    (f"```sql\n{GOOD_SQL}", GOOD_SQL),  # cut off at max_tokens before the closing fence
    ("You should select the city and count the orders.", None),  # "select" as a verb is not SQL
    ("I don't know.", None),
])
def test_extract_sql(answer, expected):
    assert extract_sql(answer) == expected


@pytest.mark.parametrize("answer,expected", [
    (f"```sql\n{GOOD_SQL};\n```", 1.0),
    ("SELECT name FROM customers WHERE city = 'Paris';", 1.0),
    ("SELECT city, count(*) FROM customers GROUP BY ALL", 1.0),
    ("SELECT city, SUM(total) FROM orders GROUP BY city", 0.3),     # orders has no city
    ("SELECT * FROM clients", 0.3),                                   # no such table
    ("SELECT name FROM customers WHERE placed_at > 3", 0.3),          # column of the other table
    ("SELECT name FROM FROM customers", 0.1),                         # does not parse
    ("Sorry, I cannot write SQL.", 0.0),
    ("SELECT * FROM read_csv('/etc/passwd')", 0.3),                   # no file access from answers
])
def test_score_sql(answer, expected):
    assert score_sql(answer, schema_statements(SQL_TASK)) == expected


@pytest.mark.timeout(5)
def test_sql_that_runs_too_long_is_interrupted():
    slow = "SELECT sum(a.range * b.range) FROM range(100000000) a, range(100000000) b"
    t = time.monotonic()
    assert score_sql(slow, schema_statements(SQL_TASK), timeout_s=0.3) == 0.3
    assert time.monotonic() - t < 5


def test_sql_verifier_scores_sql_tasks_only():
    cands = [Candidate(f"```sql\n{GOOD_SQL}\n```", "plain"), Candidate("SELECT nope FROM orders", "plain"),
             Candidate("There are three cities.", "plain")]
    assert sql_verifier(prompt(SQL_TASK), cands) == [1.0, 0.3, 0.0]
    # The schema may come in the system message and the question in the user turn.
    split = Prompt("p2", [{"role": "system", "content": SCHEMA},
                          {"role": "user", "content": "Write a query listing each city's number of orders."}])
    assert sql_verifier(split, cands) == [1.0, 0.3, 0.0]
    assert sql_verifier(prompt("What is 2 + 2?"), cands) == [None, None, None]
    # A schema, but no query asked for: not a SQL task.
    assert sql_verifier(prompt(f"{SCHEMA}\nExplain what this schema models."), cands) == [None, None, None]
    # A schema DuckDB cannot load at all: no opinion rather than a wrong one.
    broken = prompt("CREATE TABLE t (a INT CHECK (a >>> 2)) -- write a SQL query on t")
    assert sql_verifier(broken, cands[:1]) == [None]


# A prompt's schema and an answer's SQL are untrusted text: nothing in them may hang the
# cycle, reach files or the network, or change the connection's settings.
HOSTILE_CTAS = ("CREATE TABLE t AS (SELECT a.range AS x, b.range AS y "
                "FROM range(1000000000) a, range(1000000000) b)")


@pytest.mark.timeout(60)
def test_sql_verifier_refuses_a_schema_that_computes():
    cands = [Candidate("SELECT count(*) FROM t", "plain")]
    assert sql_verifier(prompt(f"{HOSTILE_CTAS}\nWrite a SQL query counting the rows of t."), cands) == [None]
    # The same, with its AS hidden from a naive parenthesis count by a quoted name and a comment.
    hidden = ('CREATE TABLE t (x, "(") AS SELECT a.range, 1 FROM range(1000000000) a, range(1000000000) b -- )')
    assert sql_verifier(prompt(f"{hidden}\nWrite a SQL query counting the rows of t."), cands) == [None]
    # The plain tables of a prompt still load around a hostile one.
    mixed = prompt(f"{SCHEMA}\n{HOSTILE_CTAS}\nWrite a SQL query that lists each city with its number of orders.")
    assert sql_verifier(mixed, [Candidate(GOOD_SQL, "plain")]) == [1.0]


@pytest.mark.timeout(60)
def test_sql_schema_statements_other_than_create_table_never_run(tmp_path):
    attached, copied = tmp_path / "x.duckdb", tmp_path / "x.csv"
    con = _sql_connection(["CREATE TABLE t (a BIGINT)",
                           "INSERT INTO t SELECT range FROM range(1000000000000)",
                           f"ATTACH '{attached}' AS x",
                           f"COPY (SELECT 1) TO '{copied}'",
                           "INSTALL httpfs", "LOAD httpfs",
                           "SET threads = 8", "SET memory_limit = '64GB'", "PRAGMA threads = 8"])
    try:
        assert con.execute("SELECT count(*) FROM t").fetchall() == [(0,)]
        assert con.execute("SELECT current_setting('threads')").fetchall() == [(1,)]
        assert con.execute("SELECT database_name FROM duckdb_databases() WHERE NOT internal").fetchall() == [
            ("memory",)]
    finally:
        con.close()
    assert not attached.exists() and not copied.exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("answer", [
    "SELECT count(*) FROM range(1000000000) a, range(1000000000) b",
    "CREATE TABLE big AS SELECT a.range FROM range(1000000000) a, range(1000000000) b",
    # A statement list: the second statement runs long after the first one ended.
    "```sql\nSELECT 1;\nSELECT count(*) FROM range(1000000000) a, range(1000000000) b;\n```",
])
def test_sql_answer_with_a_huge_cross_join_is_interrupted(answer):
    assert score_sql(answer, schema_statements(SQL_TASK), timeout_s=0.5) == 0.3


@pytest.mark.timeout(60)
def test_sql_answer_cannot_attach_copy_install_or_unlock(tmp_path):
    schema = schema_statements(SQL_TASK)
    for stmt in (f"ATTACH '{tmp_path / 'x.duckdb'}' AS x", f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'",
                 "INSTALL httpfs", "LOAD httpfs", "SET threads = 8", "SET lock_configuration = false",
                 "SET enable_external_access = true"):
        assert score_sql(f"```sql\nSELECT 1;\n{stmt};\n```", schema) == 0.3, stmt
    assert list(tmp_path.iterdir()) == []
