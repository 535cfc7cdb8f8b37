"""Masked mean pooling and L2 normalisation against hand-computed values and the PyTorch recipe."""

import warnings

import numpy as np
import pytest

from e5onnx.runtime.pooling import l2_normalize, mean_pool


def test_mean_pool_ignores_padding():
    hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                       [[5.0, 6.0], [50.0, 60.0], [70.0, 80.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(mean_pool(hidden, mask), [[2.0, 3.0], [5.0, 6.0]])
    assert mean_pool(hidden, mask).dtype == np.float32


def test_all_zero_mask_and_zero_vector_give_zeros_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pooled = mean_pool(np.ones((1, 3, 4), np.float32), np.zeros((1, 3), np.int64))
        normed = l2_normalize(pooled)
    np.testing.assert_array_equal(normed, np.zeros((1, 4), np.float32))


def test_matches_model_card_torch_recipe():
    torch = pytest.importorskip("torch")
    from e5onnx.export.reference import average_pool

    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(4, 7, 16)).astype(np.float32)
    mask = np.array([[1] * 7, [1] * 3 + [0] * 4, [1] * 1 + [0] * 6, [1] * 5 + [0] * 2])
    want = torch.nn.functional.normalize(average_pool(torch.from_numpy(hidden), torch.from_numpy(mask)), p=2, dim=1)
    got = l2_normalize(mean_pool(hidden, mask))
    np.testing.assert_allclose(got, want.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
