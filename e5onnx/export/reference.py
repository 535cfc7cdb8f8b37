"""The PyTorch reference: exactly the e5-small model card's recipe.

Source: https://huggingface.co/intfloat/e5-small (model card, "Usage"): ``AutoTokenizer`` (fast),
``AutoModel``, ``tokenizer(texts, max_length=512, padding=True, truncation=True, return_tensors="pt")``,
``average_pool`` (masked sum over tokens divided by the mask sum) and ``F.normalize(p=2, dim=1)``.
"""

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer


def average_pool(last_hidden_states, attention_mask):
    """The model card's masked mean pool: ``(b, s, d), (b, s) -> (b, d)``."""
    last_hidden = last_hidden_states.masked_fill(~attention_mask[..., None].bool(), 0.0)
    return last_hidden.sum(dim=1) / attention_mask.sum(dim=1)[..., None]


class TorchReference:
    """The model card's PyTorch embedding, for parity checks.

    Args:
        model_dir: local Hugging Face folder (``config.json``, weights, tokenizer files).
        max_length: truncation length in tokens, special tokens included.
    """

    def __init__(self, model_dir, max_length):
        self.max_length = int(max_length)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True)
        if not self.tokenizer.is_fast:
            raise TypeError(f"{model_dir}: no fast tokenizer (tokenizer.json) available")
        self.model = AutoModel.from_pretrained(str(model_dir)).eval()

    @property
    def pad_token_id(self):
        """The HF tokenizer's padding id (int), recorded in the manifest for the runtime."""
        return self.tokenizer.pad_token_id

    def token_ids(self, texts):
        """Token ids from the HF fast tokenizer with ``truncation=True, max_length``: list of lists of int."""
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]

    @torch.inference_mode()
    def embed(self, texts):
        """Embed ``texts`` as one padded batch: ``(n, dim)`` float32 unit vectors."""
        batch = self.tokenizer(list(texts), max_length=self.max_length, padding=True, truncation=True,
                               return_tensors="pt")
        outputs = self.model(**batch)
        embeddings = average_pool(outputs.last_hidden_state, batch["attention_mask"])
        return F.normalize(embeddings, p=2, dim=1).numpy().astype(np.float32)
