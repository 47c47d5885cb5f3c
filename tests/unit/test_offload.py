"""The GGUF header reader and the GPU offload planner: real model files, generated
7B/70B headers (no weights), hostile headers, and the models.toml keys."""

from __future__ import annotations

import re
import shutil
import struct
import threading
import tracemalloc
from pathlib import Path

import pytest
from gguf import GGML_QUANT_SIZES

from backends import hardware
from backends.base import LoadRequest, ModelLoadError
from backends.llamacpp import gpu as llamacpp_gpu
from backends.llamacpp.gguf_header import (
    GGML_TYPES,
    MAX_ARRAY_LENGTH,
    MAX_TENSORS,
    GGUFHeader,
    GGUFHeaderError,
    SkippedArray,
    read_header,
)
from backends.llamacpp.offload import (
    DEFAULT_MARGIN,
    OffloadError,
    OffloadPlan,
    _fit_layers,
    _layer_bytes,
    plan,
)
from server.config import ConfigError, load_models_file, parse_size
from tests.gguf_files import gguf_string, llama_header, raw_header

MODELS = Path.home() / ".cache" / "hearth" / "models"
QWEN = MODELS / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GEMMA = MODELS / "gemma-3-270m-q4_k_m.gguf"
GB = 10**9


@pytest.fixture(scope="module")
def llama7b(tmp_path_factory: pytest.TempPathFactory) -> GGUFHeader:
    return read_header(llama_header(tmp_path_factory.mktemp("h") / "7b.gguf", "7b"))


@pytest.fixture(scope="module")
def llama70b(tmp_path_factory: pytest.TempPathFactory) -> GGUFHeader:
    return read_header(llama_header(tmp_path_factory.mktemp("h") / "70b.gguf", "70b"))


def test_block_sizes_agree_with_the_gguf_package() -> None:
    for type_id, (name, block, size) in GGML_TYPES.items():
        assert GGML_QUANT_SIZES[type_id] == (block, size), name  # type: ignore[index]


@pytest.mark.skipif(not QWEN.exists(), reason="the default model is not pulled")
def test_qwen_header() -> None:
    header = read_header(QWEN)
    assert header.architecture == "qwen2"
    assert header.arch_int("block_count") == 24
    assert header.arch_int("embedding_length") == 896
    assert header.arch_int("attention.head_count_kv") == 2
    assert len(header.tensors) == 291
    tokens = header.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, SkippedArray) and tokens.length == 151936
    data = QWEN.stat().st_size - header.header_bytes
    assert 0 <= data - header.tensor_bytes < 32 * len(header.tensors)  # alignment padding


@pytest.mark.skipif(not GEMMA.exists(), reason="the gemma model is not pulled")
def test_gemma_header() -> None:
    header = read_header(GEMMA)
    assert header.architecture == "gemma3"
    assert header.arch_int("block_count") == 18
    assert header.arch_int("attention.key_length") == 256
    assert len(header.tensors) == 236
    data = GEMMA.stat().st_size - header.header_bytes
    assert 0 <= data - header.tensor_bytes < 32 * len(header.tensors)


def test_generated_headers_are_small_and_full_sized(
    llama7b: GGUFHeader, llama70b: GGUFHeader
) -> None:
    assert len(llama7b.tensors) == 2 + 9 * 32 + 1
    assert 3.7 * GB < llama7b.tensor_bytes < 3.9 * GB  # make_random_gguf's 3.8 GB file
    assert 38 * GB < llama70b.tensor_bytes < 40 * GB  # and its 39 GB one
    assert llama70b.header_bytes < 100_000


def test_7b_q4_0_fits_whole_in_24gb_with_8k_context(llama7b: GGUFHeader) -> None:
    p = plan(llama7b, context_length=8192, max_sequences=8, gpus=[24 * GB])
    assert p.layers_on_gpu == p.n_layer == 32 and p.output_on_gpu and p.gpu_layers == 33
    assert p.kv_bytes == 32 * 8192 * 4096 * 2 * 2  # n_layer x ctx x n_embd_kv x K,V x f16
    assert p.weights_cpu_bytes == 32000 * 4096 // 32 * 18  # token_embd only
    assert p.gpu_bytes <= 24 * GB - DEFAULT_MARGIN
    assert p.tokens_per_second_limit > 100


