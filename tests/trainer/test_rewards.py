import json
import time

import pytest

from trainer.rewards import (Candidate, Prompt, agreement, asked_keys, constraint_verifier, detect_constraints,
                             ensemble, extract_sql, final_answer_key, json_verifier, schema_statements,
                             score_extraction, score_sql, sql_verifier, user_feedback)

TEXT = ("Extract the fields customer, item, quantity, total from the text below. Reply with only a JSON object.\n"
        "Text: Maria Lopez ordered 3 lamps for a total of 45.00 dollars.")


def prompt(text=TEXT, feedback=()):
    return Prompt("p1", [{"role": "user", "content": text}], feedback=list(feedback))


def test_asked_keys():
    assert asked_keys(TEXT) == ["customer", "item", "quantity", "total"]
    assert asked_keys("Extract the fields name and city as a JSON object. Text: ...") == ["name", "city"]
    assert asked_keys("What is 2 + 2?") is None


GOOD = '{"customer": "Maria Lopez", "item": "lamps", "quantity": 3, "total": "45.00"}'


@pytest.mark.parametrize("answer,expected", [
    (GOOD, 1.0),
    # Chatter costs 0.4, more than a DPO pair's min_margin (0.3): the bare answer must win a
    # pair against the same answer with chatter (NOTES.md: the tuned model kept the chatter).
    ("Sure! " + GOOD, 0.6),
    (GOOD + "\nLet me know if you need anything else!", 0.6),
    ("Here is the JSON:\n```json\n" + GOOD + "\n```", 0.6),
    # A bare ```json fence is acceptable but not as good as the bare object.
    ("```json\n" + GOOD + "\n```", 0.9),
    ("```\n" + GOOD + "\n```", 0.9),
    ('{"customer": "Maria Lopez", "item": "lamps"}', 0.2 + 0.15 + 0.25),
    ('{"customer": "Bob", "item": "cars", "quantity": 9, "total": "1"}', 0.5),  # keys but invented values
    ("The customer is Maria.", 0.0),
    ('{"customer": "Maria Lopez", "item": ', 0.0),
    ('[1, 2]', 0.0),
])
def test_score_extraction(answer, expected):
    assert score_extraction(answer, asked_keys(TEXT), TEXT) == pytest.approx(expected)


def test_chatter_scores_below_fence_below_bare():
    keys = asked_keys(TEXT)
    bare, fenced, chatty = (score_extraction(a, keys, TEXT) for a in (GOOD, f"```json\n{GOOD}\n```", f"{GOOD} Done!"))
    assert bare > fenced > chatty
    assert bare - chatty >= 0.3  # enough spread for a pair at the default min_margin


def test_extra_keys_cost_and_scores_stay_in_range():
    full = '{"customer": "Maria Lopez", "item": "lamps", "quantity": 3, "total": "45.00", "a": 1, "b": 2}'
    assert score_extraction(full, asked_keys(TEXT), TEXT) == pytest.approx(0.9)
    many = "{" + ", ".join(f'"k{i}": {i}' for i in range(40)) + "}"
    assert score_extraction(many, asked_keys(TEXT), TEXT) == 0.0


def test_verifier_has_no_opinion_on_other_prompts():
    assert json_verifier(prompt("What is 2 + 2?"), [Candidate("4", "plain")]) == [None]


def test_feedback_scores_only_served_answer_and_corrections():
    cands = [Candidate("a", "plain"), Candidate("b", "served"), Candidate("c", "correction")]
    assert user_feedback(prompt(feedback=[{"kind": "thumbs", "value": "down", "choice_index": 0}]), cands) == [
        None, 0.0, 1.0]
    assert user_feedback(prompt(feedback=[{"kind": "rating", "value": 4, "choice_index": 0}]), cands)[1] == 0.75
    assert user_feedback(prompt(), cands) == [None, None, 1.0]


def test_ensemble_weighted_mean_of_opinions():
    p = prompt(feedback=[{"kind": "thumbs", "value": "up", "choice_index": 0}])
    good = '{"customer": "Maria Lopez", "item": "lamps", "quantity": 3, "total": "45.00"}'
    cands = [Candidate(good, "served"), Candidate("no idea", "plain")]
    scores, detail = ensemble({"verifier": (1.0, json_verifier), "feedback": (3.0, user_feedback)}, p, cands)
    assert scores == [pytest.approx(1.0), pytest.approx(0.0)]
    assert detail[1] == {"verifier": 0.0}
    scores, _ = ensemble({"verifier": (1.0, json_verifier), "feedback": (3.0, user_feedback)},
                         prompt(feedback=[{"kind": "thumbs", "value": "down", "choice_index": 0}]), cands)
    assert scores[0] == pytest.approx(0.25)  # (1*1.0 + 3*0.0) / 4


