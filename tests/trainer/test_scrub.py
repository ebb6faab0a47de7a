"""The scrubber: what must go (secrets, emails, phones, cards, SSNs, IBANs) and what must stay
(numbers, ids, the benchmark's prompts)."""
import json

import pytest

from feedback.auth import hash_key, new_key
from tests.trainer.scrub_corpus import MUST_GO, MUST_STAY
from trainer.scrub import luhn_ok, scrub, scrub_value


@pytest.mark.parametrize("secret, tag", [
    ("bob.smith+tao@mail.example.co.uk", "<EMAIL>"),
    ("+1 (415) 555-0132", "<PHONE>"),
    ("415-555-0132", "<PHONE>"),
    ("(415) 555 0132", "<PHONE>"),
    ("1-800-555-0199", "<PHONE>"),
    ("+44 20 7946 0958", "<PHONE>"),
    ("020 7946 0958", "<PHONE>"),
    ("06 12 34 56 78", "<PHONE>"),
    ("+4915112345678", "<PHONE>"),
    ("4111 1111 1111 1111", "<CARD>"),
    ("4111-1111-1111-1111", "<CARD>"),
    ("5500005555555559", "<CARD>"),
    ("3782 822463 10005", "<CARD>"),
    ("sk-proj-abcDEF1234567890abcdefXYZ", "<SECRET>"),
    ("AKIAIOSFODNN7EXAMPLE", "<SECRET>"),
    ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "<SECRET>"),
    ("xoxb-1234567890-abcdefghij", "<SECRET>"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "<SECRET>"),
])
def test_secrets_and_pii_are_replaced_with_their_tag(secret, tag):
    out, n = scrub(f"Please use {secret} for this, thanks.")
    assert secret not in out and tag in out and n == 1, out
    assert out.startswith("Please use ") and out.endswith(" for this, thanks.")