def test_70b_q4_0_is_split_to_fit_the_limit(llama70b: GGUFHeader) -> None:
    limit = parse_size("24GB")
    p = plan(llama70b, context_length=8192, max_sequences=8, gpus=[80 * GB], gpu_memory_limit=limit)
    assert 0 < p.layers_on_gpu < 80 and not p.output_on_gpu and p.gpu_layers == p.layers_on_gpu
    assert p.gpu_bytes <= limit - DEFAULT_MARGIN
    per_layer = _layer_bytes(llama70b, 80)[0] + p.kv_bytes // 80
    assert p.gpu_bytes + per_layer > limit - DEFAULT_MARGIN  # one more would not fit
    assert p.kv_gpu_bytes == p.kv_bytes // 80 * p.layers_on_gpu
    assert p.weights_gpu_bytes + p.weights_cpu_bytes == llama70b.tensor_bytes
    cpu_only = plan(llama70b, context_length=8192, max_sequences=8)
    assert p.tokens_per_second_limit > cpu_only.tokens_per_second_limit


def test_the_layers_that_fit_are_the_last_ones() -> None:
    assert _fit_layers([10, 10, 10, 10], 5, 31) == (2, 20)
    assert _fit_layers([10, 10], 5, 14) == (0, 0)


def test_q8_0_kv_is_about_half_of_f16(llama70b: GGUFHeader) -> None:
    f16 = plan(llama70b, context_length=8192, max_sequences=1, gpus=[24 * GB])
    q8 = plan(llama70b, context_length=8192, max_sequences=1, gpus=[24 * GB], kv_cache_type="q8_0")
    assert q8.kv_bytes == f16.kv_bytes * 17 // 32  # 34 bytes per 32 values against 64
    assert q8.layers_on_gpu > f16.layers_on_gpu


def test_no_gpu_puts_everything_on_the_cpu(llama7b: GGUFHeader) -> None:
    p = plan(llama7b, context_length=4096, max_sequences=1)
    assert (p.layers_on_gpu, p.gpu_bytes, p.weights_cpu_bytes) == (0, 0, llama7b.tensor_bytes)


def test_tensor_split_needs_a_gpu_per_share(llama7b: GGUFHeader) -> None:
    plan(llama7b, context_length=4096, max_sequences=1, gpus=[GB, GB], tensor_split=[1, 1])
    with pytest.raises(OffloadError, match="2 entries but this machine has 1 GPU"):
        plan(llama7b, context_length=4096, max_sequences=1, gpus=[GB], tensor_split=[1, 1])
    with pytest.raises(OffloadError, match="kv_cache_type"):
        plan(llama7b, context_length=4096, max_sequences=1, kv_cache_type="q2_k")


def hostile(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    return path


def test_a_huge_tensor_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GGUFHeaderError, match=r"tensor count .* exceeds the limit"):
        read_header(hostile(tmp_path, raw_header(MAX_TENSORS + 1)))


def test_huge_lengths_are_refused_before_any_allocation(tmp_path: Path) -> None:
    key = gguf_string(b"k", length=2**62)
    long_string = gguf_string(b"k") + struct.pack("<I", 8) + gguf_string(b"x", length=2**40)
    array = gguf_string(b"a") + struct.pack("<IIQ", 9, 4, MAX_ARRAY_LENGTH + 1)
    tracemalloc.start()
    try:
        for data, message in [
            (raw_header(0, key, 1), "metadata key length"),
            (raw_header(0, long_string, 1), "string length"),
            (raw_header(0, array, 1), "array length"),
            (raw_header(0, gguf_string(b"k") + struct.pack("<I", 99), 1), "value type 99"),
            (b"GGUF" + struct.pack("<I", 1), "version 1"),
            (b"GGML" + bytes(20), "not a GGUF file"),
            (raw_header(1) + gguf_string(b"t") + struct.pack("<I", 9), "dimension count"),
            (raw_header(1) + gguf_string(b"t", length=5), "truncated"),
        ]:
            with pytest.raises(GGUFHeaderError, match=message):
                read_header(hostile(tmp_path, data))
        assert tracemalloc.get_traced_memory()[1] < 10 * 2**20
    finally:
        tracemalloc.stop()


def test_a_long_array_that_runs_past_the_end_is_truncated(tmp_path: Path) -> None:
    array = gguf_string(b"a") + struct.pack("<IIQ", 9, 8, 100_000) + gguf_string(b"x") * 10
    with pytest.raises(GGUFHeaderError, match="truncated"):
        read_header(hostile(tmp_path, raw_header(0, array, 1)))


