"""The tokeniser of a pretrained causal language model (``model: {name: pretrained_lm, source:
FOLDER}``): the model's own, loaded from the same folder (or hub name), so its embeddings mean
what they were trained to mean.

It has the interface of the corpus tokenisers (data/lm_tokenizer.py): ``encode``, ``decode``,
``vocab_size``, ``unknown``, ``unknown_policy`` and ``to_dict`` -> ``{"type": "pretrained_lm",
"source": ...}``, stored in the run's DataSpec; the source must still be there when the run is
used. Ids are the model's own (no offset: a corpus has no padding). ``bos_id`` / ``eos_id`` are
the model's start- and end-of-text tokens (GPT-2: both <|endoftext|>), used by generation.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from torchkeel.hf_models import load_pretrained


class PretrainedLMTokenizer:
    # GPT-2's byte-level BPE encodes every string; a tokeniser with an unknown token maps
    # what it cannot encode to that token (the model's own rule)
    unknown_policy = "the model's own (byte-level: none)"

    def __init__(self, source: str, tokenizer: Any):
        self.source, self.tokenizer = source, tokenizer
        self.bos_id = tokenizer.bos_token_id
        self.eos_id = tokenizer.eos_token_id

    @classmethod
    def load(cls, source: str) -> PretrainedLMTokenizer:
        return cls(source, load_pretrained("tokenizer", source, "model.source"))

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        # verbose=False: a corpus piece is longer than the model's context, and that is fine here
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.int64)

    def fingerprint(self) -> str:
        """A hash of the vocabulary and its rules (merges, normaliser, special tokens): an encoded
        corpus is reused only by the very same tokeniser, whatever folder or name it came from."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)  # a fast tokeniser: all of it as JSON
        whole = backend.to_str() if backend is not None else json.dumps(sorted(self.tokenizer.get_vocab().items()))
        return hashlib.blake2b(whole.encode(), digest_size=16).hexdigest()

    def decode(self, ids: list[int]) -> str:
        # no clean-up of spaces: pieces decoded one after the other must join to the whole
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def unknown(self, text: str) -> list[str]:
        return []

    def to_dict(self) -> dict[str, Any]:
        return {"type": "pretrained_lm", "source": self.source}
