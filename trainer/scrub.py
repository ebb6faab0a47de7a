"""Secrets and PII scrubbing for text that may end up in a training table.

`scrub(text)` replaces what looks like an API key or other secret, an email address, a
payment card number or a phone number with a typed placeholder (`<SECRET>`, `<EMAIL>`,
`<CARD>`, `<PHONE>`) and says how many it replaced. The select stage runs it over every
prompt, served answer and written feedback before anything is stored for training.

Ordinary numbers must survive: quantities, prices (45.00, $1,299.99), years, dates, times,
order numbers. So cards must pass the Luhn check, and a phone number needs a phone-like
shape (a leading +, the 3-3-4 grouping, a leading 0 with groups) or the word "phone" nearby.

    >>> scrub("mail bob@example.com, 3 items at 45.00")
    ('mail <EMAIL>, 3 items at 45.00', 1)
"""
from __future__ import annotations

import re

# Secrets go first: a key can contain digit runs the card and phone patterns would eat.
_SECRETS = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL),
    re.compile(r"\beyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}"),                         # JWT
    re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}"),                             # OpenAI, Anthropic
    re.compile(r"\b[spr]k_(?:live|test)_[A-Za-z0-9]{16,}"),                            # Stripe
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),                                      # AWS access key id
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{30,}"),       # GitHub
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),                                     # Slack
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}"),                                            # Google
]
# A value after a secret-ish name keeps the name: "token=<SECRET>". Generic names ("key")
# also name ordinary things, so their value must be long and hold a digit to count.
_NAMED_SECRET = re.compile(
    r"(?i)(\b(?:api[_-]?key|access[_-]?key|secret(?:[_-]?key)?|client[_-]?secret|token|access[_-]?token"
    r"|auth(?:orization)?|key)[\"']?\s*[=:]\s*[\"']?)((?=[A-Za-z0-9+/=_.~-]*\d)[A-Za-z0-9+/=_.~-]{16,})")
_PASSWORD = re.compile(r"(?i)(\b(?:password|passwd|pwd)[\"']?\s*(?:[=:]|\bis\b)\s*[\"']?)([^\s\"',;]{4,})")
_BEARER = re.compile(r"(?i)(\bbearer\s+)([A-Za-z0-9._~+/=-]{16,})")

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")

# Card shapes: 13-19 digits unbroken, 4-4-4-4(-1..3) groups, or Amex 4-6-5.
_CARD = re.compile(r"(?<![\d.,+])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1?\d{1,3})?"
                   r"|\d{4}([ -])\d{6}\2\d{4,5})(?![\d]|[.,]\d)")

_PHONES = [
    # International: +CC then groups, 8 to 15 digits in all (E.164).
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,6}(?![\d]|[.,]\d)"),
    # North American 3-3-4: (415) 555-0132, 415-555-0132, 415.555.0132, 415 555 0132.
    re.compile(r"(?<![\w.,-])(?:1[ .-])?(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\d]|[.,-]\d)"),
    # National numbers with a trunk 0 and one separator throughout: 020 7946 0958,
    # 06 12 34 56 78, 030-1234567. Nine digits at least, so a date (05.10.2024) is no phone.
    re.compile(r"(?<![\w.,-])0\d{1,4}([ .-])\d{2,8}(?:\1\d{2,4}){0,3}(?![\d]|[.,-]\d)"),
]
# Any run of 7-15 digits right after the word phone / tel / mobile / ...
_PHONE_WORD = re.compile(r"(?i)(\b(?:phone|tel|telephone|mobile|cell|fax|whatsapp)\b[^\d\n]{0,20}?)"
                         r"(\+?\d[\d ().-]{5,}\d)(?![\d]|[.,]\d)")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def scrub(text: str) -> tuple[str, int]:
    """`text` with secrets and PII replaced by typed placeholders, and how many were replaced."""
    n = 0

    def sub(pattern: re.Pattern, repl, s: str) -> str:
        nonlocal n
        out, k = pattern.subn(repl, s)
        n += k
        return out

    def keep_name(tag: str):
        return lambda m: m.group(1) + tag

    for pat in _SECRETS:
        text = sub(pat, "<SECRET>", text)
    text = sub(_NAMED_SECRET, keep_name("<SECRET>"), text)
    text = sub(_PASSWORD, keep_name("<SECRET>"), text)
    text = sub(_BEARER, keep_name("<SECRET>"), text)
    text = sub(_EMAIL, "<EMAIL>", text)

    def card(m: re.Match) -> str:
        nonlocal n
        d = _digits(m.group(0))
        if 13 <= len(d) <= 19 and luhn_ok(d):
            n += 1
            return "<CARD>"
        return m.group(0)

    text = _CARD.sub(card, text)

    def phone(m: re.Match) -> str:
        nonlocal n
        low = 9 if m.group(0).startswith("0") else 7
        if low <= len(_digits(m.group(0))) <= 15:
            n += 1
            return "<PHONE>"
        return m.group(0)

    def phone_after_word(m: re.Match) -> str:
        nonlocal n
        if 7 <= len(_digits(m.group(2))) <= 15:
            n += 1
            return m.group(1) + "<PHONE>"
        return m.group(0)

    text = _PHONE_WORD.sub(phone_after_word, text)
    for pat in _PHONES:
        text = pat.sub(phone, text)
    return text, n


def scrub_value(value):
    """Every string inside a JSON-like value scrubbed (message dicts, content parts, tool
    calls); returns (value, count). Dict keys are left alone: they are structure, not data."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        items = [scrub_value(v) for v in value]
        return [v for v, _ in items], sum(k for _, k in items)
    if isinstance(value, dict):
        items = {k: scrub_value(v) for k, v in value.items()}
        return {k: v for k, (v, _) in items.items()}, sum(c for _, c in items.values())
    return value, 0
