"""A1111 prompt syntax: a table of prompts and the fragments they mean, every malformed prompt gets a
sentence that says where, and format -> parse gives the same fragments back."""

from __future__ import annotations

import random

import pytest

from engines.errors import InvalidRequestError
from engines.sd15.prompt_syntax import Fragment, LoraTag, ParsedPrompt, format_fragments, parse_prompt

B = "BREAK"  # a BREAK marker in the expected fragments
DOWN = 1 / 1.1

# (prompt, expected fragments as (text, weight) or B)
GRAMMAR = [
    ("a girl, ink", [("a girl, ink", 1.0)]),
    ("(a)", [("a", 1.1)]),
    ("((a))", [("a", 1.21)]),
    ("[a]", [("a", DOWN)]),
    ("[[a]]", [("a", DOWN * DOWN)]),
    ("(a:1.5)", [("a", 1.5)]),
    ("((a:1.5))", [("a", 1.65)]),
    ("[(a:1.5)]", [("a", 1.5 * DOWN)]),
    ("a (b:1.2) [c] d", [("a ", 1.0), ("b", 1.2), (" ", 1.0), ("c", DOWN), (" d", 1.0)]),
    ("x ( word : 1.3 ) y", [("x ", 1.0), (" word ", 1.3), (" y", 1.0)]),
    ("(a:-0.5)", [("a", -0.5)]),
    ("(a:.5)", [("a", 0.5)]),
    ("(a:+2)", [("a", 2.0)]),
    ("(a:0)", [("a", 0.0)]),
    ("(a (b:2))", [("a ", 1.1), ("b", 2.2)]),
    ("(a (b:2) c:1.5)", [("a ", 1.5), ("b", 3.0), (" c", 1.5)]),
    ("(a:1.2:1.3)", [("a:1.2", 1.3)]),  # the weight follows the last ':'
    ("(a:1.5 (b))", [("a:1.5 ", 1.1), ("b", 1.21)]),  # a number not before ')' is text
    ("a [(b)] c", [("a b c", 1.0)]),  # 1.1 / 1.1 rounds to exactly 1.0 and merges
    ("[[[[a]]]]", [("a", 0.683013)]),
    # escapes
    (r"hat \(blue\)", [("hat (blue)", 1.0)]),
    (r"\[x\] \\ y", [("[x] \\ y", 1.0)]),
    (r"(a\)b)", [("a)b", 1.1)]),
    (r"a\b \n c:\d", [(r"a\b \n c:\d", 1.0)]),  # a lone backslash stays
    ("trailing \\", [("trailing \\", 1.0)]),
    # BREAK
    ("a BREAK b", [("a", 1.0), B, ("b", 1.0)]),
    ("(a) BREAK (a)", [("a", 1.1), B, ("a", 1.1)]),  # never merged across a BREAK
    ("(a BREAK b:1.2)", [("a", 1.2), B, ("b", 1.2)]),
    ("a BREAK BREAK b", [("a", 1.0), B, B, ("b", 1.0)]),
    ("BREAK a", [B, ("a", 1.0)]),
    ("a,BREAK,b", [("a,", 1.0), B, (",b", 1.0)]),
    ("BREAKfast, aBREAK, Break, BREAK_", [("BREAKfast, aBREAK, Break, BREAK_", 1.0)]),
    # merging and whitespace
    ("(a)(b)", [("ab", 1.1)]),
    ("(a) (b)", [("a", 1.1), (" ", 1.0), ("b", 1.1)]),
    ("a () b", [("a  b", 1.0)]),
    ("  (a),  b  ", [("a", 1.1), (",  b", 1.0)]),
    ("a\nb", [("a\nb", 1.0)]),
    # LoRA tags leave their place in the text
    ("a, <lora:foo:0.8>", [("a,", 1.0)]),
    ("<lora:foo> a", [("a", 1.0)]),
    ("(a <lora:x:0.5> b:1.2)", [("a  b", 1.2)]),
    ("<lyco:x:0.3>, (b)", [(", ", 1.0), ("b", 1.1)]),
    ("<3 and >_<, a < b > c", [("<3 and >_<, a < b > c", 1.0)]),  # not tags
    ("BRE<lora:x>AK <<lora:x>lora:y>", [("BREAK <lora:y>", 1.0)]),  # a cut tag joins no syntax
    # colons and pipes that are text
    ("score: high, re:zero", [("score: high, re:zero", 1.0)]),
    ("(re:zero)", [("re:zero", 1.1)]),
    ("[score: high]", [("score: high", DOWN)]),
    ("(cat:1e2)", [("cat:1e2", 1.1)]),  # exponents are not numbers, and not numberish either
    ("a|b AND c", [("a|b AND c", 1.0)]),
    # unicode
    ("(猫耳:1.2), 少女", [("猫耳", 1.2), (", 少女", 1.0)]),
    ("[セーラー服]", [("セーラー服", DOWN)]),
    # empty
    ("", [("", 1.0)]),
    ("   \n ", [("", 1.0)]),
    ("<lora:a:1> <lora:b:0.5>", [("", 1.0)]),
    ("BREAK", [("", 1.0)]),
    ("()", [("", 1.0)]),
]


