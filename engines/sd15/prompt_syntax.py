r"""AUTOMATIC1111's prompt syntax, as artists paste it from Civitai: weights, BREAK and LoRA tags.

The grammar, read left to right:
- ``(text)`` multiplies the weight of ``text`` by 1.1, ``[text]`` divides it by 1.1, ``(text:1.3)``
  multiplies it by 1.3; groups nest and multiply (``((a))`` is 1.21, ``((a:1.5))`` 1.65). The number
  follows the group's last ``:``, may have spaces around it, a sign or a leading dot (``(a:-.5)``);
- ``\(`` ``\)`` ``\[`` ``\]`` ``\\`` are the literal characters; any other backslash stays as it is;
- ``BREAK`` (uppercase, a whole word) ends the current 75-token chunk: a marker ``Fragment`` of its own;
- ``<lora:NAME>``, ``<lora:NAME:W>``, ``<lora:NAME:TE:UNET>`` (``<lyco:`` alike, any case) are cut from
  the text and returned as ``LoraTag``s, whatever brackets are around them;
- any other ``:`` is text (``score: high``, ``(re:zero)``, ``[score: high]``), and so is ``AND``.
Adjacent fragments of equal weight are merged, never across a BREAK. Text keeps its spaces as written
(as in A1111; the CLIP tokenizer ignores them) except at the ends of the prompt and around BREAK.
Weights are rounded to 6 decimals, so ``[(a)]`` is exactly 1.0 and merges with its neighbours.

Where we are stricter than A1111 we raise ``InvalidRequestError``: one sentence with a 1-based
character position and a short excerpt, because a silently half-weighted prompt is a worse failure
for an artist than a message. 1. Unclosed brackets (A1111 closes them at the end), stray closing ones
(A1111 ignores them) and brackets that do not nest (``(a [b) c]``). 2. ``(cat:1.2.3)``, ``(cat:1,2)``:
text after the last ``:`` made only of digits, signs, dots, commas and spaces clearly tries to be a
weight, so if it is not one number it is an error, not text. 3. Prompt editing (``[from:to:when]``,
``[to:when]``, ``[from::when]``: a ``[...]`` whose part after its last ``:`` looks like a number,
``[a:1.5]`` included) and alternation ``[a|b]``, not supported yet. 4. A LoRA tag without a name, with
a weight that is not a number or with more than two weights, and ``<hypernet:...>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from engines.errors import InvalidRequestError

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_NUMBERISH = r"[-+.,\s]*\d[-+.,\d\s]*"  # what a weight looks like, typos included; no backtracking
_WEIGHT_END = re.compile(rf":\s*({_NUMBER})\s*\)")
_WEIGHTISH_END = re.compile(rf":({_NUMBERISH})\)")
_BREAK = re.compile(r"\bBREAK\b")
_TAG_START = re.compile(r"<(lora|lyco|hypernet):", re.IGNORECASE)
_ESCAPABLE = frozenset("()[]\\")
_EMPHASIS = {"(": 1.1, "[": 1 / 1.1}
_CLOSER = {"(": ")", "[": "]"}
_DECIMALS = 6


@dataclass(frozen=True)
class LoraTag:
    """A ``<lora:...>`` tag: which LoRA to apply and how strongly."""

    name: str
    weight: float  # text-encoder weight (and unet weight when unet_weight is None)
    unet_weight: float | None = None


@dataclass(frozen=True)
class Fragment:
    """A run of text sharing one weight; the encoder tokenizes each fragment on its own."""

    text: str
    weight: float
    is_break: bool = False  # a BREAK marker; text "" and weight 1.0 then


_BREAK_MARKER = Fragment("", 1.0, is_break=True)


@dataclass(frozen=True)
class ParsedPrompt:
    """What ``parse_prompt`` understood: the weighted text and the LoRAs to apply."""

    fragments: tuple[Fragment, ...]
    loras: tuple[LoraTag, ...]

    @property
    def plain_text(self) -> str:
        """The words without weights, brackets, BREAK or LoRA tags, spaces collapsed (captions, logs)."""
        return " ".join("".join(" " if f.is_break else f.text for f in self.fragments).split())


def parse_prompt(text: str) -> ParsedPrompt:
    """The prompt's weighted fragments and LoRA tags; ``InvalidRequestError`` says where it is wrong."""
    return _Scanner(text).run()


