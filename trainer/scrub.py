"""Secrets and PII scrubbing for text that may end up in a training table.

`scrub(text)` replaces what looks like a secret (API keys and tokens, passwords, credentials
in URLs and headers, PEM/PGP blocks, this project's own `tao-` keys and `sha256:` key hashes),
an email address, a US social security number, an IBAN, a payment card number or a phone
number with a typed placeholder (`<SECRET>`, `<EMAIL>`, `<SSN>`, `<IBAN>`, `<CARD>`,
`<PHONE>`) and says how many it replaced. A named secret keeps its name:
`GITHUB_TOKEN=<SECRET>`. The select stage runs it over every prompt, served answer and
written feedback before anything is stored for training.

Secrets are found by detect-secrets' detectors (the ones kept up to date with each vendor's
token format), plus shapes it does not know; SSNs, IBANs and cards must pass their checks
(python-stdnum: SSN area/group/serial rules, IBAN mod-97 and country length, Luhn).

Ordinary numbers must survive: quantities, prices (45.00, $1,299.99), years, dates, times,
order numbers, request ids. So a phone number needs a phone-like shape (a leading +, the
3-3-4 grouping, a leading 0 with groups) or the word "phone" nearby, and no detector that
flags any random-looking string is used (see _DETECTORS).

    >>> scrub("mail bob@example.com, 3 items at 45.00")
    ('mail <EMAIL>, 3 items at 45.00', 1)
"""
from __future__ import annotations

import re

from detect_secrets.filters.heuristic import is_prefixed_with_dollar_sign, is_templated_secret
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.cloudant import CloudantDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.ibm_cloud_iam import IbmCloudIamDetector
from detect_secrets.plugins.ibm_cos_hmac import IbmCosHmacDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.keyword import QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.softlayer import SoftlayerDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector
from stdnum import iban as _iban
from stdnum import luhn as _luhn
from stdnum.us import ssn as _ssn

# -- secrets: detect-secrets --------------------------------------------------------------------
# detect-secrets' `analyze_string` yields a secret's value but not where it is, and a short
# value (the password of https://u:pw@host) can occur elsewhere in the text. So we run each
# detector's own patterns (RegexBasedDetector.denylist) with finditer and replace the matched
# group, or the whole match where the pattern has none: exactly the value analyze_string yields.
#
# Left out, and why:
# - Base64HighEntropyString / HexHighEntropyString: they flag any long random-looking run:
#   request ids, UUIDs, git SHAs, content hashes, shipment and order ids. Prompts are full of
#   those; the detectors below find secrets by their vendor's shape or by the name before them.
# - IPPublicDetector: an address in a prompt ("why can't I reach 8.8.8.8?") is content.
# - ArtifactoryDetector: its password pattern (AP, a hex digit, 8+ alphanumerics between
#   spaces) is also any shouted word such as "APEXLEGENDS".
# - PrivateKeyDetector: it matches the words "BEGIN RSA PRIVATE KEY", not the key; _PEM below
#   replaces the whole block, of any kind.
# - KeywordDetector's config-file mode (unquoted `password = value`): its value runs to the end
#   of the line, which in prose is the rest of the sentence. We use its quotes-required patterns
#   (what it applies to Python/JS source) and _NAMED / _PASSWORD for unquoted values.
_DETECTORS = (AWSKeyDetector, AzureStorageKeyDetector, BasicAuthDetector, CloudantDetector,
              DiscordBotTokenDetector, GitHubTokenDetector, GitLabTokenDetector, IbmCloudIamDetector,
              IbmCosHmacDetector, JwtTokenDetector, MailchimpDetector, NpmDetector, OpenAIDetector,
              PypiTokenDetector, SendGridDetector, SlackDetector, SoftlayerDetector, SquareOAuthDetector,
              StripeDetector, TelegramBotTokenDetector, TwilioKeyDetector)

# Token shapes detect-secrets 1.5.0 has no detector for (or knows only an older format of).
_TOKENS = [
    r"\bsk-(?:proj-|ant-(?:api\d\d-)?|svcacct-|admin-)?[A-Za-z0-9_-]{16,}",  # OpenAI (new formats), Anthropic
    r"\b[spr]k_(?:live|test)_[A-Za-z0-9]{16,}",     # Stripe test keys and publishable keys too
    r"\bgithub_pat_[A-Za-z0-9_]{30,}",               # GitHub fine-grained PAT
    r"\bAIza[0-9A-Za-z_-]{35}",                      # Google API key
    r"\bya29\.[0-9A-Za-z_-]{20,}",                   # Google OAuth access token
    r"\bhf_[A-Za-z0-9]{30,}",                        # Hugging Face
    r"\bnpm_[A-Za-z0-9]{36}",                        # npm (NpmDetector only knows the .npmrc line)
    r"\bglpat-[A-Za-z0-9_-]{20,}",                   # GitLab PAT of other lengths than the detector's
    r"\btao-[A-Za-z0-9_-]{40,}",                     # ours: "tao-" + token_urlsafe(32) (feedback/auth.py)
    r"(?i)\bsha256:[0-9a-f]{64}\b",                  # ours: a stored key hash, "sha256:HEX"
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}",               # Slack tokens of other shapes than the detector's
]

