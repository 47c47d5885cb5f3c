"""The MLX backend through hearth's plugin protocol, on the tiny Qwen2 model.

The tiny model is one set of weights in GGUF and in MLX form (``tests/tiny_model.py``),
so the llama.cpp backend is the reference: both backends must serve it the same way,
batched or alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.base import (
    Backend,
    ChatMessage,
    Constraint,
    GrammarError,
    ModelLoadError,
    OutOfMemory,
    SamplingParams,
    Work,
)
from tests.backends.drive import GREEDY, STEPS, generate, request
from tests.tiny_model import TinyModel

pytest.importorskip("mlx_lm", reason="the MLX backend needs mlx_lm (pip install 'hearth[mlx]')")


@pytest.fixture(scope="module")
def mlx(tiny_model: TinyModel) -> Iterator[Backend]:
    from backends.mlx.backend import MlxPlugin

    backend = MlxPlugin().load(request(tiny_model.mlx_dir))
    yield backend
    backend.close()


PROMPTS = [
    [ChatMessage("user", "Write a Python function that adds two numbers.")],
    [ChatMessage("system", "You are terse."), ChatMessage("user", "Name a colour.")],
    [ChatMessage("user", "héllo wörld — ünïcode 你好")],
]


def test_both_backends_render_and_tokenize_the_same(mlx: Backend, llama: Backend) -> None:
    for messages in PROMPTS:
        assert mlx.chat_prompt(messages) == llama.chat_prompt(messages)
    text = "def f(x):\n    return x  # <|im_end|> parsed as special"
    assert mlx.tokenize(text, add_special=False) == llama.tokenize(text, add_special=False)
    tokens = mlx.tokenize(text, add_special=False)
    assert mlx.detokenize(tokens) == llama.detokenize(tokens) == text
    assert mlx.fim_prompt("def a():\n", "\n", [("b.py", "x = 1")]) == llama.fim_prompt(
        "def a():\n", "\n", [("b.py", "x = 1")]
    )


def test_greedy_tokens_match_llamacpp_solo_and_batched(mlx: Backend, llama: Backend) -> None:
    prompts = [mlx.chat_prompt(m) for m in PROMPTS]
    reference = [generate(llama, [p])[0] for p in prompts]
    solo = [generate(mlx, [p])[0] for p in prompts]
    batched = generate(mlx, prompts)
    assert solo == reference
    assert batched == reference


def test_a_sequence_joining_a_running_batch_gets_the_solo_tokens(mlx: Backend) -> None:
    a = mlx.tokenize("The first sequence starts early and runs for a while", add_special=False)
    b = mlx.tokenize("Late", add_special=False)
    solo_b = generate(mlx, [b])[0]
    mlx.add(100, a, GREEDY)
    deltas, _ = mlx.step([Work(100, len(a), True)])
    for _ in range(5):
        deltas, _ = mlx.step([Work(100, 1, True)])
    mlx.add(101, b, GREEDY)
    got: list[int] = []
    deltas, _ = mlx.step([Work(100, 1, True), Work(101, len(b), True)])
    got += [d.token for d in deltas if d.seq_id == 101]
    while len(got) < STEPS:
        deltas, _ = mlx.step([Work(100, 1, True), Work(101, 1, True)])
        got += [d.token for d in deltas if d.seq_id == 101]
    mlx.release(100)
    mlx.release(101)
    assert got == solo_b


def test_text_streams_whole_characters(mlx: Backend) -> None:
    prompt = mlx.tokenize("你好", add_special=False)
    mlx.add(7, prompt, GREEDY)
    work = [Work(7, len(prompt), True)]
    tokens, text = [], ""
    for _ in range(24):
        deltas, _ = mlx.step(work)
        tokens.append(deltas[0].token)
        text += deltas[0].text
        assert "\ufffd" not in deltas[0].text or "\ufffd" in mlx.detokenize(tokens)
        work = [Work(7, 1, True)]
    mlx.release(7)
    assert text == mlx.detokenize(tokens)[: len(text)]


def test_prefix_reuse_feeds_only_the_new_tokens(mlx: Backend) -> None:
    prompt = mlx.chat_prompt(PROMPTS[0])
    first = generate(mlx, [prompt], steps=4, first_id=200)[0]
    extended = prompt + first[:3]
    reused = mlx.add(300, extended, GREEDY)
    mlx.release(300)
    assert reused >= len(prompt)
    again = generate(mlx, [prompt], steps=4, first_id=400)[0]
    assert again == first  # reused KV gives the same tokens
    seeded = SamplingParams(temperature=0.9, seed=5)
    assert mlx.add(500, prompt, seeded) == 0  # a seeded request is always prefilled whole
    mlx.release(500)


def test_same_seed_same_tokens_and_sampling_varies(mlx: Backend) -> None:
    prompt = mlx.chat_prompt(PROMPTS[1])
    hot = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=42)
    one = generate(mlx, [prompt], hot, first_id=600)[0]
    two = generate(mlx, [prompt, prompt], hot, first_id=610)
    assert two == [one, one]
    other = generate(mlx, [prompt], SamplingParams(temperature=1.5, top_k=0, seed=43))[0]
    assert other != one


def test_constraints_are_refused_not_ignored(mlx: Backend) -> None:
    with pytest.raises(GrammarError, match="MLX backend has no grammar"):
        mlx.check_constraint(Constraint())
    prompt = mlx.tokenize("{", add_special=False)
    with pytest.raises(GrammarError):
        mlx.add(700, prompt, SamplingParams(constraint=Constraint()))


def test_memory_limit_caps_the_kv_budget_and_refuses_past_it(tiny_model: TinyModel) -> None:
    import mlx.core as mx

    from backends.mlx.backend import MlxPlugin
    from backends.mlx.load import HEADROOM_BYTES, USABLE_FRACTION, plan

    weights = plan(tiny_model.mlx_dir).weights_bytes
    limit = int((weights + HEADROOM_BYTES + 1000 * 512) / USABLE_FRACTION) + 1
    backend = MlxPlugin().load(request(tiny_model.mlx_dir, gpu_memory_limit=limit))
    try:
        caps = backend.capabilities
        assert 900 <= caps.context_length <= 1100, caps.details  # ~1,000 of 2,048
        assert caps.details["memory_limit_bytes"] == limit
        # Everything else in this process (other models) now counts against the limit.
        # Room for 300 positions: a cache grows 256 at a time, so 2 tokens take 257.
        backend._loaded.memory_limit = mx.get_active_memory() + 300 * 512  # type: ignore[attr-defined]
        with pytest.raises(OutOfMemory, match="retry"):
            backend.add(1, list(range(100, 200)), GREEDY)
        assert backend.add(2, [100, 101], GREEDY) == 0
        backend.release(2)
    finally:
        backend.close()
    with pytest.raises(ModelLoadError, match="no room for the KV cache"):
        MlxPlugin().load(request(tiny_model.mlx_dir, gpu_memory_limit=weights))


def allocated_kv(backend: Backend) -> int:
    """KV bytes MLX holds for the backend, read from the cache arrays themselves: the
    decode batch, each sequence's own cache, the kept prefixes."""
    b: Any = backend
    caches = [b._batch._cache or [], *(p.cache for p in b._prefixes)]
    caches += [s.cache for s in b._seqs.values() if s.cache is not None]
    return sum(
        layer.keys.nbytes + layer.values.nbytes
        for cache in caches
        for layer in cache
        if layer.keys is not None
    )