def _flat(parsed: ParsedPrompt) -> list:
    return [B if f.is_break else (f.text, f.weight) for f in parsed.fragments]


def _expected(rows: list) -> list:
    return [B if row == B else (row[0], pytest.approx(row[1], abs=1e-6)) for row in rows]


@pytest.mark.parametrize("prompt, fragments", GRAMMAR, ids=[repr(p) for p, _ in GRAMMAR])
def test_grammar(prompt, fragments):
    parsed = parse_prompt(prompt)
    assert _flat(parsed) == _expected(fragments)
    for fragment in parsed.fragments:
        if fragment.is_break:
            assert (fragment.text, fragment.weight) == ("", 1.0)


@pytest.mark.parametrize("prompt", [p for p, _ in GRAMMAR], ids=[repr(p) for p, _ in GRAMMAR])
def test_format_round_trips(prompt):
    parsed = parse_prompt(prompt)
    assert parse_prompt(format_fragments(parsed.fragments)).fragments == parsed.fragments


def test_format_is_flat_and_readable():
    parsed = parse_prompt(r"((a)), [b], (c:1.5) BREAK \(d\) (e:1.2.5:0.9)")
    assert format_fragments(parsed.fragments) == r"(a:1.21), (b:0.909091), (c:1.5) BREAK \(d\) (e:1.2.5:0.9)"
    assert format_fragments(parse_prompt("").fragments) == ""
    spliced = parse_prompt("(BRE<lora:x>AK <<lora:x>lora:y>)").fragments  # '()' keeps the text text
    assert format_fragments(spliced) == "(BRE()AK <()lora:y>:1.1)"
    assert format_fragments([Fragment("tiny", 1e-7), Fragment("x", -1e-7)]) == "(tiny:0)(x:0)"


def test_random_prompts_round_trip():
    """A property over many small random prompts: whatever parses, its formatted text parses the same."""
    atoms = ["a", "cat", " ", ", ", "(", ")", "[", "]", ":", ":1.2", ":0.5)", ")", "\\(", "\\", "BREAK",
             " BREAK ", "<lora:x:0.5>", "|", "1", ".", "猫", "\n"]
    rng = random.Random(1234)
    parsed_count = 0
    for _ in range(3000):
        prompt = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 12)))
        try:
            parsed = parse_prompt(prompt)
        except InvalidRequestError:
            continue
        parsed_count += 1
        assert parse_prompt(format_fragments(parsed.fragments)).fragments == parsed.fragments, prompt
    assert parsed_count > 300  # the property was really exercised


