"""A small BPE tokenizer trained on the demo world's text, saved as a normal HF tokenizer folder.

The pre-tokenizer isolates runs of newlines, attaches each space to the word after it
(SentencePiece's "▁", never prepended, so decoding gives the text back byte for byte) and
splits punctuation off, so a town is the same token in "born in Velmora." and "Velmora is".
The alphabet is printable ASCII plus newline; other characters become ``<unk>``.

The family's special tokens come first (ids 0..): LLaDA's ``<|startoftext|>`` (bos),
``<|endoftext|>`` (eos and pad), ``<|start_header_id|>``, ``<|end_header_id|>``, ``<|eot_id|>``
and ``<|mdm_mask|>`` (the mask token), with dllm's LLaDA chat template; or Dream's
``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` and ``<|mask|>`` with a Qwen2.5-style
template.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import string
import tempfile
from typing import Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mdu_jax.data.tokenizer import LLADA_CHAT_TEMPLATE

UNK = "<unk>"

# Dream's template as reference-mdlm 2.5 describes it: Qwen2.5 turns with a default system turn.
DREAM_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclasses.dataclass(frozen=True)
class FamilyTokens:
    """A family's special tokens (in id order) and which role each plays."""

    specials: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str
    mask: str
    eot: str
    chat_template: str
    chat_words: tuple[str, ...]  # text the template adds around messages, fitted too


FAMILIES = {
    "llada": FamilyTokens(
        specials=("<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "<|mdm_mask|>", UNK),
        bos="<|startoftext|>", eos="<|endoftext|>", pad="<|endoftext|>", mask="<|mdm_mask|>",
        eot="<|eot_id|>", chat_template=LLADA_CHAT_TEMPLATE,
        chat_words=("user", "assistant", "system", "\n\n")),
    "dream": FamilyTokens(
        specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>", UNK),
        bos=None, eos="<|endoftext|>", pad="<|endoftext|>", mask="<|mask|>", eot="<|im_end|>",
        chat_template=DREAM_CHAT_TEMPLATE,
        chat_words=("user\n", "assistant\n", "system\n", "You are a helpful assistant.", "\n")),
}

ALPHABET = tuple(c for c in string.printable if c not in "\t\r\x0b\x0c")  # includes " " and "\n"


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
    """What ``build_tokenizer`` wrote: the folder, its size and the ids of its special tokens.

    ``bos_token_id`` is None for Dream (its tokenizer has no bos; configs use eos instead).
    ``special_ids`` maps every special token string to its id.
    """

    folder: str
    family: str
    vocab_size: int
    bos_token_id: int | None
    eos_token_id: int
    pad_token_id: int
    mask_token_id: int
    eot_token_id: int
    special_ids: dict[str, int]


def family_tokens(family: str) -> FamilyTokens:
    if family not in FAMILIES:
        raise ValueError(f"family: unknown {family!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[family]


def train_backend(texts: Iterable[str], family: str = "llada", vocab_size: int = 1024):
    """A ``tokenizers.Tokenizer`` (BPE, at most `vocab_size` entries) fitted on `texts`."""
    fam = family_tokens(family)
    if vocab_size < len(fam.specials) + len(ALPHABET):
        raise ValueError(f"vocab_size: {vocab_size} cannot hold {len(fam.specials)} special tokens and the "
                         f"{len(ALPHABET)}-character alphabet")
    tk = Tokenizer(models.BPE(unk_token=UNK))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("\n+"), behavior="isolated"),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])
    tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(fam.specials),
                                  initial_alphabet=list(ALPHABET), show_progress=False)
    texts = list(texts)
    # The template's role words appear in every example: weigh them so they become whole tokens.
    corpus = texts + list(fam.chat_words) * max(8, len(texts) // 4)
    tk.train_from_iterator(corpus, trainer)
    return tk


def build_tokenizer(texts: Sequence[str], folder: str | os.PathLike, family: str = "llada", *,
                    vocab_size: int = 1024) -> TokenizerInfo:
    """Trains the demo tokenizer on `texts` and saves it to `folder` as an HF tokenizer folder.

    The vocabulary has at most `vocab_size` entries (fewer when every pre-token of the corpus is
    already whole: the default world needs about 980, and then every name, town and template
    word is one token; at 512 an answer takes about 60% more tokens).

    The folder loads with ``transformers.AutoTokenizer`` (a ``PreTrainedTokenizerFast`` with
    bos/eos/pad/mask/unk set, the family's chat template, no automatic bos/eos, right padding)
    and with ``mdu_jax.tokenizer.load_tokenizer``. Files are written to a temporary folder and
    moved in, replacing tokenizer files of the same names.
    """
    fam = family_tokens(family)
    backend = train_backend(texts, family, vocab_size)
    kwargs = dict(tokenizer_object=backend, eos_token=fam.eos, pad_token=fam.pad, mask_token=fam.mask,
                  unk_token=UNK, chat_template=fam.chat_template, clean_up_tokenization_spaces=False,
                  padding_side="right")
    if fam.bos is not None:
        kwargs["bos_token"] = fam.bos
    tok = PreTrainedTokenizerFast(**kwargs)
    named = {fam.bos, fam.eos, fam.pad, fam.mask, UNK}
    tok.add_special_tokens({"additional_special_tokens": [s for s in fam.specials if s not in named]})
    if len(tok) != backend.get_vocab_size():
        raise RuntimeError(f"adding special tokens grew the vocabulary ({backend.get_vocab_size()} -> {len(tok)})")

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=folder, prefix=".tmp-tokenizer-")
    try:
        tok.save_pretrained(tmp)
        for name in os.listdir(tmp):
            os.replace(os.path.join(tmp, name), os.path.join(folder, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ids = {s: tok.convert_tokens_to_ids(s) for s in fam.specials}
    return TokenizerInfo(folder=folder, family=family, vocab_size=len(tok),
                         bos_token_id=ids[fam.bos] if fam.bos is not None else None,
                         eos_token_id=ids[fam.eos], pad_token_id=ids[fam.pad], mask_token_id=ids[fam.mask],
                         eot_token_id=ids[fam.eot], special_ids=ids)


def chat_token_lengths(tokenizer, pairs: Sequence[dict]) -> list[int]:
    """Token count of each {question, answer} row rendered as a user + assistant conversation
    with the tokenizer's chat template (what SFT sees), to size ``max_length``."""
    out = []
    for row in pairs:
        messages = [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        out.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return out
