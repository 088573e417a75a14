"""A character-level tokenizer for the synthetic task: one token per character, saved in Hugging Face format.

A 152k-token vocabulary would make the LM head dominate CPU training; the task needs 21 characters. Pad, eos
and unk have their own ids (pad != eos), and encoding adds no special tokens, so a prompt's ids are its
characters one for one.

Why strictly one token per character: `AutoTokenizer` in transformers 5 does not load a tokenizer saved next to
a `qwen2` config as saved; it rebuilds it as a `Qwen2Tokenizer` (byte-level BPE with Qwen's pre-tokenizer
regex) from the vocabulary. A multi-character token such as `\\boxed{` is then never produced (it was silently
dropped), while single ASCII characters survive the rebuild with their ids. The quickstart therefore loads
the saved tokenizer back through `endo_rl.core.models.load_tokenizer`, as the trainer does, and uses that one.
"""

from __future__ import annotations

from pathlib import Path

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
SYMBOLS = [*"0123456789+=;", *"\\boxed{}"]


def build_tokenizer():
    """ids 0, 1, 2: pad, eos, unk; then one id per character of SYMBOLS.

    The unk token is declared so that loading does not add one of its own (transformers 5 adds
    `<|endoftext|>` to a tokenizer without one, giving the tokenizer more ids than the model has rows).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, *SYMBOLS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens([PAD, EOS, UNK])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK, padding_side="left"
    )


def save_and_reload(out_dir: str | Path):
    """Build, save to `out_dir`, and return the tokenizer as `endo_rl.core.models.load_tokenizer` loads it.

    Raises ValueError when the loaded tokenizer does not map every character to its own id.
    """
    from endo_rl.core.models import load_tokenizer

    built = build_tokenizer()
    built.save_pretrained(str(out_dir))
    loaded = load_tokenizer(str(out_dir))
    text = "".join(SYMBOLS)
    if loaded(text, add_special_tokens=True).input_ids != built(text, add_special_tokens=False).input_ids:
        raise ValueError(f"the tokenizer saved in {out_dir} does not load back one token per character")
    return loaded


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of `text`; a ValueError naming the characters outside the vocabulary."""
    unknown = sorted({c for c in text if c not in SYMBOLS})
    if unknown:
        raise ValueError(f"characters {unknown} are not in the quickstart vocabulary {SYMBOLS}")
    return tokenizer(text, add_special_tokens=False)["input_ids"]
