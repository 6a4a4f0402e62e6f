"""Models bigger than one device: accelerate device maps with CPU and disk offload.

A tiny random GPT-2 and Llama are saved with ``save_pretrained`` and loaded twice, once in
memory and once through :func:`emergence_fast.models.load_model` with a ``device_map`` that
puts blocks on the CPU and on the disk (offloaded weights sit on the ``meta`` device and are
streamed in by accelerate's hooks). Capture, the model identity and Information Emergence must
not tell the two apart. No network: ``local_files_only`` and ``HF_HUB_OFFLINE``.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import types  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from emergence_fast.capture import BlockCapture, input_device, model_identity  # noqa: E402
from emergence_fast.models import load_model  # noqa: E402
from tests.tiny_models import VOCAB, icl_ids, one_thread, tiny_model, tiny_tokenizer  # noqa: E402, F401

KINDS = ("gpt2", "llama")

# Blocks 0 and 2 in host memory, block 1 on the disk; for Llama the embeddings and the head on
# the disk too, so the first and last parameters (the model identity's checksum) are offloaded.
DEVICE_MAPS = {
    "gpt2": {"transformer.wte": "cpu", "lm_head": "cpu", "transformer.wpe": "cpu", "transformer.drop": "cpu",
             "transformer.h.0": "cpu", "transformer.h.1": "disk", "transformer.h.2": "cpu",
             "transformer.ln_f": "disk"},
    "llama": {"model.embed_tokens": "disk", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
              "model.layers.1": "disk", "model.layers.2": "cpu", "model.norm": "cpu", "lm_head": "disk"},
}
PLACEMENTS = ("dict", "auto", "all-disk")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{kind: (folder, model size in bytes)}: each tiny model saved as safetensors with a tokenizer."""
    folders = {}
    for kind in KINDS:
        folder = tmp_path_factory.mktemp(kind)
        model = tiny_model(kind)
        model.save_pretrained(folder)
        tiny_tokenizer(bos=False).save_pretrained(folder)
        folders[kind] = folder, sum(p.numel() * p.element_size() for p in model.parameters())
    return folders


def _load(saved, kind, placement, tmp_path, dtype=None):
    folder, size = saved[kind]
    offload = tmp_path / f"offload-{kind}-{placement}"
    if placement == "plain":
        return load_model(folder, dtype=dtype)[0]
    if placement == "dict":
        kwargs = {"device_map": DEVICE_MAPS[kind]}
    elif placement == "auto":
        # Room in host memory for about three quarters of the model: the rest goes to the disk.
        kwargs = {"device_map": "auto", "max_memory": {"cpu": int(0.75 * size)}}
    else:
        kwargs = {"device_map": "auto", "max_memory": {"cpu": "1KB"}}
    return load_model(folder, dtype=dtype, offload_folder=offload, **kwargs)[0]


@pytest.fixture(scope="module")
def models(saved, tmp_path_factory):
    """{(kind, placement): model}, each loaded once for the module."""
    tmp = tmp_path_factory.mktemp("offload")
    return {(kind, placement): _load(saved, kind, placement, tmp)
            for kind in KINDS for placement in ("plain", *PLACEMENTS)}