def format_fragments(fragments: Iterable[Fragment]) -> str:
    """Normalised A1111 text for ``fragments``: one ``(text:weight)`` per weighted run, nothing nested.

    Shows the artist what the parser understood; ``parse_prompt`` of the result gives the same fragments.
    """
    parts = []
    for fragment in fragments:
        text = "".join("\\" + char if char in _ESCAPABLE else char for char in fragment.text)
        # 'BRE<lora:x>AK' leaves the text 'BREAK', which must not read back as a BREAK (nor '<lora:' as
        # a tag): an empty group '()' is the grammar's no-op, so it splits them and changes no weight.
        text = _TAG_START.sub(lambda tag: "<()" + tag.group(0)[1:], _BREAK.sub("BRE()AK", text))
        if fragment.is_break:
            parts.append(" BREAK ")
        elif fragment.weight == 1.0:
            parts.append(text)
        else:
            parts.append(f"({text}:{_format_number(fragment.weight)})")
    return "".join(parts).strip()


def _format_number(weight: float) -> str:
    # Fixed point, never an exponent: '1e-06' would not read back as a weight.
    text = f"{weight:.{_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-", "-0") else text


@dataclass
class _Group:
    bracket: str  # "(" or "["
    at: int  # index of the bracket in the prompt
    first_piece: int  # the pieces from this index on lie inside the group
    last_colon: int = -1  # "[" only: its last ':' at its own level, the sign of prompt editing


