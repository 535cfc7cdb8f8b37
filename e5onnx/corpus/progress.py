"""Progress of a corpus job on standard error: a tqdm bar (rows, tokens/s, ETA) on a terminal, a plain line
every :data:`~e5onnx.config.CORPUS_LOG_EVERY_S` seconds otherwise (logs, CI), nothing with ``quiet``."""

import sys
import time

from ..config import CORPUS_LOG_EVERY_S


class Progress:
    """Counts rows and tokens as windows are written.

    Args:
        total: records in the input (None when unknown: standard input); done: records already done (resume).
        quiet: show nothing. stream: where to write (default ``sys.stderr``).
    """

    def __init__(self, total, done=0, quiet=False, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.total, self.done, self.initial, self.tokens = total, done, done, 0
        self.quiet, self.started = quiet, time.perf_counter()
        self._last, self._bar = self.started, None
        if not quiet and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, unit="rows", file=self.stream, dynamic_ncols=True)
        elif not quiet:  # a first line at once: the next comes CORPUS_LOG_EVERY_S later
            rows = "an unknown number of" if total is None else f"{total:,}"
            self.stream.write(f"e5onnx corpus: {rows} rows, {done:,} already done (resumed)\n" if done
                              else f"e5onnx corpus: {rows} rows to embed\n")
            self.stream.flush()

    def tokens_per_s(self):
        elapsed = time.perf_counter() - self.started
        return self.tokens / elapsed if elapsed > 0 else 0.0

    def update(self, records, tokens):
        """``records`` more records done (bad ones included), holding ``tokens`` real tokens."""
        self.done += records
        self.tokens += tokens
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self.tokens_per_s():,.0f} tokens/s", refresh=False)
            self._bar.update(records)
        elif not self.quiet and time.perf_counter() - self._last >= CORPUS_LOG_EVERY_S:
            self._last = time.perf_counter()
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self):
        """``e5onnx corpus: 2,048/5,183 rows (39.5 %), 8,912 tokens/s, ETA 1m12s``."""
        rate = self.tokens_per_s()
        if not self.total:
            return f"e5onnx corpus: {self.done:,} rows, {rate:,.0f} tokens/s"
        elapsed = time.perf_counter() - self.started
        fresh = self.done - self.initial
        eta = (self.total - self.done) * elapsed / fresh if fresh > 0 else 0
        return (f"e5onnx corpus: {self.done:,}/{self.total:,} rows ({100 * self.done / self.total:.1f} %), "
                f"{rate:,.0f} tokens/s, ETA {int(eta // 60)}m{int(eta % 60):02d}s")

    def close(self):
        if self._bar is not None:
            self._bar.close()