def test_models_toml_gpu_keys(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[models.m]\npath = "m.gguf"\ngpu_memory_limit = "24GiB"\nkv_cache_type = "q8_0"\n'
        "main_gpu = 1\n"
    )
    model = load_models_file(path, tmp_path).models["m"]
    assert (model.gpu_memory_limit, model.kv_cache_type, model.main_gpu) == (24 * 2**30, "q8_0", 1)
    assert parse_size("24GB") == 24 * GB and parse_size(1024) == 1024
    for line, key in [
        ('gpu_memory_limit = "lots"', "gpu_memory_limit"),
        ("gpu_memory_limit = 0", "gpu_memory_limit"),
        ('kv_cache_type = "q2_k"', "kv_cache_type"),
        ("main_gpu = -1", "main_gpu"),
    ]:
        path.write_text(f'[models.m]\npath = "m.gguf"\n{line}\n')
        with pytest.raises(ConfigError, match=f"model 'm': key '{key}'"):
            load_models_file(path, tmp_path)


def _cuda_build() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


@pytest.mark.gpu
@pytest.mark.skipif(not QWEN.exists() or not _cuda_build(), reason="needs a GPU build and GPU")
def test_auto_offload_puts_the_small_model_wholly_on_the_gpu() -> None:
    from backends.hardware import gpu_free_bytes
    from backends.llamacpp.backend import LlamaCppPlugin

    assert gpu_free_bytes()
    backend = LlamaCppPlugin().load(load_request(QWEN, kv_cache_type="q8_0"))
    try:
        assert backend.capabilities.gpu_offload
        assert backend.capabilities.details["gpu_layers"] == 25  # 24 layers and the output
    finally:
        backend.close()


class FakeParams:
    n_gpu_layers = 999
    main_gpu = 0
    tensor_split = None
    type_k = type_v = flash_attn_type = -1


class FakeLlama:
    """The few llama_cpp names llamacpp_gpu uses, as a CUDA build would answer."""

    GGML_TYPE_F16, GGML_TYPE_Q4_0, GGML_TYPE_Q8_0 = 1, 2, 8
    LLAMA_FLASH_ATTN_TYPE_ENABLED = 1

    def __init__(self, gpu: bool) -> None:
        self.gpu = gpu

    def llama_supports_gpu_offload(self) -> bool:
        return self.gpu

    def llama_supports_rpc(self) -> bool:
        return False

    def llama_max_devices(self) -> int:
        return 16


def load_request(path: Path, **kw: object) -> LoadRequest:
    base: dict[str, object] = dict(
        name="m", path=path, context_length=8192, max_sequences=8, threads=1,
        gpu_layers=None, tensor_split=None, chat_template=None, batch_tokens=512,
    )  # fmt: skip
    base.update(kw)
    return LoadRequest(**base)  # type: ignore[arg-type]


def test_auto_gpu_layers_on_a_gpu_build_follow_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = llama_header(tmp_path / "70b.gguf", "70b")
    monkeypatch.setattr(hardware, "gpu_free_bytes", lambda: (80 * GB,))
    params = FakeParams()
    placed = llamacpp_gpu.apply_model(
        FakeLlama(gpu=True), params, load_request(path, gpu_memory_limit=24 * GB)
    )
    assert placed.plan is not None and 0 < params.n_gpu_layers == placed.plan.layers_on_gpu < 80
    params = FakeParams()
    llamacpp_gpu.apply_model(FakeLlama(gpu=True), params, load_request(path, gpu_layers=7))
    assert params.n_gpu_layers == 7
    with pytest.raises(ModelLoadError, match="tensor_split has 2 entries"):
        llamacpp_gpu.apply_model(
            FakeLlama(gpu=True), FakeParams(), load_request(path, tensor_split=(1.0, 1.0))
        )
    with pytest.raises(ModelLoadError, match="main_gpu = 1"):
        llamacpp_gpu.apply_model(FakeLlama(gpu=True), FakeParams(), load_request(path, main_gpu=1))


def test_a_cpu_build_or_unknown_memory_keeps_the_old_behaviour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = llama_header(tmp_path / "7b.gguf", "7b")
    monkeypatch.setattr(hardware, "gpu_free_bytes", tuple)
    params = FakeParams()
    llamacpp_gpu.apply_model(FakeLlama(gpu=False), params, load_request(path))
    assert params.n_gpu_layers == 0
    llamacpp_gpu.apply_model(FakeLlama(gpu=True), params, load_request(path))
    assert params.n_gpu_layers == -1  # Metal: no nvidia-smi, every layer on the GPU


