"""``text_pairs``: parallel text for translation (sentence pairs, data/pairs_files.py reads them).

Token ids, the data contract of the translation task:

- ``x``: int64 (N, S) source ids, right-padded with 0, no <s> or </s>; S is the longest source
  of the split (at most ``data.pairs.max_length``).
- ``y``: int64 (N, T) target ids: <s> (2), the target's tokens (at most max_length), </s> (3),
  right-padded with 0.

Ids 0-3 are ``<pad> <unk> <s> </s>`` in both tokenisers, the special tokens of a Hugging Face
``tokenizers`` model learnt offline from the train split and stored in the DataSpec
(``extra["tokenizer"]``, ``extra["target_tokenizer"]``), so that predict and serve tokenise
as training did. A text holding "</s>" is text: it never becomes the token.

Val and test come from the data where it has them; otherwise they are cut from the pairs with
every copy of a source sentence on one side, so that no test sentence was seen in training.
"""

from __future__ import annotations

import sys
import unicodedata
from typing import Any

import numpy as np
import torch

from torchkeel.config_data import DataConfig, PairsConfig
from torchkeel.data.bundle import DataBundle, DataSpec
from torchkeel.data.pairs_files import RawPairs, read_pairs
from torchkeel.data.pairs_loader import PairSplit
from torchkeel.data.splits import holdout_indices
from torchkeel.data.tokenize import PAD, PAD_INDEX, UNK, UNK_INDEX, SubwordTokenizer, pad_ids, tokenizer_from_dict
from torchkeel.errors import DataError

BOS, EOS = "<s>", "</s>"
BOS_INDEX, EOS_INDEX = 2, 3
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS]  # ids 0, 1, 2, 3, in this order
SPECIALS = {"pad": PAD_INDEX, "unk": UNK_INDEX, "bos": BOS_INDEX, "eos": EOS_INDEX}
SPLITS = ("train", "val", "test")


def load_text_pairs(cfg: DataConfig, seed: int, tokenizers: tuple[dict, dict] | None = None) -> DataBundle:
    """``tokenizers``: the (source, target) tokeniser dicts of a trained run
    (``spec.extra["tokenizer"]``, ``["target_tokenizer"]``), reused when its data is rebuilt
    rather than learnt again (the unigram trainer does not give the same vocabulary twice)."""
    p = cfg.pairs or PairsConfig()
    read = read_pairs(cfg.root, cfg.path, cfg.test_path, (cfg.source, cfg.target), p.test)
    dropped = {"empty_side": 0, "length_ratio": 0}
    parts = without_empty({"train": read.train, "val": read.val, "test": read.test}, dropped)
    parts = split_pairs(parts, cfg, seed, p.lowercase)
    if tokenizers is not None:
        source_tok, target_tok = (tokenizer_from_dict(d) for d in tokenizers)
    else:
        source_tok, target_tok = train_tokenizers(parts["train"], p)
    ids = {
        name: (source_tok.encode_batch(pairs.source), target_tok.encode_batch(pairs.target))
        for name, pairs in parts.items()
    }
    ids["train"], dropped["length_ratio"] = within_ratio(ids["train"], p.max_ratio)
    splits, truncated = {}, {}
    for name, (source, target) in ids.items():
        splits[name], truncated[name] = pair_tensors(source, target, p.max_length)
    if sum(truncated.values()):
        cut = ", ".join(f"{n:,} {name}" for name, n in truncated.items() if n)
        print(
            f"text_pairs: sentences longer than {p.max_length} tokens cut ({cut}; data.pairs.max_length)",
            file=sys.stderr,
        )
    spec = DataSpec(name="text_pairs", kind="text", task="translation", input_shape=(p.max_length,))
    spec.extra.update(
        tokenizer=source_tok.to_dict(),
        target_tokenizer=target_tok.to_dict(),
        joint=p.joint if tokenizers is None else tokenizers[0] == tokenizers[1],
        vocab_size=source_tok.vocab_size,
        target_vocab_size=target_tok.vocab_size,
        source=read.names[0],
        target=read.names[1],
        max_length=p.max_length,
        specials=dict(SPECIALS),
        pad_index=PAD_INDEX,
        unk_index=UNK_INDEX,
        truncated_sentences=truncated,  # sentences (either side) longer than max_length, cut
        dropped=dropped,  # pairs left out: an empty side (any split), too unequal lengths (train)
    )
    val = splits["val"] if len(splits["val"]) else None
    return DataBundle(spec, splits["train"], val, splits["test"])


