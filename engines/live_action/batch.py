"""Live-Action over a folder: one bar over the files; a bad file is reported and skipped, the rest still run.

The settings and models are checked once, before the first picture (a missing model stops the
batch with its sentence); each picture is then checked on its own, so one broken file costs only
itself. The models stay in the pool between pictures, so only the first one pays for loading.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engines.errors import Cancelled, InvalidRequestError
from engines.live_action.request import LiveActionRequest, check, check_settings
from engines.progress import CancelToken, OnStep, no_progress


@dataclass(frozen=True)
class BatchResult:
    done: tuple[Any, ...]  # LiveActionResult per picture made
    failed: tuple[tuple[Path, str], ...]  # (file, the sentence why)
    cancelled: bool = False

    def summary(self) -> str:
        text = f"{len(self.done)} picture{'s' if len(self.done) != 1 else ''} made"
        if self.failed:
            text += f", {len(self.failed)} skipped ({', '.join(p.name for p, _ in self.failed[:3])}" + (
                "…)" if len(self.failed) > 3 else ")")
        return text + (", stopped before the end" if self.cancelled else "") + "."


def run_batch(request: LiveActionRequest, input_dir: Path, output_dir: Path, hardware: Any, store: Any, *,
              on_step: OnStep = no_progress, cancel: Optional[CancelToken] = None) -> BatchResult:
    """Every picture of ``input_dir`` to ``output_dir/<name>.png`` (with its report and maps)."""
    from engines.live_action.photoreal import make_live_action, total_steps
    from engines.live_action.source import images_in

    files = images_in(input_dir)
    output_dir = Path(output_dir).expanduser()
    if output_dir.resolve() == Path(input_dir).expanduser().resolve():
        raise InvalidRequestError("Choose an output folder other than the input folder, so no drawing is replaced.")
    sd = check_settings(request, store)
    per = total_steps(request)
    total = per * len(files)
    done: list[Any] = []
    failed: list[tuple[Path, str]] = []
    for index, file in enumerate(files):
        if cancel is not None and cancel.cancelled:
            return BatchResult(tuple(done), tuple(failed), cancelled=True)
        label = f"{index + 1}/{len(files)} {file.name}"
        one = dataclasses.replace(request, image=file, output=output_dir / f"{file.stem}.png")
        try:
            plan = check(one, store, sd)
        except InvalidRequestError as error:  # this file only: the settings were checked above
            failed.append((file, str(error)))
            on_step(per * (index + 1), total, f"{label}: skipped")
            continue

        def inner(step: int, of: int, message: str = "", preview: Any = None, base: int = per * index) -> None:
            on_step(base + min(step, per), total, f"{label}: {message}" if message else label, preview)

        try:
            done.append(make_live_action(one, hardware, store, on_step=inner, cancel=cancel, plan=plan))
        except Cancelled:
            return BatchResult(tuple(done), tuple(failed), cancelled=True)
        on_step(per * (index + 1), total, f"{label}: done")
    return BatchResult(tuple(done), tuple(failed))
