"""A tiny BERT encoder folder, written as Hugging Face transformers writes any encoder
(config.json, model.safetensors, tokenizer files): pretrained_text's tests run offline on it."""

from __future__ import annotations

from pathlib import Path

import torch

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."]


def write_tiny_bert(folder: Path, words: list[str], min_vocab: int = 64) -> Path:
    """A 2-layer, 32-wide BERT whose WordPiece vocabulary is ``words`` (padded with made-up
    tokens to at least ``min_vocab`` ids)."""
    import transformers

    filler = [f"tok{i}" for i in range(max(0, min_vocab - len(SPECIAL) - len(words)))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join([*SPECIAL, *words, *filler]) + "\n")
    tokenizer = transformers.BertTokenizerFast(str(folder / "vocab.txt"))  # positional: transformers 4 and 5
    tokenizer.save_pretrained(folder)
    assert len(tokenizer) == len(SPECIAL) + len(words) + len(filler)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = transformers.BertModel(config)
    with torch.no_grad():  # BERT's N(0, 0.02) init makes every text's pooled vector nearly the same
        model.embeddings.word_embeddings.weight.normal_(0.0, 1.0)
    model.save_pretrained(folder)
    return folder


GPT2_TEXT = "ROMEO: But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.\n"


def write_tiny_gpt2(folder: Path, text: str = GPT2_TEXT, vocab_size: int = 300) -> Path:
    """A 2-layer, 32-wide GPT-2 (GPT2LMHeadModel) with a byte-level BPE learnt from ``text``
    and GPT-2's <|endoftext|> token, saved as any Hugging Face causal LM folder is."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([text], trainer=trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder
