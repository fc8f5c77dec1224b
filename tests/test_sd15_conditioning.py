"""A1111's chunking of long prompts, weights per token, and every sampler name on the tiny pipeline."""

from __future__ import annotations

import pytest

from engines.errors import InvalidRequestError
from engines.sd15.conditioning import CHUNK_TOKENS, encode_pair, tokenize
from engines.sd15.prompt_syntax import parse_prompt
from engines.sd15.samplers import SAMPLERS, build_scheduler, sampler_name
from tiny_models import build_tiny_sd_pipeline, run_tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_sd_pipeline(0)


def ids(pipe, text: str) -> list[int]:
    return pipe.tokenizer(text, add_special_tokens=False).input_ids


def test_a_short_prompt_is_one_chunk_framed_and_padded_like_diffusers(pipe) -> None:
    tokenized = tokenize(pipe, parse_prompt("ink manga"))
    (tokens, weights), = tokenized.chunks
    expected = pipe.tokenizer("ink manga", padding="max_length", max_length=77, truncation=True).input_ids
    assert list(tokens) == expected and weights == (1.0,) * 77 and tokenized.token_count == len(ids(pipe, "ink manga"))


def test_weights_follow_their_tokens(pipe) -> None:
    (tokens, weights), = tokenize(pipe, parse_prompt("manga (ink:1.5) [manga]")).chunks
    manga, ink = ids(pipe, "manga"), ids(pipe, "ink")
    assert list(tokens[1:1 + len(manga) + len(ink)]) == manga + ink
    assert weights[1:1 + len(manga)] == (1.0,) * len(manga)
    assert weights[1 + len(manga):1 + len(manga) + len(ink)] == (1.5,) * len(ink)
    assert weights[1 + len(manga) + len(ink)] == pytest.approx(1 / 1.1, abs=1e-6)


def test_long_prompts_continue_in_new_chunks_and_break_after_a_recent_comma(pipe) -> None:
    word = ids(pipe, "manga")
    assert len(word) == 1  # the tiny vocabulary has "manga" as one token
    # 70 words, a comma, then 10 more: the chunk would fill at 75 with the comma 5 tokens back,
    # so A1111 ends the first chunk after the comma and the last words move to the second.
    text = "manga " * 70 + ", " + "manga " * 10
    first, second = tokenize(pipe, parse_prompt(text)).chunks
    comma = pipe.tokenizer.get_vocab()[",</w>"]
    assert first[0][71] == comma and all(t == pipe.tokenizer.eos_token_id for t in first[0][72:])
    assert list(second[0][1:11]) == word * 10
    # Without a comma nearby, a chunk is simply full at 75 tokens; nothing is dropped.
    full = tokenize(pipe, parse_prompt("manga " * 80))
    assert len(full.chunks) == 2 and full.token_count == 80
    assert list(full.chunks[0][0][1:1 + CHUNK_TOKENS]) == word * CHUNK_TOKENS
    assert list(full.chunks[1][0][1:6]) == word * 5


def test_break_starts_a_new_chunk_and_negative_gets_as_many_chunks(pipe) -> None:
    chunks = tokenize(pipe, parse_prompt("ink BREAK manga")).chunks
    assert len(chunks) == 2 and chunks[1][0][1] == ids(pipe, "manga")[0]
    positive, negative = encode_pair(pipe, parse_prompt("ink BREAK manga"), parse_prompt(""), clip_skip=2)
    assert positive.shape == negative.shape == (1, 154, pipe.text_encoder.config.hidden_size)


def test_an_empty_prompt_is_one_empty_chunk(pipe) -> None:
    (tokens, _), = tokenize(pipe, parse_prompt("")).chunks
    assert tokens[0] == pipe.tokenizer.bos_token_id and set(tokens[1:]) == {pipe.tokenizer.eos_token_id}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_runs_two_steps_on_the_tiny_pipeline(pipe, name: str) -> None:
    import numpy as np

    pipe.scheduler, original = build_scheduler(name, pipe.scheduler.config), pipe.scheduler
    try:
        image = run_tiny_pipeline(pipe, steps=2)
    finally:
        pipe.scheduler = original
    assert np.isfinite(image).all() and image.std() > 0


@pytest.mark.parametrize("spelling, name", [("dpm++ 2m karras", "DPM++ 2M Karras"), ("euler_a", "Euler a"),
                                            ("EULER A", "Euler a"), ("dpmpp_sde_karras", "DPM++ SDE Karras"),
                                            ("uni_pc", "UniPC")])
def test_sampler_names_are_read_in_any_common_spelling(spelling: str, name: str) -> None:
    assert sampler_name(spelling) == name


def test_an_unknown_sampler_lists_the_known_ones() -> None:
    with pytest.raises(InvalidRequestError, match="DPM\\+\\+ 2M Karras"):
        sampler_name("Warp 9")