def test_ensemble_rejects_a_source_with_the_wrong_number_of_scores():
    with pytest.raises(ValueError, match="'bad' gave 1 scores for 2"):
        ensemble({"bad": (1.0, lambda p, c: [0.5])}, prompt(), [Candidate("a", "plain"), Candidate("b", "plain")])


def test_ensemble_skips_zero_weight_sources_and_combines_new_ones():
    p = prompt("Answer with a number. What is 2 + 2?")
    cands = [Candidate("4", "plain"), Candidate("4", "plain"), Candidate("The answer is five.", "plain")]
    never = lambda p, c: pytest.fail("a source with weight 0 must not run")  # noqa: E731
    scores, detail = ensemble({"constraints": (1.0, constraint_verifier), "agreement": (1.0, agreement),
                               "off": (0.0, never)}, p, cands)
    assert detail[0] == {"constraints": 1.0, "agreement": 0.5}
    assert scores == [pytest.approx(0.75), pytest.approx(0.75), pytest.approx(0.0)]


# -- SQL ---------------------------------------------------------------------------------
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
    from trainer.rewards import _sql_connection

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


# -- constraints -------------------------------------------------------------------------
@pytest.mark.parametrize("text,labels", [
    ("Describe Paris in at most 20 words.", ["max_words<=20"]),
    ("Summarize in no more than fifty words.", []),  # number words above ten are not parsed
    ("Summarize it in 30 words or less.", ["max_words<=30"]),
    ("In one word, what colour is the sky?", ["one_word"]),
    ("Give a one-word answer: capital of France?", ["one_word"]),
    ("Explain DNS in two sentences.", ["sentences==2"]),
    ("Explain DNS in a single sentence.", ["sentences==1"]),
    ("Explain DNS in at most 3 sentences.", ["sentences<=3"]),
    ("Read the first two sentences and translate them.", []),
    ("Write at least 100 words about tea.", ["min_words>=100"]),
    ("A tweet: at most 140 characters.", ["max_chars<=140"]),
    ("What is 17 * 3? Answer with a number.", ["number"]),
    ("What is 17 * 3? Respond with only the number.", ["number"]),
    ("List the planets. Reply in JSON.", ["json"]),
    ("Extract the fields a, b. Reply with only a JSON object.", ["json"]),
    ("Do not reply in JSON, use prose.", []),
    ("Give the pros as bullet points.", ["bullets"]),
    ("Give 3 bullet points on the pros.", ["bullets==3"]),
    ("Don't use bullet points.", []),
    ("Reply in all lowercase.", ["lowercase"]),
    ("Write it with no capital letters.", ["lowercase"]),
    ("Shout it in ALL CAPS.", ["uppercase"]),
    ("Is the sky green? Answer yes or no.", ["yes_no"]),
    ("Give three bullet points, in at most 40 words, all lowercase.", ["max_words<=40", "bullets==3", "lowercase"]),
    ("What is the capital of France?", []),
])
def test_detect_constraints(text, labels):
    assert [label for label, _ in detect_constraints(text)] == labels


@pytest.mark.parametrize("text,good,bad", [
    ("Describe Paris in at most 5 words.", "City of light, France.", "Paris is the capital city of France."),
    ("In one word, what colour is the sky?", "Blue.", "It is blue."),
    ("Explain DNS in two sentences.", "DNS maps names to addresses. It is a distributed database.",
     "DNS maps names to addresses."),
    ("Write at least 5 words.", "one two three four five", "one two"),
    ("At most 10 characters.", "short", "much too long an answer"),
    ("What is 17 * 3? Answer with a number.", "51", "The answer is 51."),
    ("List two colours. Reply in JSON.", '["red", "blue"]', "red and blue"),
    ("Give 2 bullet points.", "Pros:\n- fast\n- cheap", "- fast\n- cheap\n- good"),
    ("Give the pros as bullet points.", "* fast\n* cheap", "It is fast - and cheap."),
    ("Reply in all lowercase.", "hello there", "Hello there"),
    ("Shout it in ALL CAPS.", "HELLO!", "Hello!"),
    ("Is the sky green? Answer yes or no.", "No.", "No, it is blue."),
])
def test_constraint_checks(text, good, bad):
    assert constraint_verifier(prompt(text), [Candidate(good, "plain"), Candidate(bad, "plain")]) == [1.0, 0.0]


