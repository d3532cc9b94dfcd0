"""A progress bar: tqdm when installed, else a few plain lines on stderr."""

import sys
import time


class _PlainProgress:
    """One line per tenth of the work, or per half minute, whichever comes first."""

    def __init__(self, total: int, desc: str, every_s: float = 30.0):
        self.total, self.desc, self.count, self.every_s = max(total, 1), desc, 0, every_s
        self.started = self._last_print = time.perf_counter()
        self._next_count = 0
        self._postfix = ""

    def set_postfix_str(self, text: str) -> None:
        self._postfix = text

    def update(self, count: int = 1) -> None:
        self.count += count
        now = time.perf_counter()
        due = self.count >= self._next_count or now - self._last_print >= self.every_s
        if due or self.count == self.total:
            elapsed = now - self.started
            line = f"{self.desc}: {self.count}/{self.total} ({elapsed:.0f} s) {self._postfix}"
            print(line, file=sys.stderr, flush=True)
            self._last_print = now
            self._next_count = self.count + max(1, self.total // 10)

    def write(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def make_progress(total: int, desc: str = "gwprune bench"):
    """tqdm on a terminal; plain lines when tqdm is missing or stderr is a log file or pipe
    (where tqdm's carriage-return redraws pile up into one unreadable line)."""
    if not sys.stderr.isatty():
        return _PlainProgress(total, desc)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _PlainProgress(total, desc)
    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=True)
