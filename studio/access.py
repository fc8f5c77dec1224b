"""Who may do what, and where, when the studio is shown to others.

Local use (loopback, no ``--demo``) keeps full freedom: every path an artist types is used as typed.
When the studio is *exposed* (``--share``, a non-loopback ``--host``, or ``--exposed`` behind the
artist's own tunnel), every path a visitor types or picks must resolve inside the data folder after
following symlinks; anything else is refused with one sentence. In *demo* mode visitors cannot
change the machine (Dataset, Training, unloading, the budget, the device check, downloading new
models), each visitor's results go to, and their history reads from, their own folder, and the
only files a visitor may name are their own results and their uploads (never the artist's
datasets, runs or other people's results). The owner (the first ``--auth`` user, or ``--admin USER``)
is trusted like a local artist.

Nothing here imports gradio: a handler passes its ``gr.Request`` (anything with ``.username``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Optional, Sequence, Union

from engines.errors import InvalidRequestError, StudioError

VISITORS = "visitors"  # outputs/visitors/<user>/: a visitor's results in demo mode
UPLOADS = ("cache", "gradio")  # where gradio stores uploads: data/cache/gradio (studio/server.py)
GUEST = "guest"  # a visitor without a login (a local --demo without --auth)
OWNER_ONLY = "This is a demo link: only the studio's owner can {what}."
_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


class NotAllowedError(StudioError):
    """A visitor asked for something demo mode keeps for the owner."""

    exit_code = 2


def path_text(value: Any) -> str:
    """The path in a widget's or API client's value: a string, a Path, or an uploaded file's dict."""
    if value is None:
        return ""
    if isinstance(value, dict):
        value = value.get("path") or value.get("name") or ""
    return str(getattr(value, "path", value) or "").strip()