# These detectors' patterns capture the value after a name ("://user:(pw)@", 'aws_key = "(KEY)"');
# in the others a group is part of the token itself (GitHub's "(ghp|gho|...)_"), whose whole
# match is the secret.
_VALUE_GROUP = (AWSKeyDetector, BasicAuthDetector, CloudantDetector, IbmCloudIamDetector,
                IbmCosHmacDetector, NpmDetector, SoftlayerDetector)
# What the text must hold (lower-cased) for a detector to find anything: the slow patterns, which
# start with optional parts and so are tried at every position, run only where it can pay.
_DETECTOR_NEEDS = {
    AWSKeyDetector: ("a3t", "abia", "acca", "akia", "asia", "aws"),
    CloudantDetector: ("key", "pw", "pass", "token", "cloudant"),
    IbmCloudIamDetector: ("key", "pw", "pass", "token"),
    IbmCosHmacDetector: ("secret",),
    MailchimpDetector: ("-us",),
    SoftlayerDetector: ("key", "pw", "pass", "token", "softlayer"),
}
# (pattern, group, needs): group = the group holding the secret, None = the first group that
# matched, or the whole match.
_SPAN_PATTERNS: list[tuple[re.Pattern, int | None, tuple[str, ...]]] = (
    [(p, None if d in _VALUE_GROUP else 0, _DETECTOR_NEEDS.get(d, ())) for d in _DETECTORS for p in d.denylist]
    + [(re.compile(p), 0, ()) for p in _TOKENS])
_KEYWORD_PATTERNS = list(QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP.items())
_KEYWORD_MAX_LINE = 500
_JWT_PATTERNS = set(JwtTokenDetector.denylist)
# A secret that ends where its pattern's match ends may go on: the JWT pattern ends lazily (before
# the signature), and a fixed-length pattern matches the start of a longer token.
_TOKEN_TAIL = re.compile(r"[\w-]*")
_JWT_TAIL = re.compile(r"[\w+/=-]*(?:\.[\w+/=-]+)*")

# Any -----BEGIN X----- block: private keys, certificates, PGP messages and signatures. A block
# cut off before its END line still goes, with the base64 lines after its header. (The search
# for END stops at the next BEGIN: many cut blocks would otherwise each scan to the end.)
_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(?:(?:(?!-----BEGIN ).)*?-----END \1-----"
                  r"|(?:(?:\s|\\n)*[A-Za-z0-9+/=]{16,})*)", re.DOTALL)

# -- secrets: by the name before them -------------------------------------------------------------
# A value after a secret-ish name keeps the name: "token=<SECRET>", "GITHUB_TOKEN=<SECRET>". The
# name may be part of a longer identifier (AWS_SECRET_ACCESS_KEY, clientSecret). Generic names
# ("key", "auth") also name ordinary things, so their value must be long and hold a digit; a
# strong name (secret, token, credential) needs 8 characters with a digit, or 20 at least.
# (\w{0,40}, not \w*, after the name: a long identifier full of names would take quadratic time.)
_ASSIGN = r"[\"']?\s*[=:]\s*[\"']?"
_VALUE = r"[A-Za-z0-9+/=_.~-]"
_END = r"(?<!\.)(?!\.?[A-Za-z0-9+/=_~-])"   # the whole run, less a full stop ending a sentence
_NAMED = re.compile(
    rf"(?i)((?:secret|token|credentials?|private[_-]?key)\w{{0,40}}{_ASSIGN})"
    rf"((?={_VALUE}*\d)(?={_VALUE}*[a-z]){_VALUE}{{8,}}|{_VALUE}{{20,}}){_END}"
    rf"|((?:api[_-]?key|access[_-]?key|auth|key)\w{{0,40}}{_ASSIGN})((?={_VALUE}*\d){_VALUE}{{16,}}){_END}")
# Passwords can be anything; "password is X" needs a digit or symbol in X ("password is required").
_PASSWORD = re.compile(
    r"(?i)((?:password|passwd|passphrase|pwd)\w{0,40}[\"']?\s*(?:[=:]\s*[\"']?|\bis\s+(?=[^\s\"',;]*[^\s\"',;a-z.!?]))"
    r"(?!<[A-Z]+>))([^\s\"',;]{4,})")
