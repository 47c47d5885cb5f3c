"""Plugins, the registry's choice, hardware detection, and the template sandbox."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backends import registry
from backends.base import ChatMessage, TemplateError
from backends.hardware import Hardware, detect, physical_cores
from backends.llamacpp.backend import LlamaCppPlugin
from backends.registry import BackendUnavailable, PluginInfo
from backends.templates import ChatTemplate
from tests.fakes import FakePlugin

LINUX = Hardware("Linux", "x86_64", 2, 2, 2**30, ())
MAC = Hardware("Darwin", "arm64", 8, 8, 2**30, ())


class MissingPlugin(FakePlugin):
    name = "missing"

    def unavailable_reason(self) -> str | None:
        return "needs libfoo; pip install foo"


def plugins() -> dict[str, PluginInfo]:
    return {
        "llamacpp": PluginInfo("llamacpp", LlamaCppPlugin(), None),
        "missing": PluginInfo("missing", MissingPlugin(), "needs libfoo; pip install foo"),
    }


def test_discover_finds_llamacpp_through_the_entry_point() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert names["llamacpp"] == "backends.llamacpp.backend:LlamaCppPlugin"
    found = registry.discover()
    assert found["llamacpp"].available


def test_a_third_party_plugin_is_found_through_the_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class EntryPoint:
        name, value = "fake", "tests.fakes:FakePlugin"

    monkeypatch.setattr(registry, "entry_points", lambda group: [EntryPoint()])
    found = registry.discover()
    assert found["fake"].available and found["fake"].plugin is not None


def test_auto_picks_llamacpp_for_gguf(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    assert registry.choose("auto", model, plugins(), LINUX).name == "llamacpp"
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(b"GGUF" + bytes(16))
    assert registry.choose("auto", renamed, plugins(), LINUX).name == "llamacpp"


def test_an_unavailable_backend_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="needs libfoo"):
        registry.choose("missing", tmp_path / "m.gguf", plugins(), LINUX)
    with pytest.raises(BackendUnavailable, match="unknown backend 'nope'"):
        registry.choose("nope", tmp_path / "m.gguf", plugins(), LINUX)


def test_an_mlx_folder_without_mlx_says_what_to_install(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BackendUnavailable, match=r"Apple Silicon.*hearth\[mlx\].*GGUF"):
        registry.choose("auto", tmp_path, plugins(), LINUX)
    with pytest.raises(BackendUnavailable, match=r"MLX model folder .*pip install 'hearth\[mlx\]'"):
        registry.choose("auto", tmp_path, plugins(), MAC)
    missing = {**plugins(), "mlx": PluginInfo("mlx", MissingPlugin(), "mlx-lm is missing")}
    with pytest.raises(BackendUnavailable, match="mlx-lm is missing"):
        registry.choose("auto", tmp_path, missing, MAC)


def test_auto_picks_mlx_for_an_mlx_folder_where_mlx_is_installed(tmp_path: Path) -> None:
    from backends.mlx.backend import MlxPlugin

    (tmp_path / "config.json").write_text("{}")
    here = {**plugins(), "mlx": PluginInfo("mlx", MlxPlugin(), None)}
    assert registry.choose("auto", tmp_path, here, MAC).name == "mlx"
    assert registry.choose("auto", tmp_path, here, LINUX).name == "mlx"
    assert not MlxPlugin().accepts(tmp_path / "config.json")


def test_choosing_a_backend_for_a_gguf_never_imports_mlx(tmp_path: Path) -> None:
    """Only the chosen plugin is asked whether it runs here: a server of GGUF models does
    not import MLX (a second of start-up, memory, and native teardown it has no use for)."""
    code = (
        "import sys; from pathlib import Path; from backends import registry, hardware\n"
        "found = registry.discover()\n"
        "info = registry.choose('auto', Path(sys.argv[1]), found, hardware.detect())\n"
        "print(info.name, 'mlx' in found, 'mlx.core' in sys.modules, 'mlx_lm' in sys.modules)"
    )
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(16))
    run = subprocess.run(
        [sys.executable, "-c", code, str(model)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["llamacpp", "True", "False", "False"]


@pytest.mark.parametrize("task", ["embed", "rerank"])
def test_the_mlx_backend_refuses_to_embed_saying_why(tmp_path: Path, task: str) -> None:
    from backends.base import LoadRequest, ModelLoadError
    from backends.mlx.backend import MlxPlugin

    request = LoadRequest(
        name="m", path=tmp_path, context_length=512, max_sequences=4, threads=1,
        gpu_layers=None, tensor_split=None, chat_template=None, batch_tokens=64, task=task,
    )  # fmt: skip
    with pytest.raises(ModelLoadError, match=r"generates text only.*GGUF on llama\.cpp"):
        MlxPlugin().load(request)


def test_a_plugin_is_probed_once_and_only_when_asked() -> None:
    class Counting(FakePlugin):
        probes = 0

        def unavailable_reason(self) -> str | None:
            Counting.probes += 1
            return "not here"

    info = PluginInfo("counting", Counting())
    assert Counting.probes == 0
    assert not info.available and info.reason == "not here"
    assert Counting.probes == 1


def test_hardware_detection() -> None:
    hw = detect()
    assert 1 <= hw.physical_cores <= hw.logical_cpus
    assert hw.memory_bytes > 0
    assert physical_cores() == hw.physical_cores


QWEN_LIKE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_template_renders_with_the_generation_prompt() -> None:
    text = ChatTemplate(QWEN_LIKE).render([ChatMessage("user", "hi")])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__.__init__.__globals__ }}",
        "{% set x = messages.append(1) %}",
        "{{ raise_exception('no system role') }}",
        "{{ cycler.__init__.__globals__.os }}",
    ],
)
def test_template_sandbox_refuses_python_internals(source: str) -> None:
    with pytest.raises(TemplateError):
        ChatTemplate(source).render([ChatMessage("user", "hi")])


def test_template_that_does_not_compile() -> None:
    with pytest.raises(TemplateError, match="does not compile"):
        ChatTemplate("{% for %}")