def test_kv_used_is_the_padded_batch_and_what_it_cannot_hold_is_refused(
    tiny_model: TinyModel,
) -> None:
    """The decode batch is one rectangle, every row as long as the longest: a long
    sequence beside short ones allocates rows x longest, and that is what is counted
    and what a new sequence must fit beside."""
    import mlx.core as mx

    from backends.mlx.backend import MlxPlugin

    backend: Any = MlxPlugin().load(
        request(tiny_model.mlx_dir, max_sequences=8, options={"prefix_cache": False})
    )
    try:
        per_token = backend.capabilities.details["kv_bytes_per_token"]
        prompts = [[100 + i % 900 for i in range(1000)], *([200 + i, 300, 400] for i in range(3))]
        for i, p in enumerate(prompts):
            backend.add(i, p, GREEDY)
        backend.step([Work(i, len(p), True) for i, p in enumerate(prompts)])
        for _ in range(3):
            deltas, failures = backend.step([Work(i, 1, True) for i in range(4)])
            assert len(deltas) == 4 and not failures
        allocated = allocated_kv(backend)
        assert allocated >= 4 * 1000 * per_token  # four rows as long as the longest
        assert backend.kv_cache_used() * per_token == allocated
        # Room for 600 more tokens: a short prompt fits by the sum of lengths, but in
        # the batch it is a fifth row of 1,000+ tokens.
        backend._loaded.memory_limit = mx.get_active_memory() + 600 * per_token
        with pytest.raises(OutOfMemory, match="retry"):
            backend.add(4, [500, 501, 502], GREEDY)
        assert 4 not in backend._seqs and allocated_kv(backend) == allocated
        backend.release(0)  # the long one leaves: short rows fit again
        backend.add(4, [500, 501, 502], GREEDY)
        deltas, failures = backend.step([Work(i, 1, True) for i in (1, 2, 3)] + [Work(4, 3, True)])
        assert len(deltas) == 4 and not failures
        assert backend.kv_cache_used() * per_token == allocated_kv(backend) < allocated
    finally:
        backend.close()


