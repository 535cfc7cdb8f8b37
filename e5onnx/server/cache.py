"""The opt-in result cache (``--cache-entries N``, default 0: off): an LRU of the vectors the server computed,
so a text sent again with the same settings is answered without tokenising or running the model.

**Key.** A 32-byte BLAKE2b digest of three parts, so that a vector is never served for other settings:

1. the model (:meth:`~e5onnx.runtime.Embedder.identity`): sha256 of the served ONNX file and of
   ``tokenizer.json`` (from the manifest, else hashed at start-up), the variant, the max length, the width and the
   query/passage prefixes;
2. the request's settings (:func:`settings_key`): every field of the
   :class:`~e5onnx.server.requests.EmbedRequest` except its inputs and the model name the client sent
   and how the vectors travel (:data:`NOT_SETTINGS`): today the prefix kind, ``truncate`` (windows included),
   ``normalize`` and whether the inputs are token ids. A field added later is part of the key with no change here.
   ``encoding_format`` is not: the cache holds the float32 vector and the handler derives the asked form from it
   (float, base64, int8 ... ubinary, :meth:`~e5onnx.runtime.Embedder.quantize`), so a text asked as float and
   then as binary is one entry, and the binary bytes are those of the cached vector;
3. the input: the text's UTF-8 bytes, or the token ids.

A collision of 256-bit digests is not a practical concern; no text is kept in memory.

**Values and memory.** The float32 vector (from one slab of ``entries x dim x 4`` bytes, allocated at start-up
and touched as entries fill: 100,000 entries of 384 dims are 154 MB) and the text's token count (for
``usage``), plus a key and an index entry of about 200 bytes per entry. The least recently used entry is dropped
when a new one needs room. A hit copies the stored bytes: the vector computed at the miss, bit for bit (a
recomputation in another batch could differ in float rounding, about 1e-7).

**Threads.** Every method takes a lock; the server calls them on its event loop only (look up before queueing,
store after the batcher's future resolves), never from the inference thread.
"""

import dataclasses
import hashlib
import threading
from collections import OrderedDict

import numpy as np

from ..errors import InvalidInputError

#: :class:`~e5onnx.server.requests.EmbedRequest` fields that are not settings of the vectors: the inputs
#: themselves (hashed one by one), the client's ``model`` string (any string names the served model) and
#: ``encoding_format`` (applied to the cached float32 vector after the lookup).
NOT_SETTINGS = frozenset({"texts", "model", "encoding_format"})


def settings_key(req):
    """Every setting of ``req`` (a dataclass request) but its inputs, as bytes: ``(name, value)`` pairs, sorted."""
    return repr(sorted((f.name, getattr(req, f.name)) for f in dataclasses.fields(req)
                       if f.name not in NOT_SETTINGS)).encode()


class Lookup:
    """One request looked up: its :attr:`vectors` (``(n, dim)`` float32, the hits filled in), :attr:`tokens`
    (``(n,)`` int64 token counts, hits filled in), and :attr:`misses`: the index of the first occurrence of each
    input not in the cache (a text sent twice in one request is embedded once)."""

    def __init__(self, keys, dim):
        self.keys = keys
        self.vectors = np.empty((len(keys), dim), dtype=np.float32)
        self.tokens = np.zeros(len(keys), dtype=np.int64)
        self.misses, self._where = [], {}

    def missed(self, i):
        """Record input ``i`` as not found."""
        where = self._where.setdefault(self.keys[i], [])
        if not where:
            self.misses.append(i)
        where.append(i)

    def fill(self, j, vector, tokens):
        """Give the ``j``-th miss (and its repeats in the request) its vector and token count."""
        where = self._where[self.keys[self.misses[j]]]
        self.vectors[where] = vector
        self.tokens[where] = tokens


class ResultCache:
    """An LRU of ``entries`` vectors of ``dim`` float32 (see the module docstring).

    Args:
        entries: most vectors kept, a positive int.
        dim: vector width.
        model: :meth:`~e5onnx.runtime.Embedder.identity` of the served embedder (bytes).
        metrics: a :class:`~e5onnx.server.metrics.Metrics` (hits, misses, evictions, entries), or None.

    Raises:
        InvalidInputError: ``entries x dim`` float32 cannot be allocated.
    """

    def __init__(self, entries, dim, model, metrics=None):
        self.capacity, self.dim, self.metrics = entries, dim, metrics
        self._model = model
        try:
            self._vectors = np.empty((entries, dim), dtype=np.float32)  # pages are touched as entries fill
        except MemoryError:
            raise InvalidInputError(f"--cache-entries {entries}: {entries * dim * 4 / 2**30:.1f} GiB of vectors "
                                    "cannot be allocated on this machine; give fewer entries") from None
        self._tokens = np.zeros(entries, dtype=np.int64)
        self._slots = OrderedDict()  # key -> row of _vectors, least recently used first
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._slots)

    def keys(self, req):
        """The key (32 bytes) of each input of ``req`` (an :class:`~e5onnx.server.requests.EmbedRequest`)."""
        base = hashlib.blake2b(self._model + b"\0" + settings_key(req) + b"\0", digest_size=32)
        out = []
        for item in req.texts:
            h = base.copy()
            h.update(item.encode("utf-8") if isinstance(item, str) else str(list(item)).encode())
            out.append(h.digest())
        return out

    def lookup(self, req):
        """The :class:`Lookup` of ``req``: hits copied out (and marked recently used), misses listed."""
        found = Lookup(self.keys(req), self.dim)
        with self._lock:
            for i, key in enumerate(found.keys):
                slot = self._slots.get(key)
                if slot is None:
                    found.missed(i)
                    continue
                self._slots.move_to_end(key)
                found.vectors[i] = self._vectors[slot]
                found.tokens[i] = self._tokens[slot]
        return found

    def store(self, found, vectors=None, tokens=None):
        """Fill ``found``'s misses with ``vectors`` (``(len(found.misses), dim)``) and ``tokens`` (their token
        counts), and keep them, dropping the least recently used entries for room; count the request's hits and
        misses (called once the request succeeded, so a refused request counts neither)."""
        evicted = 0
        if self.metrics is not None:
            self.metrics.cache_hits.inc(len(found.keys) - len(found.misses))
            self.metrics.cache_misses.inc(len(found.misses))
        with self._lock:
            for j, i in enumerate(found.misses):
                found.fill(j, vectors[j], tokens[j])
                key = found.keys[i]
                slot = self._slots.get(key)  # stored meanwhile by a concurrent request: refresh it
                if slot is None:
                    if len(self._slots) < self.capacity:
                        slot = len(self._slots)
                    else:
                        _, slot = self._slots.popitem(last=False)
                        evicted += 1
                self._slots[key] = slot
                self._slots.move_to_end(key)
                self._vectors[slot] = vectors[j]
                self._tokens[slot] = tokens[j]
            size = len(self._slots)
        if self.metrics is not None:
            self.metrics.cache_evictions.inc(evicted)
            self.metrics.cache_entries.set(size)
