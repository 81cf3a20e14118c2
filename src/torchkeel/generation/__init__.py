"""Text generation from a language model: sampling options and filters (sampling.py), the
loop with or without the KV cache (loop.py), streaming-safe decoding and stop strings
(text.py), and ``Generator`` (generator.py), which ties them to a run's model and tokeniser."""

from torchkeel.generation.generator import Generator, load_tokenizer
from torchkeel.generation.sampling import MAX_NEW_TOKENS, Sampling

__all__ = ["MAX_NEW_TOKENS", "Generator", "Sampling", "load_tokenizer"]
