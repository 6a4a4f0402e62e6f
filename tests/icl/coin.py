"""A word-level tokenizer that knows the words of the ICL prompts, for tiny random models (no download)."""
from __future__ import annotations

WORDS = ["[UNK]", "<s>", "</s>", ",", "[", "]", ":", "?", "Heads", "Tails", "random", "non", "-", "Q", "A", "The",
         "sequence", "was", "generated", "by", "a", "Generate", "of", "1000", "samples", "that", "may", "be", "from",
         "fair", "coin", "with", "no", "correlation", "or", "some", "algorithm", "<user>", "<assistant>", "%", ".",
         "Is", "the", "following", "flips", "process", "pattern", "are", "they", "weighted", "probability", "and",
         "hat", "tin"]

# A minimal chat template: the user turn, then the assistant turn opened.
CHAT_TEMPLATE = ("{% for m in messages %}<user> {{ m['content'] }} </s> {% endfor %}"
                 "{% if add_generation_prompt %}<assistant> {% endif %}")


def coin_tokenizer(chat: bool = False, words=WORDS, *, bos: bool = False):
    """Whitespace/punctuation word-level tokenizer over ``words`` (ids in list order), eos ``</s>``;
    ``bos`` prepends ``<s>`` (id 1) to every text, as Llama tokenizers do."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                     pre_tokenizers.Punctuation()])
    if bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>",
                                  bos_token="<s>" if bos else None,
                                  additional_special_tokens=["<user>", "<assistant>"] if chat else None)
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok
