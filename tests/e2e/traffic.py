"""Extraction-style prompts like the ones docs/measurements.md describes: one-line order notes."""
import random

NAMES = ["Maria Lopez", "John Smith", "Aiko Tanaka", "Omar Haddad", "Lena Fischer", "Ravi Patel"]
ITEMS = ["lamps", "chairs", "notebooks", "coffee mugs", "desk fans", "backpacks"]
TEMPLATES = [
    "{name} ordered {qty} {item} for a total of {total} dollars.",
    "Order note: customer {name}, {qty} x {item}, total ${total}.",
    "Yesterday {name} bought {qty} {item}; the bill came to {total}.",
]


def extraction_prompts(n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        text = TEMPLATES[i % 3].format(name=rnd.choice(NAMES), item=rnd.choice(ITEMS), qty=rnd.randint(2, 9),
                                       total=f"{rnd.randint(10, 400)}.{rnd.randint(0, 99):02d}")
        out.append("Extract the fields customer, item, quantity, total from the text below. "
                   f"Reply with only a JSON object.\nText: {text}")
    return out


# Requests that state their contract in parameters, worded unlike the benchmark's traffic.
# Two string arguments: the 135M model wrote no valid four-argument call (typed numbers) in a
# cycle's samples (2026-12-06), so pairs could not form; the benchmark measures harder calls.
RECORD_ORDER = {"type": "function", "function": {
    "name": "record_order", "description": "Store who bought what.",
    "parameters": {"type": "object", "properties": {"customer": {"type": "string"}, "item": {"type": "string"}},
                   "required": ["customer", "item"]}}}
# Four fields: vLLM holds every answer to the schema, so pairs come only from values made up
# rather than copied, and more fields give more of that spread (3 fields: 1-4 pairs of 8 prompts).
ORDER_SCHEMA = {"type": "json_schema", "json_schema": {"name": "order", "strict": True, "schema": {
    "type": "object", "properties": {"customer": {"type": "string"}, "item": {"type": "string"},
                                     "quantity": {"type": "integer"}, "total": {"type": "number"}},
    "required": ["customer", "item", "quantity", "total"], "additionalProperties": False}}}


def order_notes(n: int, seed: int = 11) -> list[str]:
    """The bare one-line order notes, with no instruction around them."""
    rnd = random.Random(seed)
    return [TEMPLATES[i % 3].format(name=rnd.choice(NAMES), item=rnd.choice(ITEMS), qty=rnd.randint(2, 9),
                                    total=f"{rnd.randint(10, 400)}.{rnd.randint(0, 99):02d}") for i in range(n)]
