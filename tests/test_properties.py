"""Property tests (hypothesis): segment assignment of rendered responses, and the output parser."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from reliability_support import load_tiny_processor

from scale_vlm.data.formats import ChatExample
from scale_vlm.data.render import render_example
from scale_vlm.segments import DEFAULT_TAGS, SEGMENT_ANSWER, SEGMENT_PROMPT, SEGMENT_THINK

TAG_FRAGMENTS = ["<", ">", "</", "<think", "think>", "</think", "<answer", "answer>", "</ans", "<THINK>", "<Answer>",
                 "< think >", "</ answer>", "<|im_end|", "im_start", "\n", " ", "\t", "```", "\u00a0", "\u3000"]
TAGS = (DEFAULT_TAGS.think_open, DEFAULT_TAGS.think_close, DEFAULT_TAGS.answer_open, DEFAULT_TAGS.answer_close)


def _no_full_tag(text: str) -> bool:
    return not any(tag in text for tag in TAGS) and "<|" not in text


# unicode text mixed with tag-like fragments that are not full tags (and no chat-template special tokens)
segment_text = st.lists(
    st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), st.sampled_from(TAG_FRAGMENTS)),
    min_size=1, max_size=8,
).map("".join).filter(lambda s: s.strip() != "" and _no_full_tag(s))
space = st.sampled_from(["", " ", "\n", "\n\n", " \t"])


@pytest.fixture(scope="module")
def processor():
    return load_tiny_processor()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.filter_too_much])
@given(think=segment_text, answer=segment_text, gap=space)
def test_segments_partition_the_response(processor, think, answer, gap):
    tokenizer = processor.tokenizer
    response = f"<think>{think}</think>{gap}<answer>{answer}</answer>"
    example = ChatExample(images=[], prompt_messages=[{"role": "user", "content": [{"type": "text", "text": "Q?"}]}],
                          response=response)
    r = render_example(example, processor)
    segs = r.segment_ids
    assert len(segs) == len(r.input_ids) == len(r.labels)
    # every token is in exactly one segment; the supervised tokens form one contiguous run: think, then answer
    assert set(segs) <= {SEGMENT_PROMPT, SEGMENT_THINK, SEGMENT_ANSWER}
    supervised = [i for i, s in enumerate(segs) if s != SEGMENT_PROMPT]
    assert supervised == list(range(supervised[0], supervised[-1] + 1))
    run = [segs[i] for i in supervised]
    n_think = run.count(SEGMENT_THINK)
    assert n_think > 0 and run == [SEGMENT_THINK] * n_think + [SEGMENT_ANSWER] * (len(run) - n_think)
    assert all((lab == -100) == (s == SEGMENT_PROMPT) for lab, s in zip(r.labels, segs))
    # the decoded think + answer tokens give back the (stripped) response, then the end-of-turn token
    think_ids = [t for t, s in zip(r.input_ids, segs) if s == SEGMENT_THINK]
    answer_ids = [t for t, s in zip(r.input_ids, segs) if s == SEGMENT_ANSWER]
    assert answer_ids[-1] == tokenizer.eos_token_id
    decoded = tokenizer.decode(think_ids + answer_ids[:-1], skip_special_tokens=False)
    assert decoded == response.strip()
    # every answer character is in the answer segment: the think tokens decode to a prefix ending in </think>
    think_text = tokenizer.decode(think_ids)
    assert response.strip().startswith(think_text)
    assert think_text.endswith("</think>") or len(think_text) < len(f"<think>{think}</think>")
    answer_start = response.strip().index("</think>") + len("</think>")
    assert len(think_text) <= answer_start


@settings(max_examples=50, deadline=None)
@given(think=segment_text, answer=segment_text)
@example(think="<\rANSWER>", answer="0")  # found by hypothesis: "\r" is whitespace to the parser's \s*
@example(think="0", answer="<\u3000/answer>")
def test_parser_round_trips_wrap(think, answer):
    from scale_vlm.parsing import is_well_formed, parse_output

    parsed = parse_output(DEFAULT_TAGS.wrap(think, answer))
    # the parser is lenient about case and whitespace inside brackets (its patterns use \s*, so "\r" and U+3000
    # count), so fragments like "<THINK>" or "<\rANSWER>" can be tags for it
    lenient_tag = any(frag in re.sub(r"\s", "", (think + answer).lower())
                      for frag in ("<think>", "</think>", "<answer>", "</answer>"))
    if not lenient_tag:
        assert parsed.think == think.strip()
        assert parsed.answer == answer.strip()
        assert parsed.has_think and parsed.answer_source == "tag"
        assert not parsed.malformed
        assert is_well_formed(DEFAULT_TAGS.wrap(think, answer))


@settings(max_examples=100, deadline=None)
@given(text=st.text(st.one_of(st.characters(), st.sampled_from("<>/ \n")), max_size=200)
       | st.lists(st.sampled_from(TAG_FRAGMENTS + list(TAGS) + ["x", "A"]), max_size=30).map("".join))
def test_parser_never_raises(text):
    from scale_vlm.parsing import is_well_formed, parse_output

    parsed = parse_output(text)
    assert parsed.answer is None or (isinstance(parsed.answer, str) and parsed.answer == parsed.answer.strip())
    assert parsed.answer_source in ("tag", "truncated", "bare", "none")
    assert parsed.malformed == bool(parsed.reason)
    assert isinstance(is_well_formed(text), bool)
