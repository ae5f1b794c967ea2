"""``Constraint.end_after_tags``: once a tag is written, the rest of the output is more tags, then the end.

Qwen2.5-Coder writes a third parallel call without its ``<tool_call>`` opener, or closes a code fence and stops after
one call; the tool parser drops text after calls, so the constraint may hold the model to calls from the first on.
"""

from __future__ import annotations

import json
import re

import pytest

from phi3_aipc.params import Constraint, GenerationParams, TaggedSchema
from phi3_aipc.tools.protocols import HermesProtocol
from phi3_aipc.tools.spec import ToolSpec

SCHEMA = {"type": "object", "properties": {"country": {"type": "string"}}, "required": ["country"]}
TAG = TaggedSchema(begin="Paris <info>", schema=json.dumps(SCHEMA), end="</info>")
FRANCE = [{"role": "user", "content": "What is the capital of France? Answer in two sentences."}]
CONSTRAINT = Constraint("structural_tags", tags=(TAG,), triggers=("Paris",), end_after_tags=True)


def test_hermes_auto_with_parallel_calls_ends_after_its_calls() -> None:
    tool = ToolSpec("get_weather", "Weather.", SCHEMA)
    kinds = frozenset({"structural_tags"})
    assert HermesProtocol().constraint([tool], "auto", kinds, parallel=True).end_after_tags
    # One call only: stop_after_first already ends the output there.
    assert HermesProtocol().constraint([tool], "auto", kinds, parallel=False).stop_after_first


@pytest.mark.smollm2
def test_after_the_first_tag_only_tags_follow_on_openvino() -> None:
    from phi3_aipc import get_engine

    engine = get_engine("smollm2", "cpu")
    text = engine.generate(FRANCE, GenerationParams(max_new_tokens=60), constraint=CONSTRAINT).text
    assert "Paris <info>" in text, text
    tail = text[text.index("Paris <info>") :]
    # Tags, each after the separator, then nothing, one more separator, or a closing fence; the last tag may
    # be cut by max_new_tokens.
    tag = r"Paris <info>\{[^<]*\}</info>"
    assert re.fullmatch(rf"{tag}(\n{tag})*(\n|\n```)?(\nParis <info>[^<]*)?", tail), tail
