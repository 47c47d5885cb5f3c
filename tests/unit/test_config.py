from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, load_models_file
from server.settings import Settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_the_repository_models_file_loads() -> None:
    root = Path(__file__).resolve().parents[2]
    models = load_models_file(root / "models.toml", Path("/cache"))
    assert models.default == "qwen2.5-coder-0.5b"
    qwen = models.resolve("default")
    assert qwen is not None and qwen.name == "qwen2.5-coder-0.5b"
    assert qwen.path == Path("/cache/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    assert qwen.source is not None and qwen.source.startswith("pypi:")
    assert qwen.sha256 and qwen.sampling.top_k == 20
    assert models.resolve("gemma3") is models.models["gemma-3-270m"]


def test_every_key(tmp_path: Path) -> None:
    (tmp_path / "t.jinja").write_text("{{ messages[0].content }}")
    path = write(
        tmp_path,
        """
        [models.m]
        aliases = ["x"]
        backend = "llamacpp"
        path = "~/m.gguf"
        source = "hf:org/repo/m.gguf"
        context_length = 4096
        max_sequences = 3
        threads = 6
        gpu_layers = 20
        tensor_split = [3, 1]
        chat_template_file = "t.jinja"
        batch_tokens = 256
        default_max_tokens = 100
        options = { prefix_cache = false }
        [models.m.sampling]
        temperature = 0.2
        seed = 7
        """,
    )
    m = load_models_file(path, tmp_path / "cache").models["m"]
    assert m.path == Path.home() / "m.gguf"
    assert (m.context_length, m.max_sequences, m.threads, m.gpu_layers) == (4096, 3, 6, 20)
    assert m.tensor_split == (3.0, 1.0) and m.batch_tokens == 256 and m.default_max_tokens == 100
    assert m.chat_template == "{{ messages[0].content }}"
    assert m.sampling.temperature == 0.2 and m.sampling.seed == 7
    assert m.options == {"prefix_cache": False}
    assert m.gpu_layers is not None


@pytest.mark.parametrize(
    ("value", "expected"), [('"auto"', None), ("true", True), ("false", False)]
)
def test_weight_repack(tmp_path: Path, value: str, expected: bool | None) -> None:
    path = write(tmp_path, f'[models.m]\npath = "m.gguf"\nweight_repack = {value}\n')
    assert load_models_file(path, tmp_path).models["m"].weight_repack is expected


def test_output_parsers_are_known_names_or_none(tmp_path: Path) -> None:
    text = '[models.m]\npath = "m.gguf"\nreasoning_parser = "think"\ntool_parser = "none"\n'
    model = load_models_file(write(tmp_path, text), tmp_path).models["m"]
    assert (model.reasoning_parser, model.tool_parser) == ("think", "none")
    plain = load_models_file(write(tmp_path, '[models.m]\npath = "m.gguf"\n'), tmp_path)
    assert plain.models["m"].reasoning_parser is None  # detected at load
    bad = write(tmp_path, '[models.m]\npath = "m.gguf"\ntool_parser = "xml"\n')
    with pytest.raises(ConfigError, match=r"'tool_parser' must be one of .*\"hermes\""):
        load_models_file(bad, tmp_path)


def test_tasks_and_their_pooling(tmp_path: Path) -> None:
    text = """
    [models.chat]
    path = "c.gguf"
    [models.minilm]
    path = "e.gguf"
    task = "embed"
    [models.nomic]
    path = "n.gguf"
    task = "embed"
    pooling = "last"
    normalize = false
    matryoshka = true
    max_sequences = 16
    [models.ranker]
    path = "r.gguf"
    task = "rerank"
    """
    models = load_models_file(write(tmp_path, text), tmp_path)
    chat, minilm, nomic, ranker = (models.models[n] for n in ("chat", "minilm", "nomic", "ranker"))
    assert (chat.task, chat.pooling, chat.normalize, chat.max_sequences) == (
        "generate", None, False, 8,
    )  # fmt: skip
    # an embedding model: pooling from its GGUF, normalised, 64 inputs a pass
    assert (minilm.task, minilm.pooling, minilm.normalize, minilm.matryoshka) == (
        "embed", None, True, False,
    )  # fmt: skip
    assert minilm.max_sequences == 64
    assert (nomic.pooling, nomic.normalize, nomic.matryoshka, nomic.max_sequences) == (
        "last", False, True, 16,
    )  # fmt: skip
    assert (ranker.task, ranker.pooling, ranker.normalize) == ("rerank", "rank", False)
    assert models.serving("embed") == ["minilm", "nomic"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('task = "chat"', 'key \'task\' must be one of "generate", "embed", "rerank"'),
        ('pooling = "mean"', 'key \'pooling\' needs task = "embed" or "rerank"'),
        ("normalize = true", "key 'normalize' needs task = \"embed\""),
        ("matryoshka = true", "key 'matryoshka' needs task = \"embed\""),
        ('task = "rerank"\nnormalize = true', "key 'normalize' needs task = \"embed\""),
        ('task = "rerank"\npooling = "mean"', "key 'pooling' must be one of \"rank\""),
        ('task = "embed"\npooling = "rank"', 'must be one of "mean", "cls", "last"'),
        ('task = "embed"\npooling = "max"', "key 'pooling' must be one of"),
        ('task = "embed"\nnormalize = "yes"', "key 'normalize' must be true or false"),
    ],
)
def test_task_mistakes_name_the_model_and_key(tmp_path: Path, body: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_models_file(write(tmp_path, f'[models.m]\npath = "a"\n{body}\n'), tmp_path)
    assert "model 'm'" in str(info.value) and fragment in str(info.value)


def test_gpu_layers_auto_is_none(tmp_path: Path) -> None:
    path = write(tmp_path, '[models.m]\npath = "m.gguf"\ngpu_layers = "auto"\n')
    assert load_models_file(path, tmp_path).models["m"].gpu_layers is None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('[models.m]\npath = "a"\ncontext_length = "big"', "model 'm': key 'context_length'"),
        ('[models.m]\npath = "a"\nmax_sequences = 0', "key 'max_sequences'"),
        ('[models.m]\npath = "a"\nbogus = 1', "unknown key(s): bogus"),
        ("[models.m]\ncontext_length = 10", "key 'path' is required"),
        ('[models.m]\npath = "a"\ngpu_layers = "most"', "key 'gpu_layers'"),
        (
            '[models.m]\npath = "a"\n[models.m.sampling]\nheat = 1',
            "unknown key(s) in sampling: heat",
        ),
        (
            '[models.m]\npath = "a"\n[models.m.sampling]\ntemperature = "hot"',
            "sampling.temperature",
        ),
        ('[models.m]\npath = "a"\ntensor_split = [-1]', "key 'tensor_split'"),
        ('[models.m]\npath = "a"\naliases = "x"', "key 'aliases'"),
        ('[models.m]\npath = "a"\nchat_template_file = "nope.jinja"', "chat_template_file"),
        ('default = "z"\n[models.m]\npath = "a"', "default = 'z'"),
        ('[models.m]\npath = "a"\naliases = ["n"]\n[models.n]\npath = "b"', "'n' is also used"),
        ('[models.m]\npath = "a"\nmax_sequences = "8"', "model 'm': key 'max_sequences'"),
        ('[models.m]\npath = "a"\nthreads = 2.0', "model 'm': key 'threads'"),
        ('[models.m]\npath = "a"\n[models.m.sampling]\ntop_k = 20.0', "sampling.top_k"),
        ('[models.m]\npath = "a"\n[models.m.sampling]\ntemperature = 9', "from 0 to 2"),
        ('[models.m]\npath = "a"\n[models.m.sampling]\ntop_p = -0.1', "sampling.top_p"),
        ('[models.m]\npath = "a"\n[models.m.sampling]\nseed = true', "sampling.seed"),
        ('[models.m]\npath = "a"\nweight_repack = "yes"', "key 'weight_repack'"),
        ("x = 1", "at least one [models.NAME]"),
        ("[models.m\n", "invalid TOML"),
    ],
)
def test_mistakes_name_the_model_and_key(tmp_path: Path, body: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_models_file(write(tmp_path, body), tmp_path)
    assert fragment in str(info.value)


def test_resolve_is_a_key_lookup_never_a_path(tmp_path: Path) -> None:
    models = load_models_file(write(tmp_path, '[models.m]\npath = "a"'), tmp_path)
    for name in ("../m", "/dev/random", "org/repo", "a", "M"):
        assert models.resolve(name) is None
    assert models.resolve("m") is not None


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_PORT", "9001")
    monkeypatch.setenv("HEARTH_LOAD", '["a", "b"]')
    monkeypatch.setenv("HEARTH_MAX_QUEUE", "3")
    settings = Settings()
    assert (settings.port, settings.load, settings.max_queue) == (9001, ("a", "b"), 3)
    assert settings.host == "127.0.0.1"
    assert Settings(port=1).port == 1  # a flag beats the environment


def test_an_alias_pattern_matches_after_every_exact_name(tmp_path: Path) -> None:
    body = (
        '[models.big]\npath = "a"\naliases = ["claude-*"]\n'
        '[models.small]\npath = "b"\naliases = ["claude-haiku-4-5", "x?"]\n'
    )
    models = load_models_file(write(tmp_path, body), tmp_path)
    assert models.resolve("claude-opus-4-8") is models.models["big"]
    assert models.resolve("claude-haiku-4-5") is models.models["small"]  # exact wins
    assert models.resolve("x?") is models.models["small"]
    assert models.resolve("xy") is None  # only * is special
    assert models.resolve("gpt-4") is None
