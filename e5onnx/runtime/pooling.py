"""Masked mean pooling and L2 normalisation in NumPy, matching the e5 model card's PyTorch recipe."""

import numpy as np

from ..config import NORMALIZE_EPS, POOLING_MIN_COUNT


def mean_pool(last_hidden_state, attention_mask):
    """Average the hidden states of the real (unmasked) tokens.

    Args:
        last_hidden_state: ``(batch, seq, dim)`` float32, the model's ``last_hidden_state`` output.
        attention_mask: ``(batch, seq)`` integer or bool, 1 for real tokens and 0 for padding.

    Returns:
        ``(batch, dim)`` float32. The token count is clamped at :data:`POOLING_MIN_COUNT` (1e-9, as in
        sentence-transformers), so an all-zero mask gives a zero vector, never NaN.
    """
    mask = np.asarray(attention_mask, dtype=np.float32)
    hidden = np.asarray(last_hidden_state, dtype=np.float32)  # the graph's output as it is: no copy
    # (b, 1, s) @ (b, s, d) -> (b, 1, d): one batched matmul, no (b, s, d) temporary.
    summed = np.matmul(mask[:, None, :], hidden)[:, 0, :]
    counts = mask.sum(axis=1, keepdims=True)
    np.maximum(counts, np.float32(POOLING_MIN_COUNT), out=counts)
    summed /= counts  # in place: few NumPy calls, as each costs ~10 us with caches cold after a forward pass
    return summed


def l2_normalize(x):
    """Scale each row to unit L2 norm, like ``torch.nn.functional.normalize(x, p=2, dim=1)``.

    Args:
        x: ``(n, dim)`` float32.

    Returns:
        ``(n, dim)`` float32. The norm is clamped at :data:`NORMALIZE_EPS` (1e-12), so a zero row stays
        zero, never NaN.
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.add.reduce(x * x, axis=1, keepdims=True))  # np.linalg.norm's formula, fewer calls
    np.maximum(norms, np.float32(NORMALIZE_EPS), out=norms)
    return x / norms
