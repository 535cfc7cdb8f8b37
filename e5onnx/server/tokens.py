"""``POST /tokenize``: each text's tokens in text-embeddings-inference's shape, through
:meth:`~e5onnx.runtime.Embedder.tokens`.

Response: one array per input of ``{"id", "text", "special", "start", "stop"}`` (TEI's ``SimpleToken``, in its
order): ``text`` is the slice of the input the token covers (the token's own string for a special token),
``start``/``stop`` its offsets into the text as tokenised — the prefix of ``prompt_name`` included — and null for
a special token. Offsets are UTF-8 byte offsets as TEI's (Rust ``tokenizers``); ``offset_units: "chars"`` (an
extension) gives Unicode code-point offsets instead (Python string indices, Hugging Face's ``offset_mapping``).
Nothing is truncated: a text over the max length shows all its tokens, so a client can count them (the count
of a text is the length of its array, special tokens included: what ``usage`` counts).
"""

import functools

from ..config import SERVER_TOKENIZE_CHARS_PER_TOKEN
from .errors import HTTPError
from .pipeline import sized_work


async def tokenize(state, req):
    """The ``/tokenize`` response body (a list per text of token dicts) of ``req``
    (:class:`~e5onnx.server.requests.TokenizeRequest`); large requests are tokenised in a worker thread
    (:func:`~e5onnx.server.pipeline.sized_work`).

    Raises:
        HTTPError: 400: a text over ``max_length`` x :data:`~e5onnx.config.SERVER_TOKENIZE_CHARS_PER_TOKEN`
            characters (``inputs[i]`` named), or over ``max_length`` x ``--max-client-batch-size`` tokens in all.
    """
    limit = state.embedder.max_length * SERVER_TOKENIZE_CHARS_PER_TOKEN
    for i, text in enumerate(req.texts):
        if len(text) > limit:
            raise HTTPError(f"inputs[{i}] has {len(text)} characters, over the limit of {limit} for /tokenize "
                            f"(max input length {state.embedder.max_length} x {SERVER_TOKENIZE_CHARS_PER_TOKEN})",
                            param="inputs")
    return await sized_work(sum(len(t) for t in req.texts), functools.partial(_tokens, state, req))


def _tokens(state, req):
    embedder = state.embedder
    texts = embedder.tokens(req.texts, req.prompt, req.add_special_tokens)
    total, most = sum(len(t.tokens) for t in texts), embedder.max_length * state.settings.max_client_batch_size
    if total > most:
        raise HTTPError(f"the inputs hold {total} tokens in all, over the limit of {most} per /tokenize request "
                        f"(max input length x --max-client-batch-size): send fewer or shorter texts", param="inputs")
    return [_shown(text, req.offset_units == "bytes") for text in texts]


def _shown(text, in_bytes):
    offsets = text.byte_offsets() if in_bytes else [(t.start, t.stop) for t in text.tokens]
    return [{"id": t.id, "text": t.text, "special": t.special, "start": start, "stop": stop}
            for t, (start, stop) in zip(text.tokens, offsets)]