_BEARER = re.compile(r"(?i)(\bbearer\s+)([A-Za-z0-9._~+/=-]{16,})")
# "Basic" is also an English word: after it, a credential must look like base64 (a digit, +, / or
# padding) unless it follows "Authorization:".
_BASIC = re.compile(r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?basic\s+)([A-Za-z0-9+/]{8,}={0,2})(?![\w+/=])"
                    r"|(\bbasic\s+)((?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{8,}={0,2})(?![\w+/=])")

# -- PII ----------------------------------------------------------------------------------------
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")

# SSN: 3-2-4 with dashes anywhere; with spaces or none only after the words SSN / social security.
_SSN = re.compile(r"(?<![\w.,-])\d{3}-\d{2}-\d{4}(?![\w-]|[.,]\d)")
_SSN_WORD = re.compile(r"(?i)(\b(?:ssn|social[ -]security(?:[ -](?:number|no\.?|#))?)[^\d\n]{0,20}?)"
                       r"(\d{3}([ -]?)\d{2}\3\d{4})(?![\w-]|[.,]\d)")

# IBAN: country, check digits, then groups of four (or none) and a shorter last group.
_IBAN_SHAPE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")

# Card shapes: 13-19 digits unbroken, 4-4-4-4(-1..3) groups, or Amex 4-6-5; space, dash or dot.
_CARD = re.compile(r"(?<![\d.,+])(?:\d{13,19}|\d{4}([ .-])\d{4}\1\d{4}\1\d{4}(?:\1?\d{1,3})?"
                   r"|\d{4}([ .-])\d{6}\2\d{4,5})(?![\d]|[.,]\d)")

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
    return _luhn.is_valid(digits)


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def _line_spans(line: str) -> list[tuple[int, int]]:
    """Where the detectors see secrets in one line of text: (start, end) spans, maybe overlapping.
    Detectors see one line at a time, as in detect-secrets: no secret spans lines (PEM blocks
    are _PEM's), and KeywordDetector's whitespace and value parts would otherwise run on."""
    spans = []
    low = line.lower()
    # Every detector pattern and token shape needs a 16-character run without spaces (the
    # shortest: "AKIA" + 16 characters, a 24-letter Cloudant key; real Slack tokens run to 50),
    # except a password in a URL ("://u:pw@host"): most lines of prose and code skip them all.
    if "://" in line or _LONG_RUN.search(line):
        for pattern, group, needs in _SPAN_PATTERNS:
            if needs and not any(k in low for k in needs):
                continue
            for m in pattern.finditer(line):
                if pattern in _JWT_PATTERNS and not JwtTokenDetector.is_formally_valid(m.group()):
                    continue
                g = group if group is not None else next((i for i in range(1, pattern.groups + 1) if m.group(i)), 0)
                if g and is_templated_secret(m.group(g)):   # https://user:<SECRET>@host, scrubbed before
                    continue
                start, end = m.span(g)
                # Token shapes never hold whitespace; NpmDetector's `npm_.+` runs to the end of the line.
                cut = re.search(r"\s", m.group(g))
                if cut:
                    end = start + cut.start()
                elif end == m.end():
                    end = (_JWT_TAIL if pattern in _JWT_PATTERNS else _TOKEN_TAIL).match(line, end).end()
                if end > start:
                    spans.append((start, end))
    # KeywordDetector's patterns are slow (a keyword, any suffix, then a quoted value): only on a
    # line with a quote and one of its keywords, and not on a line so long (minified code, a data
    # blob) that they take seconds; there _NAMED and _PASSWORD still see quoted values.
    if (len(line) <= _KEYWORD_MAX_LINE and ("'" in line or '"' in line or "`" in line)
            and any(k in low for k in _NEEDS["keyword"])):
        for pattern, group in _KEYWORD_PATTERNS:
            for m in pattern.finditer(line):
                value = m.group(group)
                # detect-secrets' own filters: "<SECRET>", "{password}", "${DB_PASS}", "$PASS"
                # are references or placeholders, not secrets (and scrubbing stays idempotent).
                if not is_templated_secret(value) and not is_prefixed_with_dollar_sign(value):
                    spans.append(m.span(group))
    return spans


def _secret_spans(text: str) -> list[tuple[int, int]]:
    """Where the detectors see secrets in `text`: merged (start, end) spans, in order."""
    spans = []
    offset = 0
    for line in text.splitlines(keepends=True):
        spans += [(offset + s, offset + e) for s, e in _line_spans(line)]
        offset += len(line)
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


