"""The scrubber's corpus: what must be replaced (and with what), and look-alikes that must survive.

MUST_GO is (text, expected) pairs: the exact scrubbed text, so a placeholder in the wrong place
or a name that went with its secret fails as surely as a secret left in. Tokens are made here
from a seeded generator in each vendor's shape rather than written out, so no file in the
repository holds anything a secret scanner would take for a live key.
MUST_STAY is text that must come back unchanged: ordinary numbers, ids, hashes, words that are
also secret-ish names, near-misses of every kind (bad checksums, invalid SSN areas), and the
lift benchmark's prompts and gold values.
"""
import random
import string

from feedback.auth import hash_key, new_key

_rnd = random.Random("scrub-corpus")
_ALNUM = string.ascii_letters + string.digits


def _tok(n: int, alphabet: str = _ALNUM) -> str:
    """n characters of `alphabet`, with a digit and a letter in it where it has both (as real
    tokens have)."""
    kinds = [k for k in (string.digits, string.ascii_letters) if set(k) & set(alphabet)]
    while True:
        s = "".join(_rnd.choice(alphabet) for _ in range(n))
        if all(set(k) & set(s) for k in kinds):
            return s


_B64 = _ALNUM + "+/"
_URLSAFE = _ALNUM + "-_"
_HEX = "0123456789abcdef"

AWS_ID = "AKIA" + _tok(16, string.ascii_uppercase + string.digits)
AWS_SECRET = _tok(40, _B64)
GHP = "ghp_" + _tok(36)
GHO = "gho_" + _tok(36)
GITHUB_PAT = "github_pat_11" + _tok(20, string.ascii_uppercase + string.digits) + "_" + _tok(59)
GLPAT = "glpat-" + _tok(20, _URLSAFE)
HF = "hf_" + _tok(34, string.ascii_letters)
NPM = "npm_" + _tok(36)
SENDGRID = "SG." + _tok(22, _URLSAFE) + "." + _tok(43, _URLSAFE)
YA29 = "ya29." + _tok(60, _URLSAFE)
SLACK = "-".join(["xoxb", _tok(11, string.digits), _tok(13, string.digits),
                  _tok(24, string.ascii_lowercase + string.digits)])
STRIPE_LIVE = "sk_live_" + _tok(24)
STRIPE_TEST = "sk_test_" + _tok(24)
OPENAI = "sk-proj-" + _tok(48, _URLSAFE)
ANTHROPIC = "sk-ant-api03-" + _tok(80, _URLSAFE)
GOOGLE = "AIza" + _tok(35, _URLSAFE)
PYPI = "pypi-AgEIcHlwaS5vcmc" + _tok(80, _URLSAFE)
TWILIO = "SK" + _tok(32, _HEX)
TELEGRAM = _tok(9, string.digits) + ":" + "AA" + _tok(33, _URLSAFE)
MAILCHIMP = _tok(32, _HEX) + "-us14"
AZURE = "AccountKey=" + _tok(86, _B64) + "=="
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0."
       + _tok(43, _URLSAFE))
TAO_KEY = new_key()
TAO_KEY_2 = new_key()
KEY_HASH = hash_key(TAO_KEY)
BASIC_CRED = "YWxhZGRpbjpvcGVuc2VzYW1l"          # base64("aladdin:opensesame")
BASIC_CRED_2 = "dXNlcjpwYXNzd29yZA=="            # base64("user:password")
_PEM_BODY = "\n".join(_tok(64, _B64) for _ in range(4)) + "\n" + _tok(20, _B64) + "=="

RSA_KEY = f"-----BEGIN RSA PRIVATE KEY-----\n{_PEM_BODY}\n-----END RSA PRIVATE KEY-----"
OPENSSH_KEY = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{_PEM_BODY}\n-----END OPENSSH PRIVATE KEY-----"
CERT = f"-----BEGIN CERTIFICATE-----\n{_PEM_BODY}\n-----END CERTIFICATE-----"
PGP_KEY = (f"-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\n{_PEM_BODY}\n=Xk3d\n"
           "-----END PGP PRIVATE KEY BLOCK-----")
PGP_SIG = f"-----BEGIN PGP SIGNATURE-----\n\n{_PEM_BODY}\n-----END PGP SIGNATURE-----"
PEM_ESCAPED = "-----BEGIN PRIVATE KEY-----\\n" + _PEM_BODY.replace("\n", "\\n") + "\\n-----END PRIVATE KEY-----\\n"
PEM_CUT = f"-----BEGIN EC PRIVATE KEY-----\n{_PEM_BODY}"

