"""A model split by a device_map, later layers offloaded to disk: every number equals the model in memory.

accelerate keeps an offloaded module's weights on the meta device between calls and loads them for
the length of each call; so the engine is right on such a model only if it reaches every weight
through the module (`seqprobe.engine.placement`). Each tiny architecture is saved once, then loaded
twice: on the CPU, and with layer 0 and the token embedding on "cpu" and every later layer and
the final norm on "disk" (and, in an untied Llama, the unembedding too).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from seqprobe.engine.architectures import resumable_forward
from seqprobe.engine.attribution import (
    DLA_NEEDS,
    LENS_NEEDS,
    attribution_patching,
    direct_logit_attribution,
    logit_lens,
)
from seqprobe.engine.forward import ACTIVATIONS, ResumableForward
from seqprobe.engine.patching import PatchingPair, PatchingRuns, make_pair, prepare_patching
from seqprobe.engine.placement import execution_device, is_offloaded, read_weights
from seqprobe.errors import PatchingError
from seqprobe.loading.models import LoadedModel, load_model
from seqprobe.loading.weights_cache import CACHE_DIR_ENV
from seqprobe.vocabulary.sites import SITES
from tests._sharp_models import BUILDERS, save_sharp_model
from tests._tiny_models import build_tiny_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore")

TEMPLATE = " Today it is {}, tomorrow it is"
STUDY = [("Sunday", "Tuesday", "Monday", "Wednesday"), ("Friday", "Thursday", "Saturday", "Friday")]
# The sharp models of tests/_sharp_models.py, and a Llama whose unembedding is its own (offloadable) matrix.
ARCHITECTURES = ("llama", "gpt2", "gemma3", "llama-untied")
N_LAYERS = 3


def _save(arch: str, path: Path) -> Path:
    if arch != "llama-untied":
        return save_sharp_model(arch, path)
    model = BUILDERS["llama"]()
    model.config.tie_word_embeddings = False
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.clone() * 1.5)
    model.save_pretrained(path)
    build_tiny_tokenizer().save_pretrained(path)
    return path


def _device_map(arch: str) -> dict[str, str]:
    """Layer 0 and the embedding on "cpu"; later layers and the final norm on "disk" (the unembedding too, if untied)."""
    if arch == "gpt2":
        base, layers, norm = {"transformer.wte": "cpu", "transformer.wpe": "disk"}, "transformer.h", "transformer.ln_f"
    else:
        base, layers, norm = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu"}, "model.layers", "model.norm"
    placed = {f"{layers}.{layer}": "cpu" if layer == 0 else "disk" for layer in range(N_LAYERS)}
    return base | placed | {norm: "disk", "lm_head": "disk" if arch == "llama-untied" else "cpu"}


@pytest.fixture(scope="module", params=ARCHITECTURES)
def models(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, LoadedModel, LoadedModel]]:
    """(architecture, the model in memory, the same files loaded with `_device_map`)."""
    arch = request.param
    folder = str(_save(arch, tmp_path_factory.mktemp(f"offload-{arch}")))
    with pytest.MonkeyPatch.context() as patch:
        # The offload folder goes to seqprobe's cache: a temporary one here.
        patch.setenv(CACHE_DIR_ENV, str(tmp_path_factory.mktemp("cache")))
        offloaded = load_model(folder, device_map=_device_map(arch))
    yield arch, load_model(folder, device="cpu"), offloaded


def _forwards(models: tuple[str, LoadedModel, LoadedModel]) -> tuple[ResumableForward, ResumableForward]:
    _, in_memory, offloaded = models
    return resumable_forward(in_memory.bridge.original_model), resumable_forward(offloaded.bridge.original_model)


def _tokens(loaded: LoadedModel) -> torch.Tensor:
    return torch.stack([pair.clean for pair in _pairs(loaded)])


def _pairs(loaded: LoadedModel) -> list[PatchingPair]:
    return [
        make_pair(
            loaded.bridge, clean=TEMPLATE.format(c), corrupted=TEMPLATE.format(r), answer=f" {a}", distractor=f" {d}"
        )
        for c, r, a, d in STUDY
    ]


def _equal(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.device.type != "meta"
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_an_offloaded_weight_has_no_numbers_until_read_through_its_module(models) -> None:  # type: ignore[no-untyped-def]
    """The failure mode the engine must avoid: a raw `.weight` is a meta placeholder, and arithmetic on
    it fails or, worse, gives a meta result (no numbers, and no error until something compares them)."""
    arch, in_memory, offloaded = models
    memory, split = _forwards(models)
    assert offloaded.info.device == "split: cpu, disk"
    projection = split._output_projection(1)
    assert is_offloaded(projection) and not is_offloaded(split._output_projection(0))
    assert projection.weight.is_meta
    # What head_writes computed before it read through the module: a meta tensor, silently.
    assert torch.einsum("d,md->m", torch.ones(projection.weight.shape[-1]), projection.weight).is_meta
    (weight,) = read_weights(projection)
    assert torch.equal(weight, memory._output_projection(1).weight)
    assert projection.weight.is_meta  # the placeholder is back once the read is done
    assert split.device == memory.device == torch.device("cpu")
    assert split.layer_devices == memory.layer_devices == (torch.device("cpu"),) * N_LAYERS
    if arch == "llama-untied":
        assert offloaded.bridge.original_model.lm_head.weight.is_meta
        assert execution_device(offloaded.bridge.original_model.lm_head) == torch.device("cpu")


@torch.no_grad()
def test_activations_and_logits_equal_the_model_in_memory(models) -> None:  # type: ignore[no-untyped-def]
    _, in_memory, offloaded = models
    memory, split = _forwards(models)
    tokens = _tokens(in_memory)
    expected, actual = memory.run(tokens), split.run(tokens)
    for name in ACTIVATIONS:
        for layer in range(N_LAYERS):
            _equal(actual[name, layer], expected[name, layer])
    _equal(split.logits(actual.resid_final), memory.logits(expected.resid_final))
    ids = torch.tensor([[7, 9, 11]] * len(tokens))
    _equal(split.unembed(actual.resid_final[:, -1], ids), memory.unembed(expected.resid_final[:, -1], ids))
    for layer in range(N_LAYERS):
        z = expected["z", layer]
        _equal(split.head_writes(layer, z), memory.head_writes(layer, z))
    last = expected.resid_final[:, -1]
    components = torch.stack([last * 0.25, last * 0.75], dim=1)  # [pair component d_model]
    for got, want in zip(
        split.frozen_final_norm(components, last), memory.frozen_final_norm(components, last), strict=True
    ):
        _equal(got, want)
    _equal(offloaded.bridge(tokens), in_memory.bridge(tokens))


@pytest.fixture(scope="module")
def runs(models) -> tuple[PatchingRuns, PatchingRuns]:  # type: ignore[no-untyped-def]
    """Both models' patching runs, keeping what direct attribution and the logit lens read."""
    _, in_memory, offloaded = models
    keep = DLA_NEEDS | LENS_NEEDS
    return tuple(prepare_patching(model.bridge, _pairs(model), keep_clean=keep) for model in (in_memory, offloaded))  # type: ignore[return-value]


