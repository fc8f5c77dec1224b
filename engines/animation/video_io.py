"""Videos in and out: MP4 and WebM through ffmpeg, GIF and WebP through Pillow, every frame as a PNG.

    .mp4   H.264 (libx264, CRF 18, yuv420p, ``+faststart``): plays everywhere, starts before it is loaded
    .webm  VP9 (libvpx-vp9, CRF 24, yuv420p): the open web format, smaller at the same quality
    .gif   one palette shared by every frame: plays in every chat and forum, 256 colours
    .webp  lossy (quality 90), full colour: a GIF's convenience at a fraction of its size

ffmpeg is the binary the ``imageio-ffmpeg`` package carries (it has libx264 and libvpx-vp9), so nothing
has to be installed on the system. What the video is made with (a JSON dict) goes inside the file
where the format has a place for it: the ``comment`` tag of MP4 and WebM, the comment extension of a
GIF, the XMP chunk of a WebP. ``read_video_metadata`` gives it back.

Each video is written to a temporary name in its folder and renamed over the target when complete
(``engines.files.atomic_write``): a crash, a failed encode or a full disk leaves the old file or the
new one, never half of one.

Two things a reader of the files should know:

- MP4 and WebM store 4:2:0 colour (one colour sample per 2x2 pixels, what players expect), which
  needs even sides: an odd width or height gets one more column or row, a copy of the last one, so
  nothing is stretched;
- GIF and WebP encoders store two identical consecutive frames once, shown twice as long. Reading
  gives the frames as shown: a frame stored once for two counts twice (``_shown_repeats``).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional
from xml.sax.saxutils import escape, unescape

from engines.errors import InvalidRequestError, StudioError
from engines.files import atomic_write

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

VIDEO_FORMATS = (".mp4", ".gif", ".webp", ".webm")
LOOPS = ("loop", "ping-pong")
FFMPEG_FORMATS = (".mp4", ".webm")

# Constant quality rather than a bit rate: a still character costs few bytes, a busy scene more.
# CRF 18 is x264's "visually lossless" point; VP9's scale differs, and 24 is about as clean at 512 px.
_X264 = ["-c:v", "libx264", "-preset", "medium", "-crf", "18", "-movflags", "+faststart"]
# "good" with cpu-used 4 and row threading: about 10x faster than libvpx's default (cpu-used 0) for a
# small loss at these sizes; "-b:v 0" makes the CRF a pure quality target (libvpx's constant-quality mode).
_VP9 = ["-c:v", "libvpx-vp9", "-crf", "24", "-b:v", "0", "-deadline", "good", "-cpu-used", "4",
        "-row-mt", "1"]
# The pictures are sRGB; untagged YUV leaves players to guess BT.601 or BT.709 by size, and browsers
# guess differently, so the colours shift by a few levels. Converted with BT.709 and tagged as such
# (setparams: ffmpeg 7 takes the tags from the frames, and the -color_* output options alone get lost).
_BT709 = ["-vf", "scale=out_color_matrix=bt709:out_range=tv,"
                 "setparams=range=tv:colorspace=bt709:color_primaries=bt709:color_trc=bt709"]
WEBP_QUALITY = 90
MAX_FPS = 240
# A GIF counts time in hundredths of a second and browsers play a delay under 2 of them as 10 (a relic of
# old ad banners), so a GIF above 50 fps would play at 10.
MAX_GIF_FPS = 50
# The GIF palette is chosen from every frame shrunk to this long side: enough pixels to find the colours
# of the whole video, few enough that the choice takes milliseconds.
_PALETTE_SIDE = 128
# Windows: ffmpeg is a console program; without this a studio started without a console flashes one.
_NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)
_XMP_TAG = "inkframe:metadata"
_XMP_NAMESPACE = "urn:inkframe-studio:metadata:1"
_INSTALL = ("MP4 and WebM need ffmpeg from the imageio-ffmpeg package, which is missing: reinstall the "
            "studio or run `pip install imageio-ffmpeg`, or save as .gif or .webp.")


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, as a player shows it."""

    frames: int
    fps: float
    size: tuple[int, int]  # (width, height) as stored: MP4 and WebM sides are even