def without_empty(parts: dict[str, RawPairs | None], dropped: dict[str, int]) -> dict[str, RawPairs | None]:
    """Each split without its pairs that have an empty side: a pair with nothing to translate,
    or nothing to translate into, teaches nothing. Counted in ``dropped``, told on stderr."""
    kept, first = {}, None
    for name, pairs in parts.items():
        if pairs is None:
            kept[name] = None
            continue
        full = [i for i, (s, t) in enumerate(zip(pairs.source, pairs.target, strict=True)) if s and t]
        if len(full) < len(pairs.source) and first is None:
            i = next(i for i, (s, t) in enumerate(zip(pairs.source, pairs.target, strict=True)) if not (s and t))
            first = pairs.where(i, side=0 if not pairs.source[i] else 1)
        dropped["empty_side"] += len(pairs.source) - len(full)
        kept[name] = pairs.take(full)
    if not kept["train"].source:
        raise DataError(f"text_pairs: every training pair has an empty side (e.g. {first}); check the files")
    if first is not None:
        print(
            f"text_pairs: {dropped['empty_side']:,} pairs with an empty side left out (first: {first})", file=sys.stderr
        )
    return kept


def group_keys(sentences: list[str], lowercase: bool) -> list[str]:
    """The text a tokeniser sees, up to whitespace: copies of one sentence share a key."""
    keys = [" ".join(unicodedata.normalize("NFC", s).split()) for s in sentences]
    return [k.lower() for k in keys] if lowercase else keys


def split_pairs(parts: dict[str, RawPairs | None], cfg: DataConfig, seed: int, lowercase: bool) -> dict[str, RawPairs]:
    """Val and test that the data lacks, cut from train by ``data.val_fraction`` and
    ``data.test_fraction`` of its distinct source sentences. Pairs are grouped by their source
    sentence and whole groups are assigned (seeded), so no sentence of val or test is also a
    training source: the copies of a sentence (Tatoeba has many) would otherwise let a model that
    memorised training pairs look as if it translated unseen ones."""
    train = parts["train"]
    keys = group_keys(train.source, lowercase)
    group_of = {key: i for i, key in enumerate(dict.fromkeys(keys))}  # in order of first appearance
    group = np.array([group_of[k] for k in keys], dtype=np.int64)  # (N,) each pair's group
    own_val, own_test = parts["val"] is not None, parts["test"] is not None
    chosen = holdout_indices(None, len(group_of), cfg, seed, own_val, own_test)
    cut = dict(zip(SPLITS, (train.take(np.flatnonzero(np.isin(group, g)).tolist()) for g in chosen), strict=True))
    given = {name: parts[name] for name in ("val", "test") if parts[name] is not None}
    return {**cut, **given}


def train_tokenizers(train: RawPairs, p: PairsConfig) -> tuple[SubwordTokenizer, SubwordTokenizer]:
    """(source, target) tokenisers from the training sentences: one shared when ``joint``."""
    if p.joint:
        shared = train_pair_tokenizer(train.source + train.target, p)
        return shared, shared
    return train_pair_tokenizer(train.source, p), train_pair_tokenizer(train.target, p)