def _user_slug(user: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", user).strip(".-")
    return slug[:64] or GUEST


def confine(value: Any, root: Union[Path, Sequence[Path]], *, base: Optional[Path] = None,
            what: str = "The path") -> Path:
    """``value`` as a path inside ``root`` (or one of several roots) after following symlinks, or one
    sentence why not.

    A relative path is taken from ``base`` (default: the first root). Windows-style paths are read as
    Windows would read them on every system: ``C:\\x`` and ``\\\\server\\x`` are absolute, and
    ``..\\x`` climbs, so a visitor cannot slip past the check by choosing the other separator.
    """
    text = path_text(value)
    if not text:
        raise InvalidRequestError(f"{what} is empty: name a file or folder inside the studio's data folder.")
    if "\x00" in text:
        raise InvalidRequestError(f"{what} '{text}' is not a valid path.")
    windows = PureWindowsPath(text)
    if windows.drive and os.name != "nt":
        raise _outside(what, text)
    parts = windows.parts if os.name == "nt" else PurePosixPath(text.replace("\\", "/")).parts
    if text.startswith("~"):
        raise _outside(what, text)
    roots = [Path(r).resolve() for r in ([root] if isinstance(root, (str, Path)) else root)]
    candidate = Path(*parts) if parts else Path(".")
    if not candidate.is_absolute():
        candidate = Path(base or roots[0]) / candidate
    resolved = candidate.resolve()  # follows every symlink on the way, existing or not
    if not any(resolved == r or r in resolved.parents for r in roots):
        raise _outside(what, text)
    return resolved


def _outside(what: str, text: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{what} '{text}' is outside the studio's data folder; on a shared studio, use a name inside it.")


@dataclass(frozen=True)
class Access:
    data_dir: Path
    exposed: bool = False
    demo: bool = False
    owner: Optional[str] = None

    @classmethod
    def local(cls, data_dir: Path) -> "Access":
        return cls(Path(data_dir))

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    # who

    @staticmethod
    def user(request: Any) -> Optional[str]:
        return getattr(request, "username", None) or None

    def trusted(self, request: Any) -> bool:
        """A local artist, or the owner's login: full freedom."""
        if not self.exposed and not self.demo:
            return True
        return self.owner is not None and self.user(request) == self.owner

    def sees_everything(self, request: Any) -> bool:
        """Whether the Dataset and Training tabs and the System tab's buttons are shown."""
        return not self.demo or self.trusted(request)

    def require_owner(self, request: Any, what: str) -> None:
        """Refuse, in demo mode, what changes the machine or reads the artist's collection."""
        if not self.sees_everything(request):
            raise NotAllowedError(OWNER_ONLY.format(what=what))

    # where

    def roots(self, request: Any) -> list[Path]:
        """Where a user of an exposed studio may point: the data folder, or for a demo visitor only
        their own results and their uploads."""
        if self.demo and not self.trusted(request):
            return [self.outputs(request, self.root / "outputs"), self.root.joinpath(*UPLOADS)]
        return [self.root]

    def path(self, value: Any, request: Any, *, what: str = "The path", base: Optional[Path] = None) -> str:
        """The path to use for ``value``: as typed when trusted or local, else confined ('' stays '')."""
        text = path_text(value)
        if not text or not self.exposed or self.trusted(request):
            return text
        return str(confine(text, self.roots(request), base=base, what=what))

    def values(self, values: dict[str, Any], request: Any, *, pictures: dict[str, str], models: dict[str, str],
               prompts: Sequence[str] = ("prompt", "negative"), defaults: Optional[dict[str, Any]] = None
               ) -> dict[str, Any]:
        """A job's ``values`` with each picture (field -> what it is) and model checked for ``request``'s user.

        A path comes back as typed (an upload's dict as its path) unless it was confined; one outside, a LoRA tag in a prompt
        included (``<lora:/anywhere/x.safetensors:1>`` would read any file), raises its one sentence
        before any model loads. A model left at the job's default (``defaults``) may be downloaded for
        a demo visitor: the owner chose it, and a model the job does not use is never fetched."""
        checked = dict(values)
        for name, what in pictures.items():
            if text := path_text(checked.get(name)):  # an upload's dict becomes its path
                checked[name] = self.path(text, request, what=what)
        for name, what in models.items():
            if text := path_text(checked.get(name)):
                checked[name] = self.model(text, request, what=what,
                                           may_download=text == (defaults or {}).get(name))
        for name in prompt_loras(*(values.get(field) for field in prompts)):
            self.model(name, request, what="The LoRA")
        return checked

    def model(self, value: Any, request: Any, *, what: str = "The model", base: Optional[Path] = None,
              may_download: bool = False) -> str:
        """A model reference: a name in models/ (or runs/), a Hugging Face id, or a path (confined).

        A bare name or id is looked up by the model store inside the data folder; it is refused only
        when it would instead name something outside (the store tries the working folder first).
        """
        text = path_text(value)
        if not text or not self.exposed or self.trusted(request):
            return text
        if _looks_like_path(text):  # the studio's models and runs are there to be used, not only one's own files
            roots = [*self.roots(request), self.root / "models", self.root / "runs"]
            return str(confine(text, roots, base=base or self.root / "models", what=what))
        here = Path(text)
        if here.exists():  # relative to the studio's working folder, which the store looks at first
            confine(here.resolve(), self.root, what=what)
        for folder in (self.root / "models", self.root / "runs"):
            for candidate in (folder / text, folder / f"{text}.safetensors"):
                if candidate.exists() or candidate.is_symlink():
                    confine(candidate, self.root, what=what)
                    return text
        if ("/" in text and self.demo and not may_download
                and not (self.root / "models" / text.replace("/", "--")).exists()):
            raise NotAllowedError(OWNER_ONLY.format(what=f"download new models ('{text}' is not on this machine)"))
        return text

    def outputs(self, request: Any, outputs: Path) -> Path:
        """Where this user's results go and their history is read: their own folder for a demo visitor."""
        if self.trusted(request) or not self.demo:
            return Path(outputs)
        return Path(outputs) / VISITORS / _user_slug(self.user(request) or GUEST)


def prompt_loras(*prompts: Any) -> list[str]:
    """The LoRAs the prompts' ``<lora:NAME:W>`` tags name, read as the SD engine reads them."""
    from engines.sd15.prompt_syntax import parse_prompt

    names = []
    for text in prompts:
        try:
            names += [tag.name for tag in parse_prompt(str(text or "")).loras]
        except InvalidRequestError:
            continue  # the job's own check refuses this prompt with its sentence before anything loads
    return names


def _looks_like_path(text: str) -> bool:
    return (text.startswith((".", "/", "\\", "~")) or "\\" in text or bool(PureWindowsPath(text).drive)
            or ".." in PurePosixPath(text.replace("\\", "/")).parts
            or text.lower().endswith(_MODEL_SUFFIXES) or text.count("/") > 1)