def test_a_step_that_would_grow_the_batch_past_the_limit_fails_the_newest(
    tiny_model: TinyModel,
) -> None:
    """A sequence joining the batch widens it to a full row; when memory no longer
    allows that, the newest sequence fails alone and the others go on."""
    import mlx.core as mx

    from backends.mlx.backend import MlxPlugin

    backend: Any = MlxPlugin().load(
        request(tiny_model.mlx_dir, max_sequences=8, options={"prefix_cache": False})
    )
    try:
        per_token = backend.capabilities.details["kv_bytes_per_token"]
        prompts = [[100 + i % 900 for i in range(1000)], [200, 300, 400]]
        for i, p in enumerate(prompts):
            backend.add(i, p, GREEDY)
        backend.step([Work(i, len(p), True) for i, p in enumerate(prompts)])
        backend.add(2, [500, 501, 502], GREEDY)
        backend.step([Work(0, 1, True), Work(1, 1, True), Work(2, 2, False)])
        # Memory is taken elsewhere: the third sequence's row no longer fits.
        backend._loaded.memory_limit = mx.get_active_memory() + 100 * per_token
        deltas, failures = backend.step([Work(0, 1, True), Work(1, 1, True), Work(2, 1, True)])
        assert [f.seq_ids for f in failures] == [(2,)]
        assert "memory" in failures[0].message
        assert sorted(d.seq_id for d in deltas) == [0, 1]
        assert backend._batch.rows == [0, 1]
        deltas, failures = backend.step([Work(0, 1, True), Work(1, 1, True)])
        assert len(deltas) == 2 and not failures
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gpu_layers": 10}, "gpu_layers"),
        ({"tensor_split": (0.5, 0.5)}, "tensor_split"),
        ({"kv_cache_type": "q8_0"}, "kv_cache_type"),
        ({"options": {"flash": True}}, "unknown MLX option"),
    ],
)
def test_llamacpp_only_settings_are_refused_at_load(
    tiny_model: TinyModel, overrides: dict[str, object], message: str
) -> None:
    from backends.mlx.backend import MlxPlugin

    with pytest.raises(ModelLoadError, match=message):
        MlxPlugin().load(request(tiny_model.mlx_dir, **overrides))


