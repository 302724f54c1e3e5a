"""Progress bars that stay readable when a pipeline step's output is piped into a log.

kfp.local reads each step's output line by line, so tqdm's carriage-return updates would only appear when
a bar finishes. When stdout is not a terminal, each update becomes its own line, at most every 10 seconds.
"""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")

# Every line Stillhouse itself prints starts with this tag; `stillhouse run` shows tagged lines (and the
# pipeline's task status) on the console and keeps everything else in run.log.
TAG = "[stillhouse]"


def say(message: str) -> None:
    """Print one progress message for the user, tagged so the run console shows it."""
    print(f"{TAG} {message}", flush=True)


class _LineStream:
    """Turns tqdm's ``\\r`` redraws into newline-terminated lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")
            self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
    """``tqdm`` on a terminal; periodic plain lines otherwise."""
    if sys.stdout.isatty():
        return tqdm(iterable, desc=desc, total=total, file=sys.stdout, dynamic_ncols=True)
    return tqdm(iterable, desc=f"{TAG} {desc}", total=total, file=_LineStream(sys.stdout), mininterval=10,
                ascii=True, ncols=110)