class FakeGpu:
    """One GPU's free memory as nvidia-smi would report it: a load takes what its plan
    placed. The first reading waits (up to a second) for a second one, so two loads
    that plan at the same time both read the memory before either takes any."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.reads: list[int] = []
        self._second = threading.Event()

    def free_bytes(self) -> tuple[int, ...]:
        self.reads.append(self.free)
        if len(self.reads) == 1:
            self._second.wait(1.0)
        else:
            self._second.set()
        return (self.free,)


def test_two_models_plan_their_offload_one_after_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = llama_header(tmp_path / "7b.gguf", "7b")
    request = load_request(path)
    whole = plan(read_header(path), context_length=8192, max_sequences=8, gpus=(80 * GB,))
    gpu = FakeGpu(whole.gpu_bytes + DEFAULT_MARGIN + whole.gpu_bytes // 2)  # room for 1.5
    monkeypatch.setattr(hardware, "gpu_free_bytes", gpu.free_bytes)
    ll = FakeLlama(gpu=True)
    plans: list[OffloadPlan] = []

    def load() -> None:  # what LlamaCppPlugin.load does around the llama.cpp calls
        with llamacpp_gpu.loading(ll, request):
            placed = llamacpp_gpu.apply_model(ll, FakeParams(), request)
            assert placed.plan is not None
            gpu.free -= placed.plan.gpu_bytes  # the weights, KV cache and compute buffer
            plans.append(placed.plan)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    first, second = plans
    assert gpu.reads == [gpu.reads[0], gpu.reads[0] - first.gpu_bytes]  # it saw the first
    assert first.output_on_gpu and first.gpu_bytes == whole.gpu_bytes
    assert 0 < second.layers_on_gpu < first.layers_on_gpu
    assert gpu.free >= DEFAULT_MARGIN  # nothing planned on memory the other one took


def test_a_cpu_only_load_does_not_wait_for_a_gpu_load(tmp_path: Path) -> None:
    request = load_request(tmp_path / "m.gguf")
    entered: list[str] = []

    def cpu_load(ll: FakeLlama, req: LoadRequest) -> None:
        with llamacpp_gpu.loading(ll, req):
            entered.append(req.name)

    with llamacpp_gpu.loading(FakeLlama(gpu=True), request):  # a GPU model is loading
        for ll, req in [
            (FakeLlama(gpu=False), request),  # a build without GPU offload
            (FakeLlama(gpu=True), load_request(tmp_path / "m.gguf", name="cpu", gpu_layers=0)),
        ]:
            t = threading.Thread(target=cpu_load, args=(ll, req))
            t.start()
            t.join(10)
            assert not t.is_alive(), "a CPU-only load waited for the GPU lock"
    assert entered == ["m", "cpu"]


def test_a_quantized_kv_cache_turns_flash_attention_on(tmp_path: Path) -> None:
    ll, params = FakeLlama(gpu=False), FakeParams()
    llamacpp_gpu.apply_kv_cache(ll, params, load_request(tmp_path, kv_cache_type="q4_0"))
    assert (params.type_k, params.type_v, params.flash_attn_type) == (2, 2, 1)
    params = FakeParams()
    llamacpp_gpu.apply_kv_cache(ll, params, load_request(tmp_path))
    assert (params.type_k, params.flash_attn_type) == (1, -1)  # f16: llama.cpp decides
    with pytest.raises(ModelLoadError, match="kv_cache_type must be one of"):
        llamacpp_gpu.apply_kv_cache(ll, params, load_request(tmp_path, kv_cache_type="q2_k"))


def test_hearth_info_plans_for_a_hypothetical_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.cli.main import main

    llama_header(tmp_path / "70b.gguf", "70b")
    models = tmp_path / "models.toml"
    models.write_text(f'[models.big]\npath = "{tmp_path / "70b.gguf"}"\n')
    args = ["--models-file", str(models), "info", "big", "--gpu-memory", "24GB"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"layers: 4\d of 80 on GPU, 3\d on CPU; output layer on CPU", out)
    assert re.search(r"speed limit: \d+\.\d tokens/s", out)
    assert main(["--models-file", str(models), "info", "big", "--gpu-memory", "lots"]) == 2
    assert "--gpu-memory: not a size" in capsys.readouterr().err