# Each regex scans the whole text, position by position; the select stage scrubs thousands of
# texts a cycle, nearly all with nothing to find. So a regex runs only when the text holds what
# every match of it must hold (lower-cased): a text with none of these skips it.
_NEEDS = {
    "pem": ("-----begin",),
    "named": ("secret", "token", "credential", "key", "auth"),
    "keyword": ("key", "pass", "pwd", "secret", "contrase"),   # KeywordDetector's DENYLIST
    "password": ("pass", "pwd"),
    "bearer": ("bearer",), "basic": ("basic",),
    "email": ("@",),
    "ssn_word": ("ssn", "social"),
    "phone_word": ("phone", "tel", "mobile", "cell", "fax", "whatsapp"),
}
_LONG_RUN = re.compile(r"[\w+/=.-]{16}")   # see _line_spans
_FOUR_DIGITS = re.compile(r"\d{4}")   # in every SSN and card shape, and the 3-3-4 phone


def scrub(text: str) -> tuple[str, int]:
    """`text` with secrets and PII replaced by typed placeholders, and how many were replaced."""
    n = 0
    low = text.lower()

    def has(what: str) -> bool:
        return any(needle in low for needle in _NEEDS[what])

    def sub(pattern: re.Pattern, repl, s: str) -> str:
        nonlocal n
        out, k = pattern.subn(repl, s)
        n += k
        return out

    def keep_name(tag: str):
        def repl(m: re.Match) -> str:
            # _NAMED and _BASIC have two alternatives, (name, value) each: keep the name that matched.
            return (m.group(1) if m.group(1) is not None else m.group(3)) + tag
        return repl

    def checked(tag: str, valid, keep_prefix: bool = False):
        def repl(m: re.Match) -> str:
            nonlocal n
            value = m.group(2) if keep_prefix else m.group(0)
            if not valid(value):
                return m.group(0)
            n += 1
            return (m.group(1) if keep_prefix else "") + tag
        return repl

    # Secrets go first: a key can contain digit runs the card and phone patterns would eat, and
    # the password in https://user:pw@host would otherwise end up in an "email".
    if has("pem"):
        text = sub(_PEM, "<SECRET>", text)
    spans = _secret_spans(text)
    for start, end in reversed(spans):
        text = text[:start] + "<SECRET>" + text[end:]
    n += len(spans)
    if has("named"):
        text = sub(_NAMED, keep_name("<SECRET>"), text)
    if has("password"):
        text = sub(_PASSWORD, keep_name("<SECRET>"), text)
    if has("bearer"):
        text = sub(_BEARER, keep_name("<SECRET>"), text)
    if has("basic"):
        text = sub(_BASIC, keep_name("<SECRET>"), text)
    if has("email"):
        text = sub(_EMAIL, "<EMAIL>", text)

    # SSN and IBAN before cards and phones: an IBAN holds 4-4-4-4 digit groups, and an SSN
    # starting with 0 has the shape of a national phone number.
    four_digits = _FOUR_DIGITS.search(text) is not None
    if four_digits and has("ssn_word"):
        # stdnum takes "123-45-6789" or "123456789", not the spaced form
        text = _SSN_WORD.sub(checked("<SSN>", lambda s: _ssn.is_valid(_digits(s)), keep_prefix=True), text)
    if four_digits:
        text = _SSN.sub(checked("<SSN>", _ssn.is_valid), text)

    def iban(m: re.Match) -> str:
        nonlocal n
        # The shape may take in a group of the next word ("... 0130 00 EUR"): try shorter.
        candidate = m.group(0)
        while not _iban.is_valid(candidate):
            if " " not in candidate:
                return m.group(0)
            candidate = candidate.rsplit(" ", 1)[0]
        n += 1
        return "<IBAN>" + m.group(0)[len(candidate):]

    text = _IBAN_SHAPE.sub(iban, text)
    if four_digits:
        text = _CARD.sub(checked("<CARD>", lambda s: 13 <= len(_digits(s)) <= 19 and luhn_ok(_digits(s))), text)

    def phone(m: re.Match) -> str:
        nonlocal n
        least = 9 if m.group(0).startswith("0") else 7
        if least <= len(_digits(m.group(0))) <= 15:
            n += 1
            return "<PHONE>"
        return m.group(0)

    if has("phone_word"):
        text = _PHONE_WORD.sub(checked("<PHONE>", lambda s: 7 <= len(_digits(s)) <= 15, keep_prefix=True), text)
    intl, north_american, national = _PHONES
    if "+" in text:
        text = intl.sub(phone, text)
    if four_digits:
        text = north_american.sub(phone, text)
    text = national.sub(phone, text)
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
