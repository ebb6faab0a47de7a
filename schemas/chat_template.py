"""How a tool call looks in the served model's own tokens: the one chat template both the
gateway's vLLM (which must show the model the tools and parse its calls back) and the
trainer (which must train a call exactly where the model will write it) render with.

For a ChatML model whose own template shows no tools (SmolLM2), tao brings a Hermes-style
ChatML template (templates/chatml_tools.jinja): the model's own, token for token, for a
request without tools (tests/serving/test_tool_template.py), and the functions in the system
turn, each call as <tool_call>{"name", "arguments"}</tool_call>, as vLLM's `hermes` parser
reads them. Any other model keeps its own template.
"""
from __future__ import annotations

from pathlib import Path

TOOLS_TEMPLATE = Path(__file__).parent / "templates" / "chatml_tools.jinja"


def needs_tools_template(own_template: str) -> bool:
    """True for a ChatML template that renders no tools: tao's template then stands in for it."""
    return "tools" not in own_template and "<|im_start|>" in own_template