# -- checks and the frame order ------------------------------------------------------------------------------


def check_video_path(path: Path, fps: Optional[float] = None) -> str:
    """The suffix of ``path`` when a video can be written there at ``fps``; one sentence otherwise.

    Cheap (no encoding), so a request's ``check`` can call it before any model is loaded."""
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise InvalidRequestError(
            f"A video is saved as {', '.join(VIDEO_FORMATS)}, not as '{Path(path).name}'.")
    if fps is not None and not (isinstance(fps, (int, float)) and 0 < fps <= MAX_FPS):
        raise InvalidRequestError(
            f"The frame rate must be a number of frames per second above 0 and up to {MAX_FPS}, not {fps!r}.")
    if suffix == ".gif" and fps is not None and fps > MAX_GIF_FPS:
        raise InvalidRequestError(f"A GIF plays at most {MAX_GIF_FPS} frames per second, not {fps:g}: lower "
                                  "the frame rate or save as .mp4, .webm or .webp.")
    if suffix in FFMPEG_FORMATS:
        ffmpeg_exe()
    return suffix


def ffmpeg_exe() -> str:
    """The ffmpeg binary that imageio-ffmpeg carries (or the one ``IMAGEIO_FFMPEG_EXE`` names)."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as error:  # RuntimeError: the package is there, its binary is not
        raise InvalidRequestError(_INSTALL) from error


def frame_sequence(frames: Sequence[Any], loop: str) -> list:
    """The frames in the order they play: as they are for "loop"; for "ping-pong" forwards then backwards,
    without repeating the two end frames (which would hold them twice as long each turn)."""
    if loop not in LOOPS:
        raise InvalidRequestError(f"The loop must be {' or '.join(LOOPS)}, not '{loop}'.")
    frames = list(frames)
    return frames + frames[-2:0:-1] if loop == "ping-pong" else frames


def frame_durations(count: int, fps: float, tick_ms: int) -> list[int]:
    """Per-frame durations in ``tick_ms`` units of milliseconds that add up to the exact running time.

    A GIF counts in hundredths of a second, so 8 fps (12.5) cannot be one number: each frame ends at
    the tick nearest its exact end time, giving 130, 120, 130... ms, which averages 8 fps exactly
    instead of drifting to 8.3 fps."""
    period = 1000.0 / (fps * tick_ms)
    ends = [math.floor((i + 1) * period + 0.5) for i in range(count)]
    return [max(1, end - start) * tick_ms for start, end in zip([0] + ends[:-1], ends)]


# -- writing -------------------------------------------------------------------------------------------------


def save_video(frames: Sequence[Image.Image], path: Path, fps: int, *, loop: str = "loop",
               metadata: Optional[dict] = None) -> int:
    """Write ``frames`` as a video at ``fps``; returns the number of frames in the file (ping-pong adds
    the way back). The folder is created; the file appears complete or not at all."""
    # 1. everything that can be refused before any work
    path = Path(path)
    suffix = check_video_path(path, fps)
    if not frames:
        raise InvalidRequestError("There are no frames to save as a video.")
    sequence = frame_sequence(frames, loop)
    comment = json.dumps(metadata, ensure_ascii=True) if metadata else None  # ASCII: safe in every container
    # 2. encode to a temporary name, then rename
    path.parent.mkdir(parents=True, exist_ok=True)
    size = sequence[0].size
    if suffix in FFMPEG_FORMATS:
        atomic_write(path, lambda tmp: _write_ffmpeg(sequence, tmp, suffix, fps, size, comment))
    elif suffix == ".gif":
        atomic_write(path, lambda tmp: _write_gif(sequence, tmp, fps, size, comment))
    else:
        atomic_write(path, lambda tmp: _write_webp(sequence, tmp, fps, size, comment))
    return len(sequence)


def _rgb_frames(frames: Iterable[Image.Image], size: tuple[int, int]) -> Iterator[Image.Image]:
    """Each frame as RGB, checked against the first one's size; lazily, so a long video is never held
    twice in memory."""
    for index, frame in enumerate(frames):
        if frame.size != size:
            raise InvalidRequestError(f"Frame {index} is {frame.size[0]}x{frame.size[1]}, not "
                                      f"{size[0]}x{size[1]} like the first; every frame of a video must be "
                                      "the same size.")
        yield frame if frame.mode == "RGB" else frame.convert("RGB")


def _write_ffmpeg(frames: list, target: Path, suffix: str, fps: float, size: tuple[int, int],
                  comment: Optional[str]) -> None:
    """Pipe raw RGB frames into ffmpeg; the metadata goes in as an ffmetadata file (no length limit and
    no code page on the command line), mapped onto the output's global tags."""
    exe = ffmpeg_exe()
    width, height = size
    pad_w, pad_h = width % 2, height % 2  # yuv420p: even sides, the last column / row repeated
    rate = str(Fraction(fps).limit_denominator(1001))
    command = [exe, "-hide_banner", "-nostats", "-v", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width + pad_w}x{height + pad_h}",
               "-framerate", rate, "-i", "-"]
    meta_file = None
    try:
        if comment is not None:
            handle, meta_file = tempfile.mkstemp(prefix="inkframe-", suffix=".ffmeta")
            with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
                out.write(f";FFMETADATA1\ncomment={_ffmeta_escape(comment)}\n")
            command += ["-f", "ffmetadata", "-i", meta_file, "-map_metadata", "1"]
        command += ["-map", "0:v", "-pix_fmt", "yuv420p", *(_X264 if suffix == ".mp4" else _VP9), *_BT709,
                    "-an", "-f", "mp4" if suffix == ".mp4" else "webm", str(target)]
        with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty ffmpeg can never block
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=errors, creationflags=_NO_WINDOW)
            try:
                _pipe_frames(process.stdin, frames, size, pad_w, pad_h)
            except BaseException:
                process.kill()
                process.wait()
                raise
            code = process.wait()
            if code != 0:
                errors.seek(0)
                lines = errors.read().decode("utf-8", "replace").strip().splitlines()
                reason = lines[-1] if lines else f"exit code {code}"
                raise StudioError(f"ffmpeg could not write the {suffix[1:].upper()} video ({reason}).")
    finally:
        if meta_file is not None:
            os.unlink(meta_file)