@pytest.mark.parametrize("text, value", [
    ('api_key="a1b2c3d4e5f6a7b8c9d0"', "a1b2c3d4e5f6a7b8c9d0"),
    ("token=deadbeefdeadbeefdeadbeef1234", "deadbeefdeadbeefdeadbeef1234"),
    ("Authorization: Bearer abc.def-123_456ghijklmnop", "abc.def-123_456ghijklmnop"),
    ('{"password": "s3cr3t!!"}', "s3cr3t!!"),
    ("my password is hunter22", "hunter22"),
    ("secret_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
])
def test_named_secrets_keep_the_name(text, value):
    out, n = scrub(text)
    assert value not in out and "<SECRET>" in out and n == 1, out
    assert out.split("<SECRET>")[0] == text.split(value)[0]  # "token=" etc. left as it was


@pytest.mark.parametrize("text", [
    "3 widgets at 45.00 each, $1,299.99 total, 1,000,000 units",
    "year 2024, order #12345678, ref 87654321, zip 94103, 50% off, 0.25 kg",
    "dates 2024-03-15, 03/15/2024, 15.03.2024, 05.10.2024 10:30, 01-02-2024",
    "version 1.2.3, ip 192.168.1.10, ranges 10-20 and 100-200, 2x4 boards",
    "Solve 12 + 7 = 19 and 3.14159 * 2",
    "The phone costs 1299.00; iPhone 15 Pro 256 GB",
    "not a card 4111 1111 1111 1112, id 1234567890123",  # fail the Luhn check
    "Return JSON with key: customer_name and the token count",
    "The password field is required",
])
def test_ordinary_numbers_and_words_survive(text):
    assert scrub(text) == (text, 0)


def test_phone_after_the_word_phone_in_any_shape():
    assert scrub("phone: 5550132, mobile 4155550132") == ("phone: <PHONE>, mobile <PHONE>", 2)


def test_luhn():
    assert luhn_ok("4111111111111111") and luhn_ok("378282246310005")
    assert not luhn_ok("4111111111111112")


def test_scrub_value_walks_messages_and_counts():
    value = [{"role": "user", "content": [{"type": "text", "text": "mail a@b.io or c@d.io"}]},
             {"role": "assistant", "content": None, "tool_calls": [{"function": {"arguments": '{"k": "sk-'
                                                                                   'abcdefghij0123456789"}'}}]}]
    out, n = scrub_value(value)
    assert n == 3
    assert out[0]["content"][0]["text"] == "mail <EMAIL> or <EMAIL>"
    assert "<SECRET>" in out[1]["tool_calls"][0]["function"]["arguments"] and out[1]["content"] is None


# -- the corpus (tests/trainer/scrub_corpus.py) --------------------------------------------------
TAGS = ("<SECRET>", "<EMAIL>", "<CARD>", "<PHONE>", "<SSN>", "<IBAN>")


def _tags(text):
    return sum(text.count(t) for t in TAGS)


@pytest.mark.parametrize("text, expected", MUST_GO, ids=[f"go{i}" for i in range(len(MUST_GO))])
def test_corpus_secrets_and_pii_are_replaced_names_kept(text, expected):
    assert scrub(text) == (expected, _tags(expected) - _tags(text))


@pytest.mark.parametrize("text", MUST_STAY, ids=[f"stay{i}" for i in range(len(MUST_STAY))])
def test_corpus_look_alikes_survive(text):
    assert scrub(text) == (text, 0)


def test_corpus_is_big_enough_and_covers_every_tag():
    assert len(MUST_GO) >= 50 and len(MUST_STAY) >= 50
    assert all(any(tag in e for _, e in MUST_GO) for tag in TAGS)


def test_scrubbing_twice_changes_nothing_more():
    # Replayed prompts come back from the store already scrubbed: no placeholder is a secret.
    for _, expected in MUST_GO:
        assert scrub(expected) == (expected, 0), expected


def test_every_value_detect_secrets_finds_is_gone():
    # Our spans come from the detectors' own patterns; what their analyze_string yields (the
    # secret's value) must be gone from the scrubbed text. Values under 6 characters are left
    # out: GitHubTokenDetector yields only its "(ghp|gho|...)" group, which is ordinary text.
    from detect_secrets.plugins.keyword import KeywordDetector
    from trainer.scrub import _DETECTORS
    plugins = [d() for d in _DETECTORS] + [KeywordDetector()]
    checked = 0
    for text, _ in MUST_GO:
        out, _ = scrub(text)
        for line in text.splitlines():
            for plugin in plugins:
                for value in plugin.analyze_string(line):
                    if len(value) >= 6:
                        assert value not in out, (type(plugin).__name__, value, out)
                        checked += 1
    assert checked >= 20


def test_project_keys_and_key_hashes_from_the_real_generator():
    # token_urlsafe may put "-" or "_" anywhere, first and last characters included.
    for _ in range(300):
        key = new_key()
        assert scrub(f"use {key}.") == ("use <SECRET>.", 1), key
        assert scrub(f"{hash_key(key)} bob") == ("<SECRET> bob", 1)


def test_benchmark_prompts_and_gold_answers_scrub_to_themselves():
    # The select stage scrubs prompts and served answers; a gold value mangled there could never
    # be learned. Every field set (seen and unseen) and the math and regression prompts.
    from tests.bench.tasks import FIELD_SETS, extraction_cases, make_suite
    suite = make_suite(seed=7, n_traffic=200, n_eval=50, n_math_traffic=100, n_math_eval=50)
    cases = [c for split in suite.values() for c in split] + extraction_cases(list(FIELD_SETS), 160, "scrub")
    assert len(cases) >= 500
    for case in cases:
        for m in case["messages"]:
            assert scrub(m["content"]) == (m["content"], 0), m["content"]
        answer = json.dumps(case["gold"]) if isinstance(case["gold"], dict) else case["gold"]
        assert scrub(answer) == (answer, 0), answer
