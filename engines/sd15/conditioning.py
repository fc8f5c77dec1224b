"""A1111's prompt conditioning for SD 1.5: weighted fragments, 75-token chunks and clip skip.

CLIP reads 77 tokens (a start token, 75 of text, an end token). A1111 never cuts a longer prompt:
1. each fragment of the parsed prompt (engines/sd15/prompt_syntax.py) is tokenized on its own,
   with embedding names expanded to their vectors' tokens;
2. the tokens fill chunks of 75; when a chunk is full and a comma came within its last 20 tokens,
   the chunk ends after that comma so a phrase is not split between chunks; ``BREAK`` ends a chunk;
3. each chunk is padded, framed with the start and end tokens and encoded separately, taking the
   hidden state ``clip_skip`` layers from the end (through the final layer norm, as A1111 does);
4. each token's vector is multiplied by its weight, then the chunk is rescaled to its mean before
   weighting, so emphasis shifts attention without changing the overall strength of the prompt;
5. the chunks are joined along the sequence: the UNet's cross-attention reads any length.
The prompt and the negative prompt get the same number of chunks (empty ones are added), because
classifier-free guidance runs them as one batch. With one chunk, no weights and clip skip 1 this is
exactly what diffusers computes itself: the engine then gives diffusers' pixels (tests check it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from engines.sd15.prompt_syntax import ParsedPrompt

CHUNK_TOKENS = 75
COMMA_BACKTRACK = 20


@dataclass
class _Chunk:
    tokens: list[int]
    weights: list[float]


@dataclass(frozen=True)
class TokenizedPrompt:
    chunks: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...]  # 77 token ids and 77 weights per chunk
    token_count: int  # tokens of text, before padding (what A1111 shows as "42/75")


def tokenize(pipe: Any, parsed: ParsedPrompt) -> TokenizedPrompt:
    """Steps 1 and 2: the prompt's 77-token chunks, each token with its weight."""
    tokenizer = pipe.tokenizer
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    comma = tokenizer.convert_tokens_to_ids(",</w>")  # not get_vocab(): that copies all 49,408 entries
    chunks: list[_Chunk] = []
    chunk = _Chunk([], [])
    last_comma = -1
    count = 0

    def close() -> None:
        nonlocal chunk, last_comma
        fill = CHUNK_TOKENS - len(chunk.tokens)
        chunks.append(_Chunk([start, *chunk.tokens, *[pad] * fill, end], [1.0, *chunk.weights, *[1.0] * fill, 1.0]))
        chunk, last_comma = _Chunk([], []), -1

    for fragment in parsed.fragments:
        if fragment.is_break:
            close()
            continue
        text = pipe.maybe_convert_prompt(fragment.text, tokenizer) if hasattr(pipe, "maybe_convert_prompt") else (
            fragment.text)
        ids = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids if text else []
        for token in ids:
            if token == comma:
                last_comma = len(chunk.tokens)
            elif (len(chunk.tokens) == CHUNK_TOKENS and last_comma != -1
                  and len(chunk.tokens) - last_comma <= COMMA_BACKTRACK):
                moved = _Chunk(chunk.tokens[last_comma + 1:], chunk.weights[last_comma + 1:])
                chunk = _Chunk(chunk.tokens[: last_comma + 1], chunk.weights[: last_comma + 1])
                close()
                chunk = moved
            if len(chunk.tokens) == CHUNK_TOKENS:
                close()
            chunk.tokens.append(token)
            chunk.weights.append(float(fragment.weight))
            count += 1
    if chunk.tokens or not chunks:
        close()
    return TokenizedPrompt(tuple((tuple(c.tokens), tuple(c.weights)) for c in chunks), count)


def _encode_chunk(pipe: Any, tokens: Sequence[int], weights: Sequence[float], clip_skip: int, device: Any) -> Any:
    """Steps 3 and 4 for one chunk: [1, 77, width]."""
    import torch

    encoder = pipe.text_encoder
    ids = torch.tensor([list(tokens)], device=device)
    if clip_skip <= 1:
        z = encoder(ids)[0]
    else:
        hidden = encoder(ids, output_hidden_states=True).hidden_states[-clip_skip]
        # transformers 5 flattened CLIPTextModel (no ``text_model``); 4.x nests it there.
        z = getattr(encoder, "text_model", encoder).final_layer_norm(hidden)
    if all(w == 1.0 for w in weights):
        return z
    scale = torch.tensor(list(weights), dtype=torch.float32, device=z.device)[None, :, None]
    original = z.float()
    weighted = original * scale
    before, after = original.mean(), weighted.mean()
    # A chunk whose mean is ~0 (a text encoder without a learned final bias, as in the tests'
    # random one) has no strength to keep; dividing by it would blow the vectors up.
    if after.abs() > 1e-3 * original.abs().mean():
        weighted = weighted * (before / after)
    return weighted.to(z.dtype)


def encode(pipe: Any, parsed: ParsedPrompt, clip_skip: int = 1, device: Any = None) -> Any:
    """The prompt's embeddings, [1, 77 * chunks, width]."""
    import torch

    tokenized = tokenize(pipe, parsed)
    if device is None:
        device = pipe._execution_device  # asks every module's offload hooks: once per job, not per chunk
    with torch.no_grad():
        parts = [_encode_chunk(pipe, tokens, weights, clip_skip, device) for tokens, weights in tokenized.chunks]
    return torch.cat(parts, dim=1)


def encode_pair(pipe: Any, prompt: ParsedPrompt, negative: ParsedPrompt, clip_skip: int = 1) -> tuple[Any, Any]:
    """Prompt and negative embeddings of the same length (the shorter gets empty chunks)."""
    import torch

    from engines.sd15.prompt_syntax import parse_prompt

    device = pipe._execution_device
    positive, opposite = encode(pipe, prompt, clip_skip, device), encode(pipe, negative, clip_skip, device)
    if positive.shape[1] != opposite.shape[1]:
        empty = encode(pipe, parse_prompt(""), clip_skip, device)
        while positive.shape[1] < opposite.shape[1]:
            positive = torch.cat([positive, empty], dim=1)
        while opposite.shape[1] < positive.shape[1]:
            opposite = torch.cat([opposite, empty], dim=1)
    return positive, opposite