def _pipe_frames(pipe: Any, frames: list, size: tuple[int, int], pad_w: int, pad_h: int) -> None:
    import numpy as np

    try:
        for frame in _rgb_frames(frames, size):
            pixels = np.asarray(frame)
            if pad_w or pad_h:
                pixels = np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            pipe.write(pixels.tobytes())
    except BrokenPipeError:
        pass  # ffmpeg stopped early: its exit code and message say why
    finally:
        try:
            pipe.close()
        except BrokenPipeError:
            pass


def _ffmeta_escape(text: str) -> str:
    # ffmetadata's rule: '=', ';', '#', '\' and line breaks are escaped with a backslash.
    return re.sub(r"([=;#\\\n])", r"\\\1", text)


def _write_gif(frames: list, target: Path, fps: float, size: tuple[int, int], comment: Optional[str]) -> None:
    """One palette for the whole video, so a colour does not shimmer as each frame picks its own (and one
    palette is ~100x faster than Pillow choosing one per frame). Floyd-Steinberg dithering: skin, sky and
    soft shading band without it; on flat anime colours it has nothing to do."""
    from PIL import Image

    rgb = list(_rgb_frames(frames, size))
    scale = min(1.0, _PALETTE_SIDE / max(size))
    thumb = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    sheet = Image.new("RGB", (thumb[0], thumb[1] * len(rgb)))
    for index, frame in enumerate(rgb):
        sheet.paste(frame.resize(thumb, Image.Resampling.BOX), (0, thumb[1] * index))
    palette = sheet.quantize(256, method=Image.Quantize.FASTOCTREE)
    indexed = [frame.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG) for frame in rgb]
    extra = {"comment": comment} if comment else {}
    indexed[0].save(target, format="GIF", save_all=True, append_images=indexed[1:], loop=0,
                    duration=frame_durations(len(indexed), fps, 10), **extra)