class _Scanner:
    """One pass over the prompt; a group's multiplier is applied to its pieces when it closes,
    because ``(text:1.3)`` only says its weight at the end."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pieces: list[Fragment] = []  # unrounded, unmerged; weights grow as groups close
        self.loras: list[LoraTag] = []
        self.groups: list[_Group] = []
        self.buffer: list[str] = []

    def run(self) -> ParsedPrompt:
        text, i = self.text, 0
        while i < len(text):
            char = text[i]
            inner = self.groups[-1].bracket if self.groups else ""
            if char == "\\" and text[i + 1 : i + 2] in _ESCAPABLE:
                self.buffer.append(text[i + 1])
                i += 2
                continue
            if char in "([":
                self._flush()
                self.groups.append(_Group(char, i, len(self.pieces)))
            elif char in ")]":
                self._close(i, char, None)
            elif char == ":" and inner == "(" and (match := _WEIGHT_END.match(text, i)):
                self._close(i, ")", float(match.group(1)))
                i = match.end()
                continue
            elif char == ":" and inner == "(" and (match := _WEIGHTISH_END.match(text, i)):
                at, weight = text.index(match.group(1).strip(), i), " ".join(match.group(1).split())
                raise InvalidRequestError(f"The weight '{weight}' at {self._where(at)} "
                                          "is not a number: write one number, like '(cat:1.2)'.")
            elif char == "|" and inner == "[":
                raise InvalidRequestError(f"The '|' at {self._where(i)} is A1111 alternation '[a|b]', which "
                                          "is not supported yet: keep one of the alternatives.")
            elif char == "<" and (match := _TAG_START.match(text, i)):
                i = self._tag(i, match)
                continue
            elif char == "B" and _BREAK.match(text, i):
                self._flush()
                self.pieces.append(_BREAK_MARKER)
                i += len("BREAK")
                continue
            else:
                if char == ":" and inner == "[":
                    self.groups[-1].last_colon = i
                self.buffer.append(char)
            i += 1
        self._flush()
        if self.groups:
            group = self.groups[-1]
            raise InvalidRequestError(f"The '{group.bracket}' at {self._where(group.at)} is never closed: "
                                      f"close it with '{_CLOSER[group.bracket]}' or write "
                                      f"'\\{group.bracket}' for a literal bracket.")
        return ParsedPrompt(_tidy(self.pieces), tuple(self.loras))

    def _flush(self) -> None:
        if self.buffer:
            self.pieces.append(Fragment("".join(self.buffer), 1.0))
            self.buffer.clear()

    def _close(self, i: int, closer: str, weight: float | None) -> None:
        """Close the innermost group at ``text[i]``, multiplying its pieces by ``weight`` or 1.1 or 1/1.1."""
        opener = "(" if closer == ")" else "["
        if not self.groups:
            raise InvalidRequestError(f"The '{closer}' at {self._where(i)} has no '{opener}' before it: "
                                      f"remove it or write '\\{closer}' for a literal bracket.")
        group = self.groups.pop()
        if group.bracket != opener:
            raise InvalidRequestError(f"The '{closer}' at {self._where(i)} closes the '{group.bracket}' at "
                                      f"character {group.at + 1}: close that one with "
                                      f"'{_CLOSER[group.bracket]}' first.")
        when = self.text[group.last_colon + 1 : i]
        if group.last_colon >= 0 and re.fullmatch(_NUMBERISH, when):
            raise InvalidRequestError(f"The '[...]' at {self._where(group.at)} is A1111 prompt editing "
                                      "'[from:to:when]', which is not supported yet: keep the words you want "
                                      "and use '(text:1.2)' for a weight.")
        self._flush()
        multiplier = _EMPHASIS[group.bracket] if weight is None else weight
        for k in range(group.first_piece, len(self.pieces)):
            piece = self.pieces[k]
            self.pieces[k] = piece if piece.is_break else replace(piece, weight=piece.weight * multiplier)

    def _tag(self, i: int, start: re.Match) -> int:
        """Cut the LoRA tag at ``text[i]`` out of the text; the index after it."""
        end = self.text.find(">", start.end())
        body = self.text[start.end() : end]
        if end < 0 or "<" in body or "\n" in body:
            raise InvalidRequestError(f"The '{start.group(0)}' tag at {self._where(i)} is never closed: "
                                      "end it with '>'.")
        tag = self.text[i : end + 1]
        if start.group(1).lower() == "hypernet":
            raise InvalidRequestError(f"Hypernetworks are not supported: replace the tag '{tag}' at "
                                      f"character {i + 1} with a LoRA.")
        name, *weights = (part.strip() for part in body.split(":"))
        if not name:
            raise InvalidRequestError(f"The LoRA tag '{tag}' at character {i + 1} has no name: write it "
                                      "like '<lora:name:0.8>'.")
        if len(weights) > 2:
            raise InvalidRequestError(f"The LoRA tag '{tag}' at character {i + 1} has more than two weights: "
                                      "write '<lora:name:weight>' or '<lora:name:text_weight:unet_weight>'.")
        for weight in weights:
            if not re.fullmatch(_NUMBER, weight):
                raise InvalidRequestError(f"The LoRA tag '{tag}' at character {i + 1} has weight '{weight}', "
                                          "which is not a number: write it like '<lora:name:0.8>'.")
        self.loras.append(LoraTag(name, *([float(weight) for weight in weights] or [1.0])))
        return end + 1

    def _where(self, i: int) -> str:
        """'character N (near '...')' for ``text[i]``, N counted from 1, the excerpt on one line."""
        start, end = max(0, i - 12), min(len(self.text), i + 13)
        near = ("…" if start else "") + self.text[start:end] + ("…" if end < len(self.text) else "")
        return f"character {i + 1} (near '{' '.join(near.split())}')"


def _tidy(pieces: list[Fragment]) -> tuple[Fragment, ...]:
    """Round weights, drop empty text, merge equal neighbours within a chunk, trim the chunks' ends."""
    chunks: list[list[Fragment]] = [[]]
    for piece in pieces:
        weight, chunk = round(piece.weight, _DECIMALS) + 0.0, chunks[-1]  # + 0.0 turns -0.0 into 0.0
        if piece.is_break:
            chunks.append([])
        elif piece.text and chunk and chunk[-1].weight == weight:
            chunk[-1] = Fragment(chunk[-1].text + piece.text, weight)
        elif piece.text:
            chunk.append(Fragment(piece.text, weight))
    fragments: list[Fragment] = []
    for index, chunk in enumerate(chunks):
        while chunk and not chunk[0].text.strip():
            chunk.pop(0)
        while chunk and not chunk[-1].text.strip():
            chunk.pop()
        if chunk:
            chunk[0] = replace(chunk[0], text=chunk[0].text.lstrip())
            chunk[-1] = replace(chunk[-1], text=chunk[-1].text.rstrip())
        fragments.extend([_BREAK_MARKER] * (index > 0) + chunk)
    if not any(fragment.text for fragment in fragments):
        return (Fragment("", 1.0),)
    return tuple(fragments)
