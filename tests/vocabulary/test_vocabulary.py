"""The shared words: head names parse what they format, hooks name TransformerLens's, metrics agree."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqprobe.vocabulary.circuits import (
    ABLATION_METHODS,
    COMPONENT_KINDS,
    COMPONENT_SITES,
    SUPPORTED_ABLATIONS,
    Component,
    parse_component,
)
from seqprobe.vocabulary.heads import format_head, parse_head, resolve_layer
from seqprobe.vocabulary.metrics import (
    DEFAULT_TOLERANCES,
    METRICS,
    REPORT_COLUMNS,
    THRESHOLD_KINDS,
    Level,
    metric_family,
)
from seqprobe.vocabulary.sites import HEAD_SITES, HOOK_NAMES, POSITION_SITES, SITES, hook_name

layers = st.integers(min_value=-40, max_value=40)
heads = st.integers(min_value=0, max_value=64)


@given(layers, heads, st.booleans())
def test_parse_head_inverts_format_head(layer: int, head: int, key_value: bool) -> None:
    assert parse_head(format_head(layer, head, key_value=key_value)) == (layer, head)


@pytest.mark.parametrize("text", ["L5", "H3", "L5H", "l5h3", "L5H3x", "L5.0H3", ""])
def test_malformed_head_names_do_not_parse(text: str) -> None:
    assert parse_head(text) is None


def test_head_names_read_as_transformer_lens_writes_them() -> None:
    assert (format_head(23, 3), format_head(5, 1, key_value=True)) == ("L23H3", "L5KV1")


@given(st.integers(min_value=1, max_value=100), st.data())
def test_resolved_layers_are_in_range(n_layers: int, data: st.DataObject) -> None:
    spec = data.draw(st.one_of(st.integers(-n_layers, n_layers - 1), st.floats(0.0, 1.0)))
    assert 0 <= resolve_layer(spec, n_layers) <= n_layers - 1
    assert 0 <= resolve_layer(spec, n_layers, inclusive_end=True) <= n_layers


def test_every_site_has_a_hook_and_one_kind() -> None:
    assert set(HOOK_NAMES) == set(SITES) == set(POSITION_SITES) | set(HEAD_SITES)
    assert not set(POSITION_SITES) & set(HEAD_SITES)
    assert hook_name("z", 3) == "blocks.3.attn.hook_z"
    assert hook_name("resid_pre", 0) == "blocks.0.hook_resid_pre"


def test_metrics_have_one_tolerance_and_one_column_each() -> None:
    assert set(DEFAULT_TOLERANCES) == set(METRICS) == set(REPORT_COLUMNS)
    assert [name for name, metric in METRICS.items() if metric.lower_is_better] == ["rank"]
    assert metric_family("recovery:resid_pre@L3") == "recovery"
    # Bounds read min_/max_; the others are a level and a flag, listed here so a new one is a choice.
    others = {name for name in THRESHOLD_KINDS if not name.startswith(("min_", "max_"))}
    assert others == {"confidence", "greedy"}
    assert THRESHOLD_KINDS["greedy"] is bool and THRESHOLD_KINDS["confidence"] is Level


def test_the_continuation_bars_and_metrics_are_named() -> None:
    assert {"min_logprob", "min_logprob_diff", "greedy"} <= set(THRESHOLD_KINDS)
    assert REPORT_COLUMNS[:5] == ("p_answer", "rank", "logit_diff", "logprob", "logprob_diff")
    # A one-token logprob_diff is the logit_diff, so the two share a tolerance.
    assert DEFAULT_TOLERANCES["logprob_diff"] == DEFAULT_TOLERANCES["logit_diff"]


@given(
    st.integers(min_value=0, max_value=80),
    st.sampled_from(COMPONENT_KINDS),
    st.integers(min_value=0, max_value=64),
)
def test_parse_component_inverts_its_name(layer: int, kind: str, head: int) -> None:
    component = Component(layer=layer, kind=kind, head=head if kind == "head" else None)  # type: ignore[arg-type]
    assert parse_component(component.name) == component


@pytest.mark.parametrize("text", ["L5", "L5_attention", "L5KV1", "5_mlp", "L-1H3", "L5H3_mlp", "embed"])
def test_malformed_component_names_do_not_parse(text: str) -> None:
    assert parse_component(text) is None


def test_every_component_replaces_a_site_and_takes_its_ablations() -> None:
    assert set(COMPONENT_SITES) == set(SUPPORTED_ABLATIONS) == set(COMPONENT_KINDS)
    assert set(COMPONENT_SITES.values()) <= set(SITES)
    assert all(set(methods) <= set(ABLATION_METHODS) for methods in SUPPORTED_ABLATIONS.values())
    # Zeroing the residual stream leaves the next norm nothing to scale.
    assert "zero" not in SUPPORTED_ABLATIONS["resid"]
    assert parse_component("L2_resid").site == "resid_pre"
