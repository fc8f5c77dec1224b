"""Prompt travel in the syntax sd-webui-animatediff users write: the prompt changes over the frames.

    masterpiece, 1girl, red jacket          <- the head: every frame's prompt starts with it
    0: closed eyes                          <- from frame 0
    8: open eyes, smile                     <- by frame 8 (the frames between blend from one to the next)
    16: looking at viewer
    city street at night                    <- the tail: every frame's prompt ends with it

A line ``N: text`` is a keyframe; lines before the first keyframe are the head, lines after the last
one the tail (lines between keyframes belong to the keyframe above them). Each keyframe's prompt is
``head, text, tail``; the frames between two keyframes get embeddings interpolated between theirs
(FreeNoise's frame-indexed prompts). A prompt without keyframe lines is one prompt for every frame,
its lines joined as A1111 joins them. A keyframe written ``N:`` alone is the head and tail only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engines.errors import InvalidRequestError

_KEYFRAME = re.compile(r"^\s*(\d+)\s*:(.*)$")


@dataclass(frozen=True)
class PromptTravel:
    keyframes: tuple[int, ...]  # ascending frame numbers, the first always 0
    prompts: tuple[str, ...]  # the whole prompt at each keyframe (head, text, tail joined)

    def as_dict(self) -> dict[int, str]:
        return dict(zip(self.keyframes, self.prompts))

    def prompt_at(self, frame: int) -> str:
        """The keyframe prompt in force at ``frame`` (the last keyframe at or before it)."""
        chosen = self.prompts[0]
        for key, prompt in zip(self.keyframes, self.prompts):
            if key <= frame:
                chosen = prompt
        return chosen


def _join(*parts: str) -> str:
    return ", ".join(p.strip().strip(",").strip() for p in parts if p and p.strip().strip(","))


def parse_prompt_travel(text: str) -> PromptTravel:
    """The keyframes of ``text``; one sentence for a frame named twice."""
    lines = [line for line in (text or "").splitlines()]
    marks = [(i, _KEYFRAME.match(line)) for i, line in enumerate(lines)]
    keys = [(i, m) for i, m in marks if m]
    if not keys:
        return PromptTravel((0,), (" ".join(line.strip() for line in lines if line.strip()),))
    first, last = keys[0][0], keys[-1][0]
    head = _join(*lines[:first])
    tail_start = last + 1
    # The tail: lines after the last keyframe. Lines between keyframes continue the keyframe above.
    tail = _join(*lines[tail_start:])
    frames: dict[int, str] = {}
    for n, (index, match) in enumerate(keys):
        frame = int(match.group(1))
        if frame in frames:
            raise InvalidRequestError(f"The prompt travel names frame {frame} twice; keep one line for it.")
        end = keys[n + 1][0] if n + 1 < len(keys) else index + 1
        body = _join(match.group(2), *lines[index + 1:end])
        frames[frame] = _join(head, body, tail)
    ordered = sorted(frames.items())
    if ordered[0][0] != 0:  # the frames before the first keyframe hold its prompt, as sd-webui does
        ordered.insert(0, (0, ordered[0][1]))
    return PromptTravel(tuple(k for k, _ in ordered), tuple(p for _, p in ordered))
