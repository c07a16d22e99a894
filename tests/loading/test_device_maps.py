"""Loading with --device-map / device_map=: parsing, refusals that say how to fix them, the record, the folder.

The engine's numbers on an offloaded model are tests/engine/test_offload.py's; here the option
travels from the command line to `load_model`, and what transformers, accelerate and
transformer_lens refuse becomes one `ModelLoadError` naming the option.
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import textwrap
from pathlib import Path

import pytest
import torch

from seqprobe.errors import ModelLoadError
from seqprobe.loading.models import load_model, loaded_from_bridge
from seqprobe.loading.weights_cache import CACHE_DIR_ENV, cache_root
from seqprobe.records.results import load_results
from seqprobe.vocabulary.options import DEVICE_MAP_STRATEGIES, add_model_options, parse_device_map

pytestmark = pytest.mark.filterwarnings("ignore")

SPLIT = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.norm": "disk",
    "lm_head": "cpu",
}


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty seqprobe cache per test: offload folders are made (and must be removed) there."""
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _offload_folders() -> list[Path]:
    root = cache_root() / "offload"
    return sorted(root.iterdir()) if root.is_dir() else []


# -- the option -----------------------------------------------------------------------------------


def test_a_device_map_is_a_strategy_a_json_object_or_a_json_file(tmp_path: Path) -> None:
    for strategy in DEVICE_MAP_STRATEGIES:
        assert parse_device_map(strategy) == strategy
    assert parse_device_map(json.dumps(SPLIT)) == SPLIT
    assert parse_device_map('{"model.layers.0": 0}') == {"model.layers.0": 0}
    saved = tmp_path / "map.json"
    saved.write_text(json.dumps(SPLIT))
    assert parse_device_map(str(saved)) == SPLIT


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cuda", "device map 'cuda': expected auto, balanced, balanced_low_0, sequential, a JSON object"),
        ("[1, 2]", "device map '[1, 2]': expected auto"),
        (
            '{"model.layers.0": true}',
            """device map '{"model.layers.0": true}': devices must be names or GPU indices, found {'model.layers.0': True}""",
        ),
        ("{model.layers.0: cpu}", "device map '{model.layers.0: cpu}': Expecting property name"),
        ("missing.json", "device map 'missing.json': [Errno 2] No such file or directory"),
    ],
)
def test_a_bad_device_map_says_the_forms(text: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_device_map(text)
    assert str(raised.value).startswith(message)


def test_every_model_command_parses_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_model_options(parser.add_argument)
    assert parser.parse_args([]).device_map is None
    assert parser.parse_args(["--device-map", "auto"]).device_map == "auto"
    assert parser.parse_args(["--device-map", json.dumps(SPLIT)]).device_map == SPLIT
    with pytest.raises(SystemExit):
        parser.parse_args(["--device-map", "gpu"])
    assert "argument --device-map: device map 'gpu': expected auto" in capsys.readouterr().err


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"device": "cpu", "device_map": "auto"},
            "device='cpu' and device_map='auto' both place the model; pass one (keep --device auto",
        ),
        (
            {"max_memory": {"cpu": "1GB"}},
            "max_memory={'cpu': '1GB'} without a device_map: it is the per-device budget accelerate splits",
        ),
        (
            {"device_map": "cuda:0"},
            "--device-map / device_map='cuda:0' is not one of accelerate's strategies (auto, balanced, "
            "balanced_low_0, sequential); for one device use --device cuda:0",
        ),
        ({"device_map": {}}, "--device-map / device_map={}: expected module name -> device"),
    ],
)
def test_contradictory_placements_are_refused_before_loading(options: dict[str, object], message: str) -> None:
    with pytest.raises(ModelLoadError) as raised:
        load_model("no-such-model", **options)  # type: ignore[arg-type]
    assert str(raised.value).startswith(message)


def test_a_map_mixing_a_gpu_with_disk_names_the_option_and_the_fix(tiny_llama_dir: Path) -> None:
    mixed = SPLIT | {"model.layers.0": 0}
    with pytest.raises(ModelLoadError) as raised:
        load_model(str(tiny_llama_dir), device_map=mixed)
    message = str(raised.value)
    assert message.startswith(f"cannot load '{tiny_llama_dir}' with --device-map / device_map={mixed!r}: ")
    assert "device_map mixes CPU/disk offload targets with a GPU target" in message
    assert message.endswith("uses only GPUs or only cpu/disk (transformer_lens refuses a mix); or load on one --device")
    assert _offload_folders() == []


