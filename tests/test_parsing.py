"""The output parser: one table of outputs with their expected think, answer, malformed flag and source."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scale_vlm.parsing import ParsedOutput, is_well_formed, parse_output, strip_tags
from scale_vlm.segments import DEFAULT_TAGS, Tags

# (output, think, answer, malformed, answer_source)
CASES = [
    ("<think>red square</think><answer>A</answer>", "red square", "A", False, "tag"),
    ("<think>\n  red square \n</think>\n\n<answer>  A \n</answer>\n", "red square", "A", False, "tag"),
    ("<THINK>x</Think><ANSWER>B</Answer>", "x", "B", False, "tag"),
    ("< think >x</ think >< answer >B</ answer >", "x", "B", False, "tag"),
    ("<think>数一数：三个</think><answer>３</answer>", "数一数：三个", "３", False, "tag"),
    ("<think>café</think><answer>Ünïcode ✓</answer>", "café", "Ünïcode ✓", False, "tag"),
    # missing think: answer readable, not malformed (the format check is is_well_formed)
    ("<answer>B</answer>", None, "B", False, "tag"),
    # trailing text after the answer is ignored by the parser
    ("<think>x</think><answer>B</answer> I hope this helps.", "x", "B", False, "tag"),
    # several answer blocks: the last one counts, malformed
    ("<think>x</think><answer>A</answer><answer>C</answer>", "x", "C", True, "tag"),
    ("<think>x</think><answer>A</answer> wait <answer> D </answer>", "x", "D", True, "tag"),
    # truncated generation: partial answer kept for scoring, malformed
    ("<think>x</think><answer>B", "x", "B", True, "truncated"),
    ("<think>x</think><answer>", "x", None, True, "none"),
    # unclosed think with no answer: all reasoning, nothing to score
    ("<think>still counting the squares", "still counting the squares", None, True, "none"),
    ("<think>abc<answer>B</answer>", "abc", "B", True, "tag"),
    # misordered: answer before think
    ("<answer>B</answer><think>x</think>", "x", "B", True, "tag"),
    # closing think without opening (template put <think> in the prompt)
    ("counting</think><answer>3</answer>", "counting", "3", True, "tag"),
    # answer tags inside the think block are reasoning, not the answer
    ("<think>maybe <answer>A</answer>? no</think><answer>B</answer>", "maybe <answer>A</answer>? no", "B", True, "tag"),
    # nested answer tags
    ("<think>x</think><answer><answer>B</answer></answer>", "x", "B", True, "tag"),
    # two think blocks
    ("<think>x</think><think>y</think><answer>B</answer>", "x", "B", True, "tag"),
    # empty answer block
    ("<think>x</think><answer>   </answer>", "x", "", True, "tag"),
    # bare replies: scored as they are, malformed
    ("B", None, "B", True, "bare"),
    ("  The answer is 3.  ", None, "The answer is 3.", True, "bare"),
    ("<think>x</think> B", "x", "B", True, "bare"),
    ("", None, None, True, "none"),
    ("   \n", None, None, True, "none"),
]


@pytest.mark.parametrize("text, think, answer, malformed, source", CASES)
def test_parse_output_table(text, think, answer, malformed, source):
    parsed = parse_output(text)
    assert (parsed.think, parsed.answer, parsed.malformed, parsed.answer_source) == (think, answer, malformed, source)
    assert (parsed.reason == "") == (not malformed)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("<think>x</think><answer>A</answer><answer>C</answer>", "2 answer blocks, the last one is used"),
        ("<think>x</think><answer>B", "unclosed <answer>"),
        ("<answer>B</answer><think>x</think>", "answer before think"),
        ("B", "no <answer> block"),
        ("<think>abc", "unclosed <think>; no <answer> block"),
        ("x</think><answer>B</answer>", "</think> without <think>"),
        ("<think>x</think><answer>A</answer></answer>", "</answer> without <answer>"),
    ],
)
def test_malformed_reasons(text, reason):
    assert parse_output(text).reason == reason


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>x</think><answer>B</answer>", True),
        ("  <think>x</think>\n<answer>B</answer>\n", True),
        ("<THINK></THINK><ANSWER>B</ANSWER>", True),  # an empty think still has the format
        ("<answer>B</answer>", False),
        ("<think>x</think><answer></answer>", False),
        ("<think>x</think><answer>B</answer> extra", False),
        ("Sure! <think>x</think><answer>B</answer>", False),
        ("<think>x</think> so <answer>B</answer>", False),
        ("<think>x</think><answer>A</answer><answer>B</answer>", False),
        ("<answer>B</answer><think>x</think>", False),
        ("<think>x</think><answer>B", False),
        ("<think>x<answer>A</answer></think><answer>B</answer>", False),
        ("B", False),
    ],
)
def test_is_well_formed(text, expected):
    assert is_well_formed(text) is expected
    if expected:  # well-formed implies a clean parse with a think block
        parsed = parse_output(text)
        assert not parsed.malformed and parsed.has_think


def test_custom_tags():
    tags = Tags("<reasoning>", "</reasoning>", "<final>", "</final>")
    parsed = parse_output("<Reasoning>two plus one</Reasoning><FINAL>3</FINAL>", tags)
    assert parsed == ParsedOutput("two plus one", "3", False, "", True, "tag", 1)
    assert is_well_formed("<reasoning>a</reasoning><final>3</final>", tags)
    # the default tags are plain text under other tags
    assert parse_output("<think>a</think><answer>3</answer>", tags).answer_source == "bare"


def test_strip_tags_and_type_error():
    assert strip_tags("<think>a</think><ANSWER>b</answer>").split() == ["a", "b"]
    with pytest.raises(TypeError, match="expects a str"):
        parse_output(None)  # type: ignore[arg-type]


_TAG_FREE = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60
).filter(lambda s: "<" not in s or strip_tags(s) == s)


@settings(max_examples=200, deadline=None)
@given(think=_TAG_FREE, answer=_TAG_FREE.filter(lambda s: s.strip() != ""))
def test_roundtrip_property(think, answer):
    parsed = parse_output(DEFAULT_TAGS.wrap(think, answer))
    assert not parsed.malformed
    assert parsed.think == think.strip()
    assert parsed.answer == answer.strip()
    assert is_well_formed(DEFAULT_TAGS.wrap(think, answer))


# -- untagged answers and family formats --------------------------------------------------------------------------

def test_untagged_answer_is_read_only_with_the_option():
    from scale_vlm.parsing import SOURCE_UNTAGGED

    text = "<think>green square, option B</think> Final Answer: (B)"
    plain = parse_output(text)
    assert plain.malformed and plain.answer_source == "bare" and plain.answer == "Final Answer: (B)"
    assert not is_well_formed(text)
    tags = Tags(untagged_answer=True)
    parsed = parse_output(text, tags)
    assert (parsed.answer, parsed.answer_source, parsed.malformed, parsed.think) == (
        "Final Answer: (B)", SOURCE_UNTAGGED, False, "green square, option B")
    assert is_well_formed(text, tags)
    assert not is_well_formed("preamble " + text, tags)
    empty = parse_output("<think>only reasoning</think>  ", tags)
    assert empty.answer is None and empty.malformed and "nothing after </think>" in empty.reason
    assert not is_well_formed("<think>only reasoning</think>  ", tags)
    # tagged outputs keep the tagged rules under the option
    assert parse_output("<think>r</think><answer>(C)</answer>", tags).answer_source == "tag"


def test_as_tagged_rewrites_family_delimiters_and_an_opened_think():
    from scale_vlm.parsing import ReasoningFormat, as_tagged

    gemma4 = ReasoningFormat("<|channel>thought", "<channel|>", from_field=True)
    text = as_tagged("<|channel>thought\nthe square is red\n<channel|><answer>(A)</answer>", gemma4)
    assert text == "<think>\nthe square is red\n</think><answer>(A)</answer>"
    assert is_well_formed(text) and parse_output(text).answer == "(A)"
    qwen35 = ReasoningFormat("<think>", "</think>", opened_by_prompt=True)
    opened = as_tagged("red\n</think>\n\n<answer>(A)</answer>", qwen35)
    assert opened == "<think>red\n</think>\n\n<answer>(A)</answer>" and is_well_formed(opened)
    assert as_tagged("<think>r</think><answer>A</answer>", qwen35) == "<think>r</think><answer>A</answer>"
    custom = Tags("<reasoning>", "</reasoning>", "<final>", "</final>")
    assert as_tagged("<|channel>thought x<channel|><final>A</final>", gemma4, custom) == \
        "<reasoning> x</reasoning><final>A</final>"
    assert as_tagged("anything", None) == "anything"