MUST_GO: list[tuple[str, str]] = [
    # -- env-var and config style: the name stays ---------------------------------------------
    (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", "AWS_SECRET_ACCESS_KEY=<SECRET>"),
    (f"export GITHUB_TOKEN={GHP}", "export GITHUB_TOKEN=<SECRET>"),
    (f'GITHUB_TOKEN="{GITHUB_PAT}"', 'GITHUB_TOKEN="<SECRET>"'),
    ("DATABASE_PASSWORD=Tr0ub4dor&3", "DATABASE_PASSWORD=<SECRET>"),
    (f"OPENAI_API_KEY={OPENAI}\nMODEL=gpt-4o", "OPENAI_API_KEY=<SECRET>\nMODEL=gpt-4o"),
    (f"SLACK_BOT_TOKEN: {SLACK}", "SLACK_BOT_TOKEN: <SECRET>"),
    (f"STRIPE_SECRET_KEY={STRIPE_LIVE}", "STRIPE_SECRET_KEY=<SECRET>"),
    (f"[default]\naws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_SECRET}\n",
     "[default]\naws_access_key_id = <SECRET>\naws_secret_access_key = <SECRET>\n"),
    (f'aws_secret_access_key: "{AWS_SECRET}"', 'aws_secret_access_key: "<SECRET>"'),
    ("DJANGO_SECRET_KEY=django-insecure-8k2j3h4g5f6d7s8a9q0w1e2r3t",
     "DJANGO_SECRET_KEY=<SECRET>"),
    (f"HF_TOKEN={HF} python train.py", "HF_TOKEN=<SECRET> python train.py"),
    ("client_secret=Zq8Vx2Lm5Np7Rt9Wb3Yc6Kd1", "client_secret=<SECRET>"),
    ('{"api_key": "9c1f4e2a7b3d8e6f0a5c2b9d4e7f1a3c"}', '{"api_key": "<SECRET>"}'),
    ("db = connect(password='hunter2!')", "db = connect(password='<SECRET>')"),
    ("my password is c0rrect-h0rse", "my password is <SECRET>"),
    ("accessToken: 'ab12cd34ef56gh78ij90'", "accessToken: '<SECRET>'"),
    # -- vendor token shapes, bare and in use ---------------------------------------------------
    (f"The key id is {AWS_ID}, please rotate it.", "The key id is <SECRET>, please rotate it."),
    (f"git clone https://{GHO}@github.com/acme/app.git", "git clone https://<SECRET>@github.com/acme/app.git"),
    (f"huggingface-cli login --token {HF}", "huggingface-cli login --token <SECRET>"),
    (f"Use {HF} to download the weights.", "Use <SECRET> to download the weights."),
    (f"git remote add origin https://oauth2:{GLPAT}@gitlab.com/acme/app.git",
     "git remote add origin https://oauth2:<SECRET>@gitlab.com/acme/app.git"),
    (f"my gitlab token is {GLPAT}", "my gitlab token is <SECRET>"),
    (f"//registry.npmjs.org/:_authToken={NPM}", "//registry.npmjs.org/:_authToken=<SECRET>"),
    (f"publish with {NPM} please", "publish with <SECRET> please"),
    (f"sg.api_key = {SENDGRID}", "sg.api_key = <SECRET>"),
    (f"SendGrid key: {SENDGRID}.", "SendGrid key: <SECRET>."),
    (f"Authorization: Bearer {YA29}", "Authorization: Bearer <SECRET>"),
    (f"the access token {YA29} expired", "the access token <SECRET> expired"),
    (f"webhook token {SLACK}", "webhook token <SECRET>"),
    (f"test with {STRIPE_TEST}", "test with <SECRET>"),
    (f"anthropic key {ANTHROPIC}", "anthropic key <SECRET>"),
    (f"maps key {GOOGLE}", "maps key <SECRET>"),
    (f"twine upload -p {PYPI} dist/*", "twine upload -p <SECRET> dist/*"),
    (f"twilio sid {TWILIO}", "twilio sid <SECRET>"),
    (f"bot token {TELEGRAM}", "bot token <SECRET>"),
    (f"mailchimp {MAILCHIMP}", "mailchimp <SECRET>"),
    (f"DefaultEndpointsProtocol=https;AccountName=acme;{AZURE};EndpointSuffix=core.windows.net",
     "DefaultEndpointsProtocol=https;AccountName=acme;<SECRET>;EndpointSuffix=core.windows.net"),
    (f"cookie: session={JWT}", "cookie: session=<SECRET>"),
    # -- headers and URLs with credentials ------------------------------------------------------
    (f"Authorization: Basic {BASIC_CRED}", "Authorization: Basic <SECRET>"),
    (f"curl -H 'Authorization: Basic {BASIC_CRED_2}' https://api.example.com",
     "curl -H 'Authorization: Basic <SECRET>' https://api.example.com"),
    (f"send basic {BASIC_CRED_2} in the header", "send basic <SECRET> in the header"),
    ("https://admin:S3cretPass@db.example.com:5432/app", "https://admin:<SECRET>@db.example.com:5432/app"),
    ("DATABASE_URL=postgres://app:hunter2@10.0.0.5/orders", "DATABASE_URL=postgres://app:<SECRET>@10.0.0.5/orders"),
    ("mongodb+srv://reader:pa55word@cluster0.mongodb.net/test",
     "mongodb+srv://reader:<SECRET>@cluster0.mongodb.net/test"),
    ("ftp://bob:letmein@ftp.example.org/pub", "ftp://bob:<SECRET>@ftp.example.org/pub"),
    # -- PEM and PGP blocks, of any kind ----------------------------------------------------------
    (f"Here is my key:\n{RSA_KEY}\nthanks", "Here is my key:\n<SECRET>\nthanks"),
    (f"{OPENSSH_KEY}\n", "<SECRET>\n"),
    (f"server cert:\n{CERT}", "server cert:\n<SECRET>"),
    (f"{PGP_KEY}\nimport it with gpg", "<SECRET>\nimport it with gpg"),
    (f"signed:\n{PGP_SIG}", "signed:\n<SECRET>"),
    (f'{{"private_key": "{PEM_ESCAPED}"}}', '{"private_key": "<SECRET>\\n"}'),
    (f"it was cut off:\n{PEM_CUT}", "it was cut off:\n<SECRET>"),
    # -- this project's keys and key hashes ------------------------------------------------------
    (f"Authorization: Bearer {TAO_KEY}", "Authorization: Bearer <SECRET>"),
    (f"my gateway key is {TAO_KEY_2}, is that right?", "my gateway key is <SECRET>, is that right?"),
    (f"{KEY_HASH} alice admin", "<SECRET> alice admin"),
    (f"TAO_ADMIN_KEY_HASH={KEY_HASH}", "TAO_ADMIN_KEY_HASH=<SECRET>"),
    # -- SSN ------------------------------------------------------------------------------------
    ("SSN: 123-45-6789", "SSN: <SSN>"),
    ("Her social security number is 219 45 6789.", "Her social security number is <SSN>."),
    ("ssn 536904399 on file", "ssn <SSN> on file"),
    ("employee 536-90-4399 joined", "employee <SSN> joined"),
    # -- IBAN -----------------------------------------------------------------------------------
    ("IBAN: DE89 3704 0044 0532 0130 00", "IBAN: <IBAN>"),
    ("pay to GB82WEST12345698765432 today", "pay to <IBAN> today"),
    ("FR14 2004 1010 0505 0001 3M02 606 (Paris)", "<IBAN> (Paris)"),
    ("NL91ABNA0417164300, NO93 8601 1117 947", "<IBAN>, <IBAN>"),
    ("konto ES91 2100 0418 4502 0005 1332 EUR", "konto <IBAN> EUR"),
    ("PL61 1090 1014 0000 0712 1981 2874", "<IBAN>"),
    # -- cards (Luhn), every grouping -----------------------------------------------------------
    ("card 4111.1111.1111.1111 exp 12/27", "card <CARD> exp 12/27"),
    ("5500.0055.5555.5559", "<CARD>"),
    ("pay with 4111 1111 1111 1111", "pay with <CARD>"),
    ("3782-822463-10005", "<CARD>"),
    ("cc=5500005555555559", "cc=<CARD>"),
    # -- email and phone ------------------------------------------------------------------------
    ("write to jane.doe@example.com or ops+alerts@acme.io", "write to <EMAIL> or <EMAIL>"),
    ("call me at +1 (415) 555-0132 or 020 7946 0958", "call me at <PHONE> or <PHONE>"),
    ("tel. 030-1234567", "tel. <PHONE>"),
]

MUST_STAY: list[str] = [
    # ids, hashes, versions: random-looking but not secrets
    "request id 3f2b8c1e-9a4d-4e7b-8c2d-1a2b3c4d5e6f failed with 502",
    "x-request-id: 7c9e6679-7425-40de-944b-e07fc1f90ae7",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 broke the build",
    "checksum e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "session_id=a1b2c3d4e5f60718293a4b5c6d7e8f90",
    "chatcmpl-9f86d081884c7d659a2feaa0c55ad015 finished",
    "trace 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "image data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ",
    "tracking number 1Z999AA10123456784 via UPS",
    "ISBN 978-0-306-40615-7 and ISBN 9780306406157",
    "order #A-2024-000123, invoice INV-2024-0042, shipment SHP-58213",
    "version 1.2.3.4, build 2024.03.15.1",
    # numbers
    "Total: $1,299.99 for 3 items, 45.00 each, 1.299,99 EUR in Germany",
    "meeting 2024-03-15T10:30:00Z, then 10:30 pm, 15.03.2024",
    "1,000,000 units shipped in 2023; 50% off; 0.25 kg",
    "room 305, extension 4521, apartment 12B",
    # near-misses of the checked kinds
    "not a card 4111.1111.1111.1112",
    "not an IBAN: GB29 NWBK 6016 1331 9268 18",
    "GB82 WEST 1234 5698 7654 33 fails the check",
    "ids 666-45-6789, 900-12-3456, 123-00-4567, 123-45-0000",
    "part AB12 CDEF GHIJ is on backorder",
    # secret-ish words in ordinary use
    "The password field is required",
    "the password is required.",
    "The secret ingredient is love; secret: patience",
    "max_tokens=256, max_tokens: 4096, num_tokens = 100000, top_k=40",
    "the token limit is 8192 tokens; token count 1024",
    "Primary key: customer_id, foreign key: order_id",
    "Return JSON with key: customer_name and the token count",
    "basic arithmetic: 12 + 7 = 19",
    "Bearer of bad news",
    "Authorization: required for admin routes",
    "use the keyboard shortcut Ctrl+K",
    "http://localhost:8000/v1/chat/completions and https://example.com/a?b=1",
    "public dns 8.8.8.8, gateway 192.168.1.10",
    "pip install scikit-learn hf_transfer; npm_config_cache=/tmp/npm; HF_HOME=/data/hf",
    "the tao-loop gateway (tao-serve) on port 8000",
    "sha256:abc is too short to be a key hash",
    "-----\nmarkdown rule above\n-----",
    "BEGIN RSA PRIVATE KEY is the header of a PEM file",
    "Draw a 4x4 grid; SG.1 is the first group; ya29 is a prefix",
    "AKIA starts an AWS key id, eyJ starts base64 JSON, sk_test_ keys are for tests, xoxb- is a bot",
    '{"key": "value", "secret_santa": false, "token_type": "bearer"}',
    "The API key: ask your admin for one",
    "Python 3.11.4 on Ubuntu 22.04, a 1920x1080 screen at 60 Hz, model SM-S918B for $899",
    "coordinates 51.5074, -0.1278; temperature -3.5 C",
    # the lift benchmark's prompts and gold values (tests/bench/tasks.py)
    "Maria Lopez ordered 7 desk fans for a total of 312.45 dollars.",
    "Order note: customer John Smith, 3 x coffee mugs, total $48.09.",
    "Northwind Traders is shipping a 42 kg parcel to Nairobi.",
    "Reservation: Grand Plaza, guest Aiko Tanaka, arriving March 14 for 6 nights.",
    "The charity gala will take place at Harbor Arena with 450 guests expected.",
    "Repair ticket: washing machine with a leaking hose, quoted at $129.50.",
    "Flight log: SkyBridge Air, Lisbon to Oslo, 214 on board.",
    "Extract the fields customer, item, quantity, total from the text below. "
    "Reply with only a JSON object.\nText: Yesterday Omar Haddad bought 9 backpacks; the bill came to 399.99.",
    '{"customer": "Maria Lopez", "item": "lamps", "quantity": "4", "total": "86.20"}',
    "A shop had 48 stamps. It sold 12 in the morning and 9 in the afternoon. How many stamps are left?",
    "In what year did World War II end? Answer with a number.",
]