def _ids(batch=4, length=6, seed=0):
    return torch.randint(2, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _is_meta(model, name):
    return dict(model.named_parameters())[name].device.type == "meta"


@pytest.mark.parametrize("kind", KINDS)
def test_device_maps_really_offload(models, kind):
    plain = models[kind, "plain"]
    assert getattr(plain, "hf_device_map", None) is None
    assert all(p.device.type == "cpu" for p in plain.parameters())

    mapped = models[kind, "dict"]
    assert mapped.hf_device_map == DEVICE_MAPS[kind]
    blocks_path = "transformer.h" if kind == "gpt2" else "model.layers"
    on_device = {i: {p.device.type for p in mapped.get_submodule(f"{blocks_path}.{i}").parameters()} for i in range(3)}
    assert on_device == {0: {"cpu"}, 1: {"meta"}, 2: {"cpu"}}

    auto = models[kind, "auto"].hf_device_map
    assert {"cpu", "disk"} <= set(auto.values()), auto
    # The split falls between blocks: some block is in host memory, a later one on the disk.
    assert auto.get(f"{blocks_path}.0") == "cpu" and "disk" in {auto.get(f"{blocks_path}.{i}") for i in (1, 2)}, auto

    assert models[kind, "all-disk"].hf_device_map == {"": "disk"}
    assert all(p.device.type == "meta" for p in models[kind, "all-disk"].parameters())


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("kind", KINDS)
def test_capture_equals_the_in_memory_model(models, kind, placement):
    plain, offloaded = models[kind, "plain"], models[kind, placement]
    ids = _ids()
    expected = BlockCapture(plain).run(ids)
    got = BlockCapture(offloaded).run(ids)
    for a, b in zip(expected, got):
        assert b.device.type == "cpu" and b.shape == a.shape
        assert torch.equal(a, b)
    # Left padding, chosen positions and an early stop at an offloaded block.
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    for layers in ([1], [2, 0]):
        expected = BlockCapture(plain, layers).run(ids, mask, positions=[0, 3])
        got = BlockCapture(offloaded, layers).run(ids, mask, positions=[0, 3])
        assert all(torch.equal(a, b) for a, b in zip(expected, got))


@pytest.mark.parametrize("kind", KINDS)
def test_capture_leaves_offloaded_weights_offloaded(models, kind):
    model = models[kind, "dict"]
    meta_before = {name for name, p in model.named_parameters() if p.device.type == "meta"}
    BlockCapture(model, [1]).run(_ids())  # stops early, right after the offloaded block
    assert {name for name, p in model.named_parameters() if p.device.type == "meta"} == meta_before


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("kind", KINDS)
def test_information_emergence_equals_the_in_memory_model(models, kind, placement):
    from emergence_fast.emergence import information_emergence

    ids = icl_ids(24, k_shots=2)
    options = {"pca": 4, "bias_correction": "none"}
    results = [information_emergence(models[kind, which], None, ids, estimator="gaussian", add_bos=False,
                                     estimator_options=options, batch_size=8)
               for which in ("plain", placement)]
    assert torch.isfinite(results[0].macro).all()
    assert torch.equal(results[0].macro, results[1].macro)
    assert torch.equal(results[0].micro, results[1].micro)


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("kind", KINDS)
def test_model_identity_is_the_same_in_memory_and_offloaded(models, kind, placement):
    plain, offloaded = models[kind, "plain"], models[kind, placement]
    identity = model_identity(plain)
    assert isinstance(identity["checksum"], float)
    assert model_identity(offloaded) == identity


@pytest.mark.parametrize("kind", KINDS)
def test_model_identity_reads_offloaded_first_and_last_weights(models, kind):
    model = models[kind, "dict"]
    names = [name for name, _ in model.named_parameters()]
    if kind == "llama":
        assert _is_meta(model, names[0]) and _is_meta(model, names[-1])
    else:
        assert not _is_meta(model, names[0]) and _is_meta(model, names[-1])
    assert isinstance(model_identity(model)["checksum"], float)


@pytest.mark.parametrize("kind", KINDS)
def test_model_identity_keeps_the_checkpoint_format(models, kind):
    """The keys and values IE checkpoints were written with before offload support."""
    model = models[kind, "plain"]
    parameters = list(model.parameters())
    old_checksum = float(parameters[0].detach().double().sum() + parameters[-1].detach().double().sum())
    identity = model_identity(model)
    assert {key: value for key, value in identity.items() if key != "weights"} == {
        "name": model.config._name_or_path, "dtype": "torch.float32",
        "n_parameters": sum(p.numel() for p in parameters), "checksum": round(old_checksum, 6)}
    assert len(identity["weights"]) == 16 and int(identity["weights"], 16) >= 0


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_model_identity_sees_a_change_in_a_middle_layer(kind):
    """Ranks with different weights in one middle layer must not agree (first and last weights are equal)."""
    model = tiny_model(kind)
    before = model_identity(model)
    with torch.no_grad():
        block = model.transformer.h[1] if kind == "gpt2" else model.model.layers[1]
        next(block.mlp.parameters()).mul_(3)
    after = model_identity(model)
    assert after["checksum"] == before["checksum"] and after["weights"] != before["weights"]


def test_model_identity_survives_the_tie_accelerate_undoes(saved, tmp_path):
    """GPT-2 ties lm_head to wte; offloaded, the first forward gives each its own meta Parameter."""
    plain = _load(saved, "gpt2", "plain", tmp_path)
    offloaded = _load(saved, "gpt2", "all-disk", tmp_path)
    identity = model_identity(plain)
    assert model_identity(offloaded) == identity
    listed = len(list(offloaded.parameters()))
    with torch.no_grad():
        offloaded(_ids())
    assert offloaded.lm_head.weight is not offloaded.transformer.wte.weight  # the accelerate quirk itself
    assert len(list(offloaded.parameters())) == listed + 1
    assert model_identity(offloaded) == identity


def test_model_identity_in_bfloat16_offloaded(saved, tmp_path):
    plain = _load(saved, "llama", "plain", tmp_path, dtype="bfloat16")
    offloaded = _load(saved, "llama", "dict", tmp_path, dtype="bfloat16")
    assert _is_meta(offloaded, "model.embed_tokens.weight")
    assert model_identity(offloaded) == model_identity(plain)
    assert model_identity(plain)["dtype"] == "torch.bfloat16"


def test_model_identity_without_readable_weights_falls_back_to_names_and_shapes():
    with torch.device("meta"):
        empty = tiny_model("llama")
    identity = model_identity(empty)
    assert identity["checksum"].startswith("names-and-shapes:")
    assert model_identity(tiny_model("llama").to("meta"))["checksum"] == identity["checksum"]
    with torch.device("meta"):
        other = tiny_model("gpt2")
    assert model_identity(other)["checksum"] != identity["checksum"]
    with pytest.raises(ValueError, match="no parameters"):
        model_identity(nn.ReLU())


def test_model_identity_name_falls_back_to_the_class():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    identity = model_identity(model)
    assert identity["name"] == "Sequential" and identity["n_parameters"] == 13


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("kind", KINDS)
def test_input_device_of_offloaded_models(models, kind, placement):
    assert input_device(models[kind, "plain"]) == torch.device("cpu")
    assert input_device(models[kind, placement]) == torch.device("cpu")


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5)

    def get_input_embeddings(self):
        return self.embed