def _write_webp(frames: list, target: Path, fps: float, size: tuple[int, int],
                comment: Optional[str]) -> None:
    """Lossy at quality 90 (method 4, libwebp's default effort); the frames go to libwebp one by one."""
    rgb = _rgb_frames(frames, size)
    extra = {"xmp": _xmp_packet(comment)} if comment else {}
    next(rgb).save(target, format="WEBP", save_all=True, append_images=rgb, loop=0, quality=WEBP_QUALITY,
                   method=4, duration=frame_durations(len(frames), fps, 1), **extra)


def _xmp_packet(text: str) -> bytes:
    """A minimal XMP packet holding ``text`` in one property of Inkframe's namespace."""
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" xmlns:inkframe="{_XMP_NAMESPACE}">'
            f'<{_XMP_TAG}>{escape(text)}</{_XMP_TAG}>'
            '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode("utf-8")


def save_frames(frames: Sequence[Image.Image], folder: Path, stem: str,
                parameters: Optional[str] = None) -> list[Path]:
    """Every frame as ``<stem>-0000.png``, ``<stem>-0001.png``...; each with A1111's ``parameters`` text
    chunk when given (UTF-8 iTXt when the text is not Latin-1, as A1111 writes it)."""
    from PIL.PngImagePlugin import PngInfo

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    info = None
    if parameters is not None:
        info = PngInfo()
        info.add_text("parameters", parameters)
    digits = max(4, len(str(len(frames) - 1)))
    paths: list[Path] = []
    for index, frame in enumerate(frames):
        target = folder / f"{stem}-{index:0{digits}d}.png"
        atomic_write(target, lambda tmp, f=frame: f.save(tmp, format="PNG", pnginfo=info))
        paths.append(target)
    return paths


# -- reading -------------------------------------------------------------------------------------------------


def read_video_info(path: Path) -> VideoInfo:
    """Frames as shown, frame rate and size of a video written here (or any GIF, WebP, MP4 or WebM)."""
    path = Path(path)
    suffix = _readable(path)
    if suffix in FFMPEG_FORMATS:
        count, meta = 0, {}
        for meta, _ in _ffmpeg_frames(path):
            count += 1
        if not meta:  # no frame at all: ask for the header alone
            meta = _ffmpeg_header(path)
        return VideoInfo(count, float(meta.get("fps") or 0.0), tuple(meta.get("size") or (0, 0)))
    from PIL import Image

    with Image.open(path) as image:
        durations = [_frame_duration(image, i) for i in range(getattr(image, "n_frames", 1))]
        repeats, fps = _shown_repeats(durations, _tick(suffix))
        return VideoInfo(sum(repeats), fps, image.size)


def read_video_frames(path: Path) -> list[np.ndarray]:
    """Every frame as shown, RGB uint8 H x W x 3."""
    import numpy as np

    path = Path(path)
    suffix = _readable(path)
    if suffix in FFMPEG_FORMATS:
        return [pixels for _, pixels in _ffmpeg_frames(path, decode=True)]
    from PIL import Image

    stored: list[np.ndarray] = []
    durations: list[int] = []
    with Image.open(path) as image:
        for index in range(getattr(image, "n_frames", 1)):
            durations.append(_frame_duration(image, index))
            stored.append(np.asarray(image.convert("RGB")))
    repeats, _ = _shown_repeats(durations, _tick(suffix))
    return [pixels for pixels, times in zip(stored, repeats) for _ in range(times)]


