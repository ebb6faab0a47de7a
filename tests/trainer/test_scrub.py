"""The scrubber: what must go (secrets, emails, phones, cards) and what must stay (numbers)."""
import pytest

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