def test_input_device_prefers_the_execution_device_of_the_embeddings_hook():
    from accelerate.hooks import AlignDevicesHook, ModelHook, SequentialHook

    model = _Tiny()
    assert input_device(model) == torch.device("cpu")  # in memory: the first parameter's device
    model.hf_device_map = {"embed": "disk", "head": "cpu"}
    model.embed.to("meta")
    # No hook: the first parameter holding data, of the embeddings, else of the model.
    assert input_device(model) == torch.device("cpu")
    model.head.to("meta")
    assert input_device(model) == torch.device("cpu")
    # A hook says where the offloaded module runs; its weights stay on meta.
    model.embed._hf_hook = SequentialHook(ModelHook(), AlignDevicesHook(execution_device="meta"))
    assert input_device(model) == torch.device("meta")
    model.embed._hf_hook = types.SimpleNamespace(execution_device=torch.device("meta"))
    assert input_device(model) == torch.device("meta")
    # No embeddings getter: the model's own hook.
    bare = nn.Sequential(nn.Linear(2, 2))
    bare.hf_device_map = {"": "disk"}
    bare._hf_hook = AlignDevicesHook(execution_device="meta")
    assert input_device(bare) == torch.device("meta")
    assert input_device(nn.ReLU()) == torch.device("cpu")


def test_out_device_gathers_every_block_to_one_device(models):
    model = models["gpt2", "plain"]
    ids = _ids()
    block_in, block_out = BlockCapture(model, out_device="meta").run(ids)
    assert block_in.device.type == block_out.device.type == "meta"
    assert block_in.shape == block_out.shape == (3, 4, 6, model.config.hidden_size)
    assert BlockCapture(model, out_device=torch.device("cpu")).run(ids)[0].device.type == "cpu"
    with pytest.raises(TypeError, match="out_device"):
        BlockCapture(model, out_device=0.5)
    with pytest.raises(ValueError, match="out_device"):
        BlockCapture(model, out_device="not-a-device")


# ---- bad arguments ------------------------------------------------------------------------------

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is missing")


@needs_no_cuda
@pytest.mark.parametrize("kwargs", [{"device": "cuda"}, {"device": "cuda:0"}, {"device": torch.device("cuda", 1)},
                                    {"device_map": "cuda"}, {"device_map": 0}, {"device_map": {"": 0}},
                                    {"device_map": {"model": "cpu", "lm_head": "cuda:0"}},
                                    {"device_map": "auto", "max_memory": {0: "1GB", "cpu": "1GB"}},
                                    {"device_map": "auto", "max_memory": {"cuda:0": "1GB"}}])