def read_video_metadata(path: Path) -> Optional[dict]:
    """The metadata dict ``save_video`` wrote into the file; None when there is none (or not ours)."""
    path = Path(path)
    suffix = _readable(path)
    text: Optional[str] = None
    if suffix in FFMPEG_FORMATS:
        text = _ffmpeg_comment(path)
    else:
        from PIL import Image

        with Image.open(path) as image:
            if suffix == ".gif":
                raw = image.info.get("comment")
                text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            else:
                raw = image.info.get("xmp")
                xmp = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else (raw or "")
                found = re.search(f"<{_XMP_TAG}>(.*?)</{_XMP_TAG}>", xmp, re.DOTALL)
                text = unescape(found.group(1)) if found else None
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _readable(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise InvalidRequestError(f"Only {', '.join(VIDEO_FORMATS)} videos can be read, not '{path.name}'.")
    if not path.is_file():
        raise InvalidRequestError(f"There is no video at {path}.")
    return suffix


def _ffmpeg_frames(path: Path, decode: bool = False) -> Iterator[tuple[dict, Any]]:
    """(ffmpeg's header dict, the frame as H x W x 3 uint8 or None) for each frame, decoded by ffmpeg."""
    import numpy as np

    ffmpeg_exe()  # the sentence when it is missing
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
        width, height = meta["size"]
        for raw in reader:
            yield meta, np.frombuffer(raw, np.uint8).reshape(height, width, 3) if decode else None
    finally:
        reader.close()  # stops ffmpeg when the caller stops early


def _ffmpeg_header(path: Path) -> dict:
    ffmpeg_exe()
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        return next(reader)
    finally:
        reader.close()


def _ffmpeg_comment(path: Path) -> Optional[str]:
    """The global ``comment`` tag, read as ffmetadata (MP4 names it ``comment``, Matroska ``COMMENT``)."""
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", str(path),
                           "-f", "ffmetadata", "-"], capture_output=True, creationflags=_NO_WINDOW)
    if done.returncode != 0:
        return None
    return _ffmeta_values(done.stdout.decode("utf-8", "replace")).get("comment")


def _ffmeta_values(text: str) -> dict[str, str]:
    """The global ``key=value`` pairs of an ffmetadata file, keys lower-cased, escapes undone."""
    values: dict[str, str] = {}
    lines = re.split(r"(?<!\\)\n", text.replace("\r\n", "\n"))  # an escaped line break continues the value
    for line in lines[1:]:  # the first line is the ";FFMETADATA1" header
        if line.startswith("["):  # [STREAM] or [CHAPTER]: the global part is over
            break
        if not line or line.startswith((";", "#")):
            continue
        key, sep, value = _split_unescaped(line)
        if sep:
            values[key.lower()] = value
    return values


def _split_unescaped(line: str) -> tuple[str, bool, str]:
    """``key=value`` split at the first unescaped '=', both sides unescaped."""
    parts: list[list[str]] = [[]]
    chars = iter(line)
    for char in chars:
        if char == "\\":
            parts[-1].append(next(chars, ""))
        elif char == "=" and len(parts) == 1:
            parts.append([])
        else:
            parts[-1].append(char)
    return "".join(parts[0]), len(parts) == 2, "".join(parts[1]) if len(parts) == 2 else ""


def _tick(suffix: str) -> int:
    return 10 if suffix == ".gif" else 1  # a GIF's delays are hundredths of a second, a WebP's milliseconds


def _frame_duration(image: Any, index: int) -> int:
    image.seek(index)
    image.load()  # WebP fills in the duration when the frame is decoded
    return int(image.info.get("duration") or 0)


def _shown_repeats(durations: list[int], tick_ms: int) -> tuple[list[int], float]:
    """How many frame periods each stored frame is shown for, and the frame rate.

    The period is first taken as the shortest duration, then refined as the running time over the
    number of periods, so durations rounded to a GIF's 10 ms ticks (130, 120, 130... for 8 fps) or a
    frame stored once for three still count right. The running time itself is off by up to half a
    tick (4 frames at 12 fps last 330 ms, not 333), so a whole frame rate within that error is taken
    as the one meant. A file whose frames all say 0 ms (allowed in a GIF) plays at browsers' 10 fps."""
    if not durations or not any(durations):
        return [1] * max(1, len(durations)), 10.0
    shown = [d if d > 0 else min(x for x in durations if x > 0) for d in durations]
    period = float(min(shown))
    for _ in range(2):
        repeats = [max(1, math.floor(d / period + 0.5)) for d in shown]
        period = sum(shown) / sum(repeats)
    repeats = [max(1, math.floor(d / period + 0.5)) for d in shown]
    total = sum(shown)
    fps = 1000.0 * sum(repeats) / total
    if abs(fps - round(fps)) <= fps * (tick_ms / 2) / total * (1 + 1e-6):
        fps = float(round(fps))
    return repeats, fps