def test_an_offloaded_token_embedding_is_refused(tiny_llama_dir: Path) -> None:
    """transformer_lens 4.3 puts input tokens where the embedding's weights are: on meta, for an offloaded one."""
    embedding_on_disk = SPLIT | {"model.embed_tokens": "disk", "lm_head": "disk"}
    with pytest.raises(ModelLoadError, match="it offloads the token embedding, so transformer_lens has no device"):
        load_model(str(tiny_llama_dir), device_map=embedding_on_disk)
    gc.collect()
    assert _offload_folders() == []


# -- loading --------------------------------------------------------------------------------------


def test_auto_on_one_device_records_that_device(tiny_llama_dir: Path) -> None:
    loaded = load_model(str(tiny_llama_dir), device_map="auto")
    assert loaded.info.device == ("cuda:0" if torch.cuda.is_available() else "cpu")


def test_auto_within_max_memory_offloads_and_keeps_the_numbers(tiny_llama_dir: Path) -> None:
    """Four fifths of the weights' bytes for the CPU: accelerate puts the layers on disk; the logits do not move.

    (With half, it would offload the embedding too, which transformer_lens cannot take: see above.)
    """
    size = (tiny_llama_dir / "model.safetensors").stat().st_size
    split = load_model(str(tiny_llama_dir), device_map="auto", max_memory={"cpu": size * 4 // 5})
    assert split.info.device == "split: cpu, disk"
    assert "disk" in split.bridge.original_model.hf_device_map.values()
    in_memory = load_model(str(tiny_llama_dir), device="cpu")
    with torch.no_grad():
        expected, actual = in_memory.bridge(" Today it is Sunday"), split.bridge(" Today it is Sunday")
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_the_offload_folder_lives_as_long_as_the_bridge(tiny_llama_dir: Path) -> None:
    loaded = load_model(str(tiny_llama_dir), device_map=SPLIT)
    (folder,) = _offload_folders()
    assert folder.name.startswith("seqprobe-")
    handed_over = loaded_from_bridge(loaded.bridge)
    assert handed_over.info.device == loaded.info.device == "split: cpu, disk"
    del loaded, handed_over
    gc.collect()
    assert not folder.exists()


# -- the plugin -----------------------------------------------------------------------------------

CASES = """
suites:
  days:
    cases:
      - id: tomorrow
        prompt: "Today it is Sunday, tomorrow it is"
        answer: " Monday"
        distractors: [" Friday"]
        expect: {max_rank: 100000}
      - kind: patching
        id: days
        over: {day: days}
        prompt: "Today it is {day}, tomorrow it is"
        answer: " {day+1}"
        corrupt: {day: 2}
        claims:
          - patch: {site: resid_pre, at: substituted, layers: [0, 1.0], require: some, min_recovery: -100}
          - patch: {site: attn_out, at: final, layers: [0, 1.0], require: some, min_recovery: -100}
"""


@pytest.mark.parametrize("sharp_model_dir", ["llama"], indirect=True)
def test_the_plugin_passes_device_map_and_the_results_equal_the_model_in_memory(
    pytester: pytest.Pytester, sharp_model_dir: Path
) -> None:
    """A completion and a patching case on the three-layer sharp Llama, layers 1 and 2 on disk."""
    pytester.makefile(".seqprobe.yaml", days=textwrap.dedent(CASES))
    model = ["--model", str(sharp_model_dir)]
    in_memory = pytester.runpytest(*model, "--baseline", "memory.json", "--update-baseline")
    in_memory.assert_outcomes(passed=2)
    device_map = json.dumps(SPLIT | {"model.layers.2": "disk"})
    split = pytester.runpytest(*model, "--device-map", device_map, "--baseline", "split.json", "--update-baseline")
    split.assert_outcomes(passed=2)
    expected, actual = (load_results(pytester.path / name) for name in ("memory.json", "split.json"))
    assert (expected.model["device"], actual.model["device"]) == ("cpu", "split: cpu, disk")
    assert [case.case_id for case in actual.cases] == [case.case_id for case in expected.cases]
    for want, got in zip(expected.cases, actual.cases, strict=True):
        assert got.metrics.keys() == want.metrics.keys() and want.metrics
        assert got.metrics == pytest.approx(want.metrics, abs=1e-5)


def test_a_split_model_is_reproduced_with_its_map_not_a_device(tmp_path: Path, tiny_llama_dir: Path) -> None:
    from seqprobe.notebook import run

    case_file = tmp_path / "c.seqprobe.yaml"
    case_file.write_text(
        'suites:\n  s:\n    cases:\n      - {id: one, prompt: "Today it is", answer: " Monday", expect: {max_rank: 100000}}\n',
        encoding="utf-8",
    )
    loaded = load_model(str(tiny_llama_dir), device_map=SPLIT)
    command = shlex.split(run(case_file, model=loaded).results.environment["command"])
    assert "--device" not in command
    assert json.loads(command[command.index("--device-map") + 1]) == SPLIT
