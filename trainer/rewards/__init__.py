"""Label-free reward sources and their ensemble.

A reward source is a plain callable `(prompt, candidates) -> list[float | None]`: one score
in [0, 1] per candidate, or None where the source has no opinion (`trainer.prompts`
defines Prompt, Candidate and the RewardSource protocol). `ensemble` combines them as a
weighted mean of the opinions given.

Sources, one module each:
- `json_verifier` (json_extraction.py): extraction prompts; the asked keys, grounded values;
- `sql_verifier` (sql.py): text-to-SQL prompts; the query runs on the prompt's schema in DuckDB;
- `constraint_verifier` (constraints.py): the format and length the prompt states;
- `structured_output_verifier`, `tool_call_verifier` (contract.py): what the request's own
  parameters ask, whatever its wording (response_format json_schema / json_object; tools);
- `agreement` (consistency.py): self-consistency across samples;
- `user_feedback` (feedback.py): thumbs, ratings and corrections;
- `make_relative_judge` (judge.py): an LLM judge scoring a whole group in one request.
All but the judge need no model. Import the judge from `trainer.rewards.judge`: it needs httpx.
"""
from trainer.prompts import Candidate, Prompt
from trainer.rewards.consistency import agreement
from trainer.rewards.constraints import constraint_verifier
from trainer.rewards.ensemble import ensemble
from trainer.rewards.feedback import user_feedback
from trainer.rewards.json_extraction import asked_keys, extract_json_object, json_verifier
from trainer.rewards.sql import sql_verifier

__all__ = ["Candidate", "Prompt", "agreement", "asked_keys", "constraint_verifier", "ensemble",
           "extract_json_object", "json_verifier", "sql_verifier", "user_feedback"]
