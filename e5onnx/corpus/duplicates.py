"""Duplicate ids of a finished corpus output, found with 8 bytes of memory per row."""

from collections import Counter

import numpy as np

#: Duplicate ids named in the run manifest and on standard error (all are counted).
SHOWN = 10


def duplicate_ids(id_columns):
    """``{"count": ids that occur more than once, "examples": [{"id", "rows"}, ...]}`` of an output.

    Args:
        id_columns: a callable returning an iterator over the output's id lists (shard by shard, in order); it
            is called once, and a second time only when some id hashes collide, to name them.
    """
    hashes = [np.fromiter((hash(i) for i in ids), dtype=np.int64, count=len(ids)) for ids in id_columns()]
    if not hashes:
        return {"count": 0, "examples": []}
    values, counts = np.unique(np.concatenate(hashes), return_counts=True)
    suspects = set(values[counts > 1].tolist())
    if not suspects:
        return {"count": 0, "examples": []}
    seen = Counter(i for ids in id_columns() for i in ids if hash(i) in suspects)
    repeated = [(i, n) for i, n in seen.items() if n > 1]  # a hash collision of two ids is no duplicate
    return {"count": len(repeated), "examples": [{"id": i, "rows": n} for i, n in repeated[:SHOWN]]}