@pytest.mark.parametrize("site", SITES)
def test_sweeps_equal_the_model_in_memory(runs, site: str) -> None:  # type: ignore[no-untyped-def]
    memory, split = runs
    expected, actual = memory.sweep(site), split.sweep(site)
    assert float(expected.metric.max() - expected.metric.min()) > 0.01  # a grid that shows a difference
    _equal(actual.metric, expected.metric)
    assert (actual.clean_metric, actual.corrupted_metric) == pytest.approx(
        (expected.clean_metric, expected.corrupted_metric), abs=1e-5
    )


def test_logit_lens_and_attribution_patching_equal_the_model_in_memory(runs) -> None:  # type: ignore[no-untyped-def]
    memory, split = runs
    _equal(logit_lens(split).pairs, logit_lens(memory).pairs)
    expected, actual = attribution_patching(memory), attribution_patching(split)
    for site in SITES:
        _equal(actual[site].metric, expected[site].metric)


def test_direct_logit_attribution_equals_the_model_in_memory(runs) -> None:  # type: ignore[no-untyped-def]
    memory, split = runs
    expected, actual = direct_logit_attribution(memory), direct_logit_attribution(split)
    _equal(actual.head_pairs, expected.head_pairs)
    _equal(actual.component_pairs, expected.component_pairs)
    assert actual.constant == pytest.approx(expected.constant, abs=1e-5)


def test_zero_head_refuses_an_offloaded_layer(models) -> None:  # type: ignore[no-untyped-def]
    _, split = _forwards(models)
    with pytest.raises(PatchingError, match=r"cannot zero head L1H2: layer 1 is offloaded \(device_map\)"):
        split.zero_head(1, 2)
