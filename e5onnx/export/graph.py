"""Graph work done with onnxruntime's own tools: transformer fusions (INT8 lives in :mod:`.int8`)."""

import onnx

#: Our optimisation levels, after optimum's O1-O3 (https://huggingface.co/docs/optimum/onnxruntime/usage_guides/optimization):
#: O1 basic ORT graph optimisations; O2 adds the BERT transformer fusions (attention, embed-layer-norm,
#: skip-layer-norm, bias-GELU); O3 adds the GELU approximation (changes outputs slightly).
OPTIMIZATION_SETTINGS = {
    "O1": {"only_onnxruntime": True, "opt_level": 1, "gelu_approximation": False},
    "O2": {"only_onnxruntime": False, "opt_level": 0, "gelu_approximation": False},
    "O3": {"only_onnxruntime": False, "opt_level": 0, "gelu_approximation": True},
}

def model_opset(model, default=None):
    """The default-domain opset of a loaded ``onnx.ModelProto``, else ``default``."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default)


def opset_of(path):
    """The default-domain opset of an ONNX file."""
    return model_opset(onnx.load(str(path), load_external_data=False))


def optimize(src, dst, level, num_heads, hidden_size):
    """Write ``dst``: ``src`` with ORT's BERT fusions at ``level`` (O1/O2/O3). Returns the settings used.

    ``model_type="bert"`` for XLM-RoBERTa too: onnxruntime's optimizer has no RoBERTa type, and its own model table
    (``onnxruntime/transformers/huggingface_models.py``) optimises ``xlm-roberta-base`` as ``bert``; its attention,
    skip-layer-norm and GELU fusions match XLM-RoBERTa's layers, while its
    ``EmbedLayerNormalization`` fusion skips RoBERTa's position ids (they start after the pad id), leaving the
    embeddings as plain ops. ``num_heads`` and ``hidden_size`` come from the model's ``config.json``.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    settings = OPTIMIZATION_SETTINGS[level]
    options = FusionOptions("bert")
    options.enable_gelu_approximation = settings["gelu_approximation"]
    model = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                           optimization_options=options, opt_level=settings["opt_level"],
                           only_onnxruntime=settings["only_onnxruntime"], use_gpu=False)
    model.save_model_to_file(str(dst))
    fused = {k: v for k, v in (model.get_fused_operator_statistics() or {}).items() if v}
    return {"level": level, "tool": "onnxruntime.transformers.optimizer.optimize_model", "model_type": "bert",
            "num_heads": num_heads, "hidden_size": hidden_size, **settings, "fused_operators": fused}