def test_cuda_without_cuda_says_so(saved, kwargs):
    argument = next(iter(kwargs)) if "max_memory" not in kwargs else "max_memory"
    with pytest.raises(ValueError, match=rf"{argument}.*CUDA is not available"):
        load_model(saved["llama"][0], **kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"max_memory": {"cpu": "1GB"}}, ValueError, "max_memory only applies with device_map"),
    ({"offload_folder": "off"}, ValueError, "offload_folder only applies with device_map"),
    ({"device": "cpu", "max_memory": {"cpu": "1GB"}}, ValueError, "max_memory"),
    ({"device_map": {"model": "cpu", "lm_head": "disk"}}, ValueError, "offload_folder"),
    ({"device_map": "disk"}, ValueError, "offload_folder"),
    ({"device_map": "auto", "max_memory": {"cpu": "1KB", "disk": "1GB"}}, ValueError, "offload_folder"),
    ({"device_map": "auto", "max_memory": ["cpu", "1GB"]}, TypeError, "max_memory"),
    ({"device_map": "auto", "max_memory": {}}, ValueError, "max_memory"),
    ({"device_map": "auto", "max_memory": {"gpu": "1GB"}}, ValueError, "max_memory keys"),
    ({"device_map": "auto", "max_memory": {True: "1GB"}}, ValueError, "max_memory keys"),
    ({"device_map": "auto", "max_memory": {"cpu": "lots"}}, ValueError, r"max_memory\['cpu'\]"),
    ({"device_map": "auto", "max_memory": {"cpu": "10"}}, ValueError, r"max_memory\['cpu'\]"),
    ({"device_map": "auto", "max_memory": {"cpu": -1}}, ValueError, r"max_memory\['cpu'\]"),
    ({"device_map": "auto", "max_memory": {"cpu": 1.5}}, TypeError, r"max_memory\['cpu'\]"),
    ({"device_map": "auto", "offload_folder": 3}, TypeError, "offload_folder"),
    ({"device_map": 1.5}, TypeError, "device_map"),
    ({"device_map": True}, TypeError, "device_map"),
    ({"device_map": {}}, ValueError, "device_map"),
    ({"device_map": {"model": 1.5}}, TypeError, r"device_map\['model'\]"),
    ({"device_map": {3: "cpu"}}, TypeError, "device_map keys"),
    ({"device_map": {"model": "warp-drive"}}, ValueError, r"device_map\['model'\]"),
    ({"device_map": "not-a-device"}, ValueError, "device_map"),
    ({"device_map": -1}, ValueError, "device_map"),
])
def test_bad_placement_arguments_name_the_argument(saved, kwargs, error, match):
    with pytest.raises(error, match=match):
        load_model(saved["llama"][0], **kwargs)


def test_offload_folder_must_be_a_folder(saved, tmp_path):
    file = tmp_path / "a-file"
    file.write_text("")
    with pytest.raises(ValueError, match="offload_folder .* is not a folder"):
        load_model(saved["llama"][0], device_map=DEVICE_MAPS["llama"], offload_folder=file)


def test_offload_folder_accepts_a_path_and_max_memory_a_cpu_only_map(saved, tmp_path):
    folder, size = saved["llama"]
    model, _ = load_model(folder, device_map="auto", max_memory={"cpu": size * 4},
                          offload_folder=tmp_path / "unused")
    # Everything fits in host memory: accelerate places the model there and dispatches nothing.
    assert getattr(model, "hf_device_map", None) is None
    assert input_device(model) == torch.device("cpu")


# ---- several devices at once (needs a GPU) --------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", KINDS)
def test_blocks_on_different_devices_are_gathered(kind):
    """Block 0 on cuda:0, block 1 in host memory, block 2 on cuda:0: states come back on one device."""
    from accelerate import dispatch_model

    reference = tiny_model(kind)
    model = tiny_model(kind)
    blocks = "transformer.h" if kind == "gpt2" else "model.layers"
    device_map = {**{k: "cpu" for k in DEVICE_MAPS[kind]}, f"{blocks}.0": 0, f"{blocks}.2": 0}
    dispatch_model(model, device_map=device_map, main_device="cpu")
    ids = _ids()
    expected = BlockCapture(reference).run(ids)
    seen = {}
    capture = BlockCapture(model)
    handles = [block.register_forward_hook(lambda m, a, o, i=i: seen.setdefault(i, (o[0] if isinstance(o, tuple)
                                                                                        else o).device))
               for i, block in enumerate(capture.blocks)]
    try:
        got = capture.run(ids)
    finally:
        for handle in handles:
            handle.remove()
    assert seen[0].type == "cuda" and seen[1].type == "cpu" and seen[2].type == "cuda"
    for a, b in zip(expected, got):
        assert b.device == seen[0]
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=1e-4)
    on_cpu = BlockCapture(model, out_device="cpu").run(ids)
    assert all(t.device.type == "cpu" for t in on_cpu)
    assert input_device(model) == torch.device("cpu")