def test_a_folder_that_is_not_a_model_is_a_clear_load_error(tmp_path: Path) -> None:
    from backends.mlx.backend import MlxPlugin

    with pytest.raises(ModelLoadError, match="not an MLX model folder"):
        MlxPlugin().load(request(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "no-such-arch"}')
    with pytest.raises(ModelLoadError, match="MLX could not load"):
        MlxPlugin().load(request(tmp_path))


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_folders_load_and_generate(
    tiny_model: TinyModel, tmp_path: Path, bits: int
) -> None:
    import contextlib
    import io

    from mlx_lm.convert import convert

    from backends.mlx.backend import MlxPlugin

    folder = tmp_path / f"q{bits}"
    with contextlib.redirect_stdout(io.StringIO()):
        convert(str(tiny_model.hf_dir), str(folder), quantize=True, q_bits=bits, q_group_size=64)
    backend = MlxPlugin().load(request(folder))
    try:
        assert backend.capabilities.details["quantization"]["bits"] == bits
        full = backend.capabilities.details["weights_bytes"]
        prompt = backend.chat_prompt(PROMPTS[0])
        tokens = generate(backend, [prompt, prompt[:-2]], steps=8)
        assert all(len(t) == 8 for t in tokens)
        assert generate(backend, [prompt], steps=8)[0] == tokens[0]
    finally:
        backend.close()
    assert full < plan_bytes(tiny_model.mlx_dir) / (32 / bits) * 1.5


def plan_bytes(folder: Path) -> int:
    from backends.mlx.load import plan

    return plan(folder).weights_bytes


def test_hearth_info_plans_an_mlx_folder(tiny_model: TinyModel, tmp_path: Path) -> None:
    from server.cli.info import plan_report, report
    from server.config import load_models_file

    toml = tmp_path / "models.toml"
    toml.write_text(
        f'[models.tiny]\npath = "{tiny_model.mlx_dir}"\ncontext_length = 4096\nmax_sequences = 2\n'
    )
    models = load_models_file(toml, tmp_path)
    text = plan_report(models.models["tiny"], gpu_memory=1 << 30)
    # 2 layers x (K and V) x 2 KV heads x 16 dims x 4 bytes (float32)
    assert "512 bytes per token" in text and "memory limit: 1.00 GiB (--gpu-memory)" in text
    assert "KV budget served: 4096 tokens" in text
    overview = report(models)
    assert "tiny: mlx (auto: MLX model folder)" in overview
    assert "mlx: available (device cpu" in overview


def test_a_failed_forward_pass_fails_its_sequences_and_the_backend_serves_on(
    mlx: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = mlx.chat_prompt(PROMPTS[1])
    expected = generate(mlx, [prompt], steps=4, first_id=800)[0]
    model = mlx._model  # type: ignore[attr-defined]

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("[metal::malloc] out of memory")

    mlx.add(810, prompt, GREEDY)
    monkeypatch.setattr(mlx, "_model", broken)
    deltas, failures = mlx.step([Work(810, len(prompt), True)])
    assert deltas == [] and failures[0].seq_ids == (810,)
    assert "out of memory" in failures[0].message
    monkeypatch.setattr(mlx, "_model", model)
    mlx.release(810)  # idempotent: already dropped
    assert generate(mlx, [prompt], steps=4, first_id=820)[0] == expected


def test_a_top_k_past_the_vocabulary_and_a_negative_seed_are_served(mlx: Backend) -> None:
    """top_k above the vocabulary means no top-k (as in llama.cpp), every 64-bit seed
    seeds a generator; three such requests in a row (the engine gives up after three
    failed steps) all answer and the backend serves on."""
    prompt = mlx.chat_prompt(PROMPTS[1])
    expected = generate(mlx, [prompt], steps=4, first_id=1000)[0]
    vocab = mlx.capabilities.vocab_size
    unlimited = generate(mlx, [prompt], SamplingParams(top_k=0, seed=3), first_id=1001)[0]
    for i in range(3):
        wide = SamplingParams(top_k=vocab + 1 + i, seed=3)
        assert generate(mlx, [prompt], wide, first_id=1010 + i)[0] == unlimited
    negative = SamplingParams(temperature=1.5, top_k=0, seed=-1)
    one = generate(mlx, [prompt], negative, first_id=1020)[0]
    assert generate(mlx, [prompt, prompt], negative, first_id=1021) == [one, one]
    assert generate(mlx, [prompt], steps=4, first_id=1030)[0] == expected


def test_a_failed_sample_fails_its_sequence_only(
    mlx: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = [mlx.chat_prompt(PROMPTS[0]), mlx.chat_prompt(PROMPTS[1])]
    expected = generate(mlx, [prompts[1]], steps=6, first_id=1100)[0]
    fed = [mlx.add(1110 + i, p, GREEDY) for i, p in enumerate(prompts)]

    def broken(logits: object) -> int:
        raise ValueError("probabilities contain NaN")

    monkeypatch.setattr(mlx._seqs[1110].sampler, "sample", broken)  # type: ignore[attr-defined]
    work = [Work(1110 + i, len(p) - fed[i], True) for i, p in enumerate(prompts)]
    deltas, failures = mlx.step(work)
    assert [f.seq_ids for f in failures] == [(1110,)]
    assert "sampling failed" in failures[0].message and "NaN" in failures[0].message
    got = [d.token for d in deltas]
    assert [d.seq_id for d in deltas] == [1111]
    while len(got) < 6:
        deltas, failures = mlx.step([Work(1111, 1, True)])
        assert not failures
        got += [d.token for d in deltas]
    mlx.release(1110)  # idempotent: already dropped
    mlx.release(1111)
    assert got == expected


def test_prompts_prefilled_together_over_unequal_caches_match_solo(mlx: Backend) -> None:
    """One padded prefill pass over a sequence with a reused prefix, a fresh one and
    one in its second chunk gives each the tokens it gets alone."""
    shared = mlx.chat_prompt(PROMPTS[0])
    generate(mlx, [shared], steps=2, first_id=900)  # leaves a cached prefix
    prompts = [
        shared[:-1] + mlx.tokenize(" and subtract", add_special=False) + shared[-1:],
        mlx.tokenize("a short fresh prompt", add_special=False),
        mlx.chat_prompt([ChatMessage("user", "A longer fresh prompt, prefilled in two chunks.")]),
    ]
    fed = [mlx.add(920 + i, p, GREEDY) for i, p in enumerate(prompts)]
    assert fed[0] > fed[2] > fed[1] == 0  # 922 shares only the template's system prompt
    split = 5  # the third prompt's first chunk goes alone, its second with the others
    mlx.step([Work(922, split, False)])
    work = [Work(920, len(prompts[0]) - fed[0], True), Work(921, len(prompts[1]), True)]
    work.append(Work(922, len(prompts[2]) - fed[2] - split, True))
    together: dict[int, list[int]] = {920: [], 921: [], 922: []}
    while len(together[920]) < STEPS:
        deltas, failures = mlx.step(work)
        assert not failures
        for delta in deltas:
            together[delta.seq_id].append(delta.token)
        work = [Work(s, 1, True) for s in together]
    for s in together:
        mlx.release(s)
    solo = [generate(mlx, [p], first_id=930 + i)[0] for i, p in enumerate(prompts)]
    assert [together[920 + i] for i in range(3)] == solo
