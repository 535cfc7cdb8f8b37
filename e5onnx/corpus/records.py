"""What flows through a corpus job: input records (:class:`Record`) and embedded windows (:class:`Window`).

A source (:mod:`e5onnx.corpus.sources`) turns files into records, in input order; a backend (the in-process
:class:`~e5onnx.runtime.Embedder`, or Ray: :mod:`e5onnx.ray`) turns consecutive records into windows; the job
(:mod:`e5onnx.corpus.job`) writes windows into Parquet shards.
"""

from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInputError


@dataclass(frozen=True)
class Record:
    """One input row.

    Attributes:
        ordinal: 0-based position among all the source's records (blank JSON lines are not records); a resumed
            job skips the first ``ordinal`` records.
        where: where the row is, for messages: ``"corpus.jsonl line 12"``, ``"docs.csv row 3"``.
        id: the row's id as a str: the ``--id-field`` value, else ``str(ordinal + 1)``; None for a bad row whose
            ``--id-field`` value cannot be read.
        text: what is embedded (``title + " " + text`` when a title field is given), None for a bad row.
        error: why the row is bad (``"not JSON (Expecting value)"``, ``"field 'text' is missing"``,
            ``"empty text"``), None for a good row.
        keep: the ``--keep`` columns' values, name -> str or None.
    """

    ordinal: int
    where: str
    id: str
    text: str = None
    error: str = None
    keep: dict = field(default_factory=dict)

    @property
    def ok(self):
        return self.error is None


def bad_row_error(record):
    """The error a bad record raises with ``on_error="fail"``: where it is, why, and how to skip such rows."""
    return InvalidInputError(f"{record.where}: {record.error} (on_error='skip', --on-error skip on the command "
                             "line, leaves such rows out)")


@dataclass(frozen=True, eq=False)
class Window:
    """Consecutive records and the vectors of the good ones.

    Attributes:
        records: the records, in input order (bad ones included, so a job can report them in place).
        vectors: ``(number of good records, dim)`` float32, unit L2 rows, in the order of the good records.
        token_counts: ``(good records,)`` int64, real tokens of each good record (``[CLS]`` and ``[SEP]``
            included).
    """

    records: list
    vectors: np.ndarray
    token_counts: np.ndarray

    @property
    def tokens(self):
        """Real tokens of the window's good records (int)."""
        return int(self.token_counts.sum())