def test_constraint_verifier_scores_the_share_met_and_has_no_opinion_without_constraints():
    p = prompt("Give 2 bullet points, all lowercase, in at most 6 words.")
    cands = [Candidate("- fast\n- cheap", "plain"), Candidate("- Fast\n- Cheap", "plain"),
             Candidate("Fast and cheap, and also very good indeed.", "plain")]
    assert constraint_verifier(p, cands) == [1.0, pytest.approx(2 / 3), 0.0]
    assert constraint_verifier(prompt("What is the capital of France?"), cands) == [None, None, None]
    # A constraint in the system message counts too.
    sys = Prompt("p3", [{"role": "system", "content": "Always answer in one word."},
                        {"role": "user", "content": "Capital of France?"}])
    assert constraint_verifier(sys, [Candidate("Paris", "plain"), Candidate("It is Paris", "plain")]) == [1.0, 0.0]


def test_json_constraint_prefers_bare_json_to_a_fence_to_chatter():
    p = prompt("Reply in JSON: what are the primary colours?")
    colours = '["red", "yellow", "blue"]'
    cands = [Candidate(colours, "plain"), Candidate(f"```json\n{colours}\n```", "plain"),
             Candidate(f"Sure: {colours}", "plain")]
    assert constraint_verifier(p, cands) == [1.0, 0.5, 0.0]


# -- agreement ---------------------------------------------------------------------------
@pytest.mark.parametrize("a,b", [
    ("The answer is 42.", "So 6 * 7 = 42"),                       # last number
    ("Total: 1,000", "1000.0"),
    ('{"name": "Ann", "total": "45.00"}', 'Here: {"Total": 45, "name": "ann"}'),  # the object's values
    ("Paris.", "  paris "),
])
def test_same_final_answer(a, b):
    assert final_answer_key(a) == final_answer_key(b)


@pytest.mark.parametrize("a,b", [
    ("The answer is 42.", "The answer is 41."),
    ("Between 1-3 items", "Between 1 and -3 items"),              # a hyphen is not a minus sign
    ('{"name": "Ann", "total": 45}', '{"name": "Bob", "total": 45}'),
    ('{"name": "Ann"}', '{"name": "Ann", "extra": 1}'),
    ("Paris", "Lyon"),
])
def test_different_final_answer(a, b):
    assert final_answer_key(a) != final_answer_key(b)


def test_agreement_is_the_share_of_other_candidates_agreeing():
    texts = ["So the answer is 12.", "12", "It is 12 apples.", "13", "   "]
    assert agreement(prompt("Q"), [Candidate(t, "plain") for t in texts]) == [0.5, 0.5, 0.5, 0.0, 0.0]
    assert agreement(prompt("Q"), [Candidate("12", "plain"), Candidate("12", "plain")]) == [None, None]
    assert agreement(prompt("Q"), [Candidate("", "plain")] * 3) == [0.0, 0.0, 0.0]  # empty answers agree on nothing


def test_copying_the_whole_text_into_every_field_is_not_grounded():
    text = ("Extract the fields event, venue, attendees from the text below. Reply with only a JSON object.\n"
            "Text: Reminder: 352 people signed up for the food market at Harbor Arena.")
    sentence = "Reminder: 352 people signed up for the food market at Harbor Arena."
    gamed = json.dumps({"event": sentence, "venue": sentence, "attendees": sentence})
    honest = json.dumps({"event": "food market", "venue": "Harbor Arena", "attendees": 352})
    same_value = json.dumps({"event": "Harbor Arena", "venue": "Harbor Arena", "attendees": 352})
    keys = ["event", "venue", "attendees"]
    assert score_extraction(honest, keys, text) == pytest.approx(1.0)
    assert score_extraction(gamed, keys, text) == pytest.approx(0.5)        # keys present, nothing grounded
    assert score_extraction(same_value, keys, text) == pytest.approx(0.2 + 0.3 + 0.5 * 2 / 3)