def train_pair_tokenizer(texts: list[str], p: PairsConfig) -> SubwordTokenizer:
    """``bpe``: byte-level BPE (GPT-2's scheme: all 256 bytes are in the alphabet, so every string
    encodes and ``decode(encode(s)) == s``). ``unigram``: a unigram language model over words
    marked by a leading ``▁`` (SentencePiece's Metaspace); characters it never saw are <unk>.
    Both NFC-normalise and strip the text first, as the loader's sentences are."""
    hf = _hf()
    if p.tokenizer == "bpe":
        tok = hf.Tokenizer(hf.models.BPE())
        tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = hf.decoders.ByteLevel()
        alphabet = hf.pre_tokenizers.ByteLevel.alphabet()
        trainer = hf.trainers.BpeTrainer(
            vocab_size=p.vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=alphabet
        )
    else:
        tok = hf.Tokenizer(hf.models.Unigram())
        tok.pre_tokenizer = hf.pre_tokenizers.Metaspace()
        tok.decoder = hf.decoders.Metaspace()
        trainer = hf.trainers.UnigramTrainer(vocab_size=p.vocab_size, special_tokens=SPECIAL_TOKENS, unk_token=UNK)
    trainer.show_progress = False
    steps = [hf.normalizers.NFC(), hf.normalizers.Strip()] + ([hf.normalizers.Lowercase()] if p.lowercase else [])
    tok.normalizer = hf.normalizers.Sequence(steps)
    try:
        tok.train_from_iterator(texts, trainer, length=len(texts))
    except Exception as e:  # the trainer raises a plain Exception
        if "not large enough" not in str(e):
            raise
        chars = len({c for text in texts for c in unicodedata.normalize("NFC", text)})
        raise DataError(
            f"data.pairs.vocab_size: {p.vocab_size} is too small for a unigram model of this text, which has "
            f"{chars:,} distinct characters; raise it above {chars + len(SPECIAL_TOKENS):,}"
        ) from None
    tok.encode_special_tokens = True  # "</s>" in a sentence is its characters (kept in the stored dict)
    return SubwordTokenizer(p.tokenizer, tok)


def _hf() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise DataError("data set text_pairs needs 'tokenizers': pip install 'torchkeel[translate]'") from None
    return tokenizers


Ids = tuple[list[list[int]], list[list[int]]]  # (source, target) token ids of a split's pairs


def within_ratio(ids: Ids, max_ratio: float) -> tuple[Ids, int]:
    """The training pairs whose token counts differ by at most a factor of ``max_ratio``, and how
    many were left out: a sentence nine times as long as its partner is a misalignment, not a
    translation (9 is the default -ratio of Moses' clean-corpus-n.perl, Koehn et al. 2007)."""
    source, target = ids
    keep = [
        i
        for i, (s, t) in enumerate(zip(source, target, strict=True))
        if max(len(s), len(t)) <= max_ratio * max(1, min(len(s), len(t)))
    ]
    left_out = len(source) - len(keep)
    if not keep:
        raise DataError(
            f"text_pairs: no training pair is left: all {left_out:,} have one side more than {max_ratio:g} times "
            "as many tokens as the other; raise data.pairs.max_ratio or check the files are aligned"
        )
    if left_out:
        print(
            f"text_pairs: {left_out:,} training pairs left out whose lengths differ more than "
            f"{max_ratio:g}-fold (data.pairs.max_ratio)",
            file=sys.stderr,
        )
    return ([source[i] for i in keep], [target[i] for i in keep]), left_out


def pair_tensors(source: list[list[int]], target: list[list[int]], max_length: int) -> tuple[PairSplit, int]:
    """The split's x (N, S) and y (N, T) (the module's docstring), and how many sentences were
    cut to ``max_length``."""
    x, cut_source = pad_ids(source, max_length, pad=False)  # (N, S)
    body, cut_target = pad_ids(target, max_length, pad=False)  # (N, T - 2)
    n = len(target)
    y = torch.full((n, body.shape[1] + 2), PAD_INDEX, dtype=torch.int64)  # (N, T)
    y[:, 0] = BOS_INDEX
    y[:, 1:-1] = body
    kept = torch.tensor([min(len(t), max_length) for t in target], dtype=torch.int64)
    y[torch.arange(n), kept + 1] = EOS_INDEX
    return PairSplit(x, y), cut_source + cut_target