# (prompt, expected LoRA tags)
LORAS = [
    ("<lora:foo>", [LoraTag("foo", 1.0)]),
    ("<lora:foo:0.8>", [LoraTag("foo", 0.8)]),
    ("<lyco:foo:0.8>", [LoraTag("foo", 0.8)]),
    ("<LoRA:Foo: 0.7 >", [LoraTag("Foo", 0.7)]),
    ("<lora:my style v1.5-final_(x):.6>", [LoraTag("my style v1.5-final_(x)", 0.6)]),
    ("<lora:foo:1:0.5>", [LoraTag("foo", 1.0, 0.5)]),
    ("<lora:foo:-1>", [LoraTag("foo", -1.0)]),
    ("a <lora:x:0.5> (b <lora:y:1.2:0>:1.3) BREAK <lyco:z>", [LoraTag("x", 0.5), LoraTag("y", 1.2, 0.0),
                                                               LoraTag("z", 1.0)]),
    ("<lora:x:0.5> <lora:x:0.5>", [LoraTag("x", 0.5), LoraTag("x", 0.5)]),  # as written; the caller decides
    ("(a:1.2)", []),
]


@pytest.mark.parametrize("prompt, loras", LORAS, ids=[p for p, _ in LORAS])
def test_lora_tags(prompt, loras):
    assert list(parse_prompt(prompt).loras) == loras


# (prompt, the 1-based position the sentence must name, a word it must contain)
MALFORMED = [
    ("a cat (smiling", 7, "never closed"),
    ("a [cat", 3, "never closed"),
    ("((a)", 1, "never closed"),
    ("a cat)", 6, "no '('"),
    ("a ]", 3, "no '['"),
    ("(a]", 3, "closes the '('"),
    ("(a [b) c]", 6, "closes the '['"),
    ("(cat:1.2.3)", 6, "not a number"),
    ("(cat: 1,2 )", 7, "not a number"),
    ("(cat:1 2)", 6, "not a number"),
    ("(a:--1)", 4, "not a number"),
    ("<lora:foo:abc>", 1, "not a number"),
    ("x <lora:foo:0.8", 3, "never closed"),
    ("x <lora:foo:0.8 <lora:bar:1>", 3, "never closed"),
    ("<lora:foo:1:2:3>", 1, "more than two"),
    ("<lora: :1>", 1, "no name"),
    ("a, <lora:foo:0.8:dyn=4>", 4, "not a number"),
    ("<hypernet:foo:1>", 1, "Hypernetworks"),
    ("[a:1.5]", 1, "prompt editing"),
    ("a, [cat:dog:0.5]", 4, "prompt editing"),
    ("[cat::10]", 1, "prompt editing"),
    ("[dog: 0.25 ]", 1, "prompt editing"),
    ("(a [b:c:0.5])", 4, "prompt editing"),
    ("[cat|dog]", 5, "alternation"),
    ("(a) [b|c|d]", 7, "alternation"),
]


@pytest.mark.parametrize("prompt, position, words", MALFORMED, ids=[p for p, _, _ in MALFORMED])
def test_malformed_prompt_gets_one_sentence_saying_where(prompt, position, words):
    with pytest.raises(InvalidRequestError) as caught:
        parse_prompt(prompt)
    sentence = str(caught.value)
    assert f"character {position}" in sentence
    assert words in sentence
    assert sentence.endswith(".") and "\n" not in sentence and len(sentence) < 220


def test_sentence_quotes_a_short_excerpt_around_the_spot():
    prompt = "masterpiece, best quality, 1girl, (smiling, looking at viewer, outdoors, sunset"
    where = r"character 35 \(near '…ity, 1girl, \(smiling, loo…'\)"
    with pytest.raises(InvalidRequestError, match=where):
        parse_prompt(prompt)


def test_plain_text_drops_weights_brackets_breaks_and_tags():
    parsed = parse_prompt("(masterpiece:1.2), [blurry] BREAK\n猫 <lora:x:1>, hat \\(blue\\)")
    assert parsed.plain_text == "masterpiece, blurry 猫 , hat (blue)"
    assert parse_prompt("").plain_text == ""


def test_values_are_frozen():
    parsed = parse_prompt("(a) <lora:x:1>")
    with pytest.raises(AttributeError):
        parsed.fragments[0].weight = 2.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        parsed.loras[0].name = "y"  # type: ignore[misc]
