"""The ChatML tools template tao gives vLLM for SmolLM2 (schemas/templates/chatml_tools.jinja):
the model's own template, token for token, for requests without tools; tools and tool calls
in the Hermes format that vLLM's hermes parser reads back."""
import json

import pytest

from schemas.chat_template import TOOLS_TEMPLATE
from serving.vllm import model_chat_template, tool_call_args
from tests.models import BASE_MODEL, require_base_model

CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}],
    [{"role": "user", "content": "a\n\nb  "}, {"role": "assistant", "content": " x "}, {"role": "user", "content": ""}],
]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def tokenizer():
    require_base_model()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(BASE_MODEL))


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_without_tools_it_is_the_models_own_template(tokenizer, conversation, generation_prompt):
    own = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation_prompt)
    ours = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation_prompt,
                                         chat_template=TOOLS_TEMPLATE.read_text())
    assert ours == own


def test_tools_calls_and_results_are_shown_in_the_hermes_format(tokenizer):
    conversation = [
        {"role": "user", "content": "Weather in Lima?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lima"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"}]
    text = tokenizer.apply_chat_template(conversation, tools=[WEATHER], tokenize=False, add_generation_prompt=True,
                                         chat_template=TOOLS_TEMPLATE.read_text())
    tools_block = text.split("XML tags:\n<tools>")[1].split("</tools>")[0]  # the sentence names <tools></tools> first
    assert json.loads(tools_block) == WEATHER
    call = text[text.index("<tool_call>\n{\"name\": \"get_weather\"") + len("<tool_call>"):]
    assert json.loads(call[:call.index("</tool_call>")]) == {"name": "get_weather", "arguments": {"city": "Lima"}}
    assert "<tool_response>\n18C\n</tool_response>" in text and text.endswith("<|im_start|>assistant\n")


def test_vllm_gets_the_parser_and_the_template_only_where_they_fit(tmp_path):
    require_base_model()
    args = tool_call_args("--max-model-len 2048", "hermes", BASE_MODEL)
    assert args.split()[2:6] == ["--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--chat-template"]
    assert tool_call_args("--max-model-len 2048", None, BASE_MODEL) == "--max-model-len 2048"  # tools off
    explicit = "--tool-call-parser llama3_json --enable-auto-tool-choice"
    assert tool_call_args(explicit, "hermes", BASE_MODEL) == explicit  # the operator's own arguments win
    # A model whose own template renders tools keeps it; a parser other than hermes gets no ChatML template.
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}{{ tools }}")
    assert "--chat-template" not in tool_call_args("", "hermes", tmp_path)
    assert "--chat-template" not in tool_call_args("", "pythonic", BASE_MODEL)
    assert "<|im_start|>" in model_chat_template(BASE_MODEL) and model_chat_template(tmp_path / "none") == ""
