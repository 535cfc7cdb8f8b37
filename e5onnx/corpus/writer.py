"""Windows of embedded records into shards of exactly ``shard_rows`` input records, each listed in the run
manifest once it is on disk."""

import numpy as np

from .records import bad_row_error
from .shards import shard_table, write_run, write_shard


class ShardWriter:
    """Collects windows (:class:`~e5onnx.corpus.records.Window`) and writes a shard every ``shard_rows`` records.

    Args:
        folder: the partial output folder; run: its run manifest (dict; ``run["shards"]`` lists the shards already
            done, ``run["settings"]["shard_rows"]`` the size); dim: vector width; keep: ``--keep`` column names;
        on_error: ``"fail"``: a bad record raises; ``"skip"``: it is listed in its shard's ``rejects``.

    Attributes:
        records: input records covered by the finished shards and the one being filled.
    """

    def __init__(self, folder, run, dim, keep, on_error):
        self.folder, self.run, self.dim, self.keep, self.on_error = folder, run, dim, keep, on_error
        self.shard_rows = run["settings"]["shard_rows"]
        self.records = sum(s["records"] for s in run["shards"])
        self._records, self._vectors, self._tokens = [], [], []

    def add(self, window):
        """Take one window's records (in input order), writing each shard as it fills.

        Raises:
            InvalidInputError: a bad record with ``on_error="fail"`` (its line/row and reason).
        """
        start = 0
        good = np.cumsum([0] + [r.ok for r in window.records])  # good records before index i
        while start < len(window.records):
            stop = min(len(window.records), start + self.shard_rows - len(self._records))
            self._take(window, start, stop, good)
            start = stop
            if len(self._records) == self.shard_rows:
                self._write()

    def finish(self):
        """Write the last, shorter shard (if any records are left); an empty input gets one empty shard, so the
        output still has the schema (``read_table`` of a folder without shards has no columns)."""
        if self._records or not self.run["shards"]:
            self._write()

    def _take(self, window, start, stop, good):
        for record in window.records[start:stop]:
            if not record.ok and self.on_error == "fail":
                raise bad_row_error(record)
        self._records += window.records[start:stop]
        self._vectors.append(window.vectors[good[start]:good[stop]])
        self._tokens.append(window.token_counts[good[start]:good[stop]])
        self.records += stop - start

    def _write(self):
        good = [r for r in self._records if r.ok]
        vectors = np.concatenate(self._vectors) if self._vectors else np.empty((0, self.dim), np.float32)
        index = len(self.run["shards"])
        name, sha256 = write_shard(self.folder, index, shard_table(good, vectors.reshape(-1, self.dim), self.keep))
        self.run["shards"].append({
            "file": name, "sha256": sha256, "records": len(self._records), "rows": len(good),
            "first_record": self.records - len(self._records), "tokens": int(sum(t.sum() for t in self._tokens)),
            "rejects": [{"where": r.where, "id": r.id, "reason": r.error} for r in self._records if not r.ok],
        })
        write_run(self.folder, self.run)
        self._records, self._vectors, self._tokens = [], [], []
