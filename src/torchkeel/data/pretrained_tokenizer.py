"""The tokeniser of a pretrained encoder (``data.text.tokenizer: pretrained``, set for you by
``model: {name: pretrained_text}``): the encoder's own vocabulary and special tokens, so that
its embeddings mean what they were trained to mean.

Ids are the encoder's ids plus ``ID_OFFSET`` (1): the data contract keeps 0 for padding, and
many encoders use id 0 for a real token (RoBERTa's ``<s>``). ``pretrained_text`` subtracts it.
The stored form is the source (folder or hub name) and the length; the source must still be
there when a run is evaluated or served.
"""

from __future__ import annotations

from typing import Any

from torchkeel.hf_models import load_pretrained

ID_OFFSET = 1


class PretrainedTokenizer:
    def __init__(self, source: str, tokenizer: Any, max_length: int):
        self.source, self.tokenizer = source, tokenizer
        # the encoder's position table bounds the length (BERT: 512; MiniLM: 512)
        limit = getattr(tokenizer, "model_max_length", max_length)
        self.max_length = min(max_length, limit) if isinstance(limit, int) and limit > 0 else max_length

    @classmethod
    def load(cls, source: str, max_length: int) -> PretrainedTokenizer:
        return cls(source, load_pretrained("tokenizer", source, "data.text.encoder"), max_length)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer) + ID_OFFSET

    def tokens(self, text: str) -> list[str]:
        return self.tokenizer.tokenize(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # special tokens ([CLS] ... [SEP]) included, truncated to what the encoder takes
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        return [[i + ID_OFFSET for i in seq] for seq in ids]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "pretrained", "source": self.source, "max_length": self.max_length}
