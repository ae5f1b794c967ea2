"""The ``llama3_json`` and ``mistral`` rows of the format table, through the same path as a real model's template.

No Llama 3.x or Mistral model is offline here, so each template below is a small one written for these tests with
the published templates' contract (what they read and what they refuse), rendered by OpenVINO GenAI's own template
engine (``Tokenizer.apply_chat_template(..., chat_template=...)``, the call the OpenVINO backend makes), on the tiny
Qwen2's tokenizer IR. Mistral's templates raise unless every call id and result ``tool_call_id`` is 9 alphanumerics.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from phi3_aipc.chat import ChatTurn
from phi3_aipc.tools import ToolSpec

WEATHER = ToolSpec(
    "get_weather",
    "Get the current weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CALL_ID = "call_0123456789abcdef01234567"  # the shape of our own ids (new_call_id)
AFTER_CALL = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": CALL_ID, "name": "get_weather", "arguments": {"city": "Paris"}}],
    },
    {"role": "tool", "content": "17 C and sunny", "tool_call_id": CALL_ID, "name": "get_weather"},
]
KINDS = frozenset({"json_schema", "regex", "structural_tags"})

LLAMA3_JSON = (
    "{{- bos_token }}{%- for message in messages %}"
    "{%- if message.role == 'user' and loop.first and tools %}<|start_header_id|>user<|end_header_id|>\n\n"
    "Given the following functions, respond with a JSON for a function call with its proper arguments.\n"
    "{%- for t in tools %}{{ t | tojson }}\n{%- endfor %}{{ message.content }}<|eot_id|>"
    "{%- elif message.tool_calls %}<|start_header_id|>assistant<|end_header_id|>\n\n"
    '{%- for c in message.tool_calls %}{"name": "{{ c.function.name }}", "parameters": '
    "{{ c.function.arguments | tojson }}}{%- endfor %}<|eot_id|>"
    "{%- elif message.role == 'tool' %}<|start_header_id|>ipython<|end_header_id|>\n\n{{ message.content }}<|eot_id|>"
    "{%- else %}<|start_header_id|>{{ message.role }}<|end_header_id|>\n\n{{ message.content }}<|eot_id|>"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{%- endif %}"
)
MISTRAL = (
    "{{- bos_token }}{%- for message in messages %}"
    "{%- if message.role == 'user' %}"
    "{%- if tools and loop.first %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{%- endif %}"
    "[INST]{{ message.content }}[/INST]"
    "{%- elif message.tool_calls %}[TOOL_CALLS][{%- for c in message.tool_calls %}"
    "{%- if c.id | length != 9 %}{{ raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}"
    '{%- endif %}{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}, '
    '"id": "{{ c.id }}"}{%- if not loop.last %}, {% endif %}{%- endfor %}]{{ eos_token }}'
    "{%- elif message.role == 'tool' %}"
    "{%- if message.tool_call_id | length != 9 %}"
    "{{ raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}{%- endif %}"
    '[TOOL_RESULTS]{"content": {{ message.content | tojson }}, "call_id": "{{ message.tool_call_id }}"}'
    "[/TOOL_RESULTS]"
    "{%- elif message.role == 'assistant' %}{{ message.content }}{{ eos_token }}{%- endif %}{%- endfor %}"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen2_ov: Path):  # noqa: ANN201
    import openvino_genai as ov_genai

    return ov_genai.Tokenizer(str(tiny_qwen2_ov))


def render(tokenizer, template: str, messages=AFTER_CALL, choice=None):  # noqa: ANN001, ANN201
    """The planned turn for ``template``, and its prompt as OpenVINO GenAI renders it."""
    plan = ChatTurn(messages, [WEATHER], choice).plan_for("other", KINDS, chat_template=template)
    prompt = tokenizer.apply_chat_template(
        plan.prompt, add_generation_prompt=True, chat_template=template, tools=plan.template_tools
    )
    return plan, prompt


def test_llama3_json_row(tokenizer) -> None:  # noqa: ANN001
    plan, prompt = render(tokenizer, LLAMA3_JSON)
    assert plan._parser.protocol.name == "llama3_json"
    assert (
        json.dumps({"type": "function", "function": WEATHER.to_dict()}) in prompt
    )  # tools through the template
    assert '{"name": "get_weather", "parameters": {"city": "Paris"}}' in prompt  # the earlier call, its shape
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n17 C and sunny<|eot_id|>" in prompt  # the result
    assert plan.constraint is None  # 'auto': a bare '{' also starts a plain JSON answer
    forced, _ = render(tokenizer, LLAMA3_JSON, choice="required")
    assert set(json.loads(forced.constraint.value)["properties"]) == {"name", "parameters"}
    read = plan.read('{"name": "get_weather", "parameters": {"city": "Rome"}}')
    assert [(c.name, c.arguments) for c in read.tool_calls] == [("get_weather", {"city": "Rome"})]


def test_mistral_row_and_its_nine_character_call_ids(tokenizer) -> None:  # noqa: ANN001
    plan, prompt = render(tokenizer, MISTRAL)
    assert plan._parser.protocol.name == "mistral"
    call_ids = re.findall(r'"id": "([^"]*)"', prompt)
    result_ids = re.findall(r'"call_id": "([^"]*)"', prompt)
    assert len(call_ids) == 1 and re.fullmatch(r"[A-Za-z0-9]{9}", call_ids[0]), prompt
    assert result_ids == call_ids  # the result still names its call
    assert '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}' in prompt
    assert "[AVAILABLE_TOOLS]" in prompt and '"content": "17 C and sunny"' in prompt
    # The template does refuse our own ids as they are: the mapping is what makes it render.
    raw = [
        AFTER_CALL[0],
        {**plan.prompt[1], "tool_calls": [{**plan.prompt[1]["tool_calls"][0], "id": CALL_ID}]},
        {**plan.prompt[2], "tool_call_id": CALL_ID},
    ]
    with pytest.raises(Exception, match="length 9"):
        tokenizer.apply_chat_template(
            raw, add_generation_prompt=True, chat_template=MISTRAL, tools=plan.template_tools
        )
    forced, _ = render(tokenizer, MISTRAL, choice="required")
    assert json.loads(forced.constraint.value)["type"] == "array"
    read = plan.read('[{"name": "get_weather", "arguments": {"city": "Rome"}}]')
    assert [(c.name, c.arguments) for c in read.tool_calls] == [("get_weather", {"city": "Rome"})]
