"""Each mistake in a circuit claim, an ablation or a circuit is a CaseFileError that names
file:line, what was expected and what was found, with a did-you-mean on a near miss."""

from __future__ import annotations

import pytest

from seqprobe.errors import CaseFileError
from tests.casefiles._circuits import PATH, case_with, claims, parse

# Each: the case's claims (empty: keep its one faithfulness claim), text changes, the message.
ERRORS = [
    pytest.param(
        "",
        [("movers: [L9H6, L9H9]", "movers: []")],
        ":19: circuit 'movers' is empty; give at least one component, e.g. [L5H3, L7_mlp]",
        id="empty-circuit",
    ),
    pytest.param(
        "",
        [("movers: [L9H6, L9H9]", "movers: [L9H6, L5_attention]")],
        ":19: circuit 'movers': 'L5_attention' (str) is not a component; components are written L5H3 (a head), "
        "L5_attn, L5_mlp or L5_resid (did you mean 'L5_attn'?)",
        id="unknown-component",
    ),
    pytest.param(
        "",
        [("movers: [L9H6, L9H9]", "movers:\n            - L9H6\n            - L9H6")],
        ":21: circuit 'movers': L9H6 is listed twice",
        id="component-twice",
    ),
    pytest.param(
        "",
        [("movers: [L9H6, L9H9]", "movers: [L9H6, L24_mlp]")],
        ":19: circuit 'movers': L24_mlp is an MLP, outside the case's ablation scope 'heads' (heads only); "
        "give the case ablation: {scope: heads_and_mlps}, or leave it out",
        id="mlp-outside-heads-scope",
    ),
    pytest.param(
        "",
        [("movers: [L9H6, L9H9]", "L5H3: [L9H6]")],
        ":19: circuit name 'L5H3' reads as a component; name a circuit by its role (movers, inhibitors)",
        id="circuit-named-like-a-head",
    ),
    pytest.param(
        "",
        [("circuit: movers", "circuit: mover")],
        ":21: circuit 'mover' in a faithfulness claim is not defined (did you mean 'movers'?); "
        "circuits: shared, wide, movers",
        id="unknown-circuit",
    ),
    pytest.param(
        "",
        [("circuit: movers", "circuit: wide")],
        ":21: circuit 'wide' (line 6): L8_mlp is an MLP, outside the case's ablation scope 'heads' (heads only)",
        id="file-circuit-outside-scope",
    ),
    pytest.param(
        "",
        [("{circuit: movers,", "{circuit: movers, components: [L9H6],")],
        ":21: a faithfulness claim names `circuit: NAME` (from circuits:) or `components: [L5H3, ...]`",
        id="circuit-and-components",
    ),
    pytest.param(
        "",
        [("method: resample,", "method: means,")],
        ":17: method in ablation is one of resample, mean, zero, found method='means' (did you mean 'mean'?)",
        id="unknown-method",
    ),
    pytest.param(
        "",
        [("scope: heads}", "scope: heads_and_mlp}")],
        ":17: scope in ablation is one of heads, heads_and_mlps, found scope='heads_and_mlp' "
        "(did you mean 'heads_and_mlps'?)",
        id="unknown-scope",
    ),
    pytest.param(
        "",
        [("method: resample,", "method: mean,")],
        ":17: method: mean replaces each component by its mean over reference prompts; give reference: corrupted",
        id="mean-without-reference",
    ),
    pytest.param(
        "",
        [("scope: heads}", "scope: heads, reference: corrupted}")],
        ":17: reference is what mean ablation averages over, and this case ablates by resample with no claim "
        "asking for method: mean; leave reference out, or set method: mean",
        id="reference-without-mean",
    ),
    pytest.param(
        "",
        [("method: resample, scope: heads", "method: mean, reference: clean")],
        ":17: reference in ablation is `corrupted` (the case's corrupted prompts) or a template "
        "{prompt: ..., over: {VAR: SEQUENCE}, sample: {size, seed}}, found 'clean' (str)",
        id="reference-not-corrupted",
    ),
    pytest.param(
        "",
        [
            (
                "method: resample, scope: heads}",
                'method: mean, reference: {prompt: "{x} went", over: {x: names, y: names}}}',
            )
        ],
        ":17: over: y is not used in prompt, so each reference prompt would repeat once per element",
        id="reference-variable-unused",
    ),
    pytest.param(
        claims("ablate: {components: [L9H6], direction: noising, max_fraction: 0.3, method: mean}"),
        [],
        ":21: method: mean in a ablate claim averages over the case's reference prompts; give the case "
        "ablation: {reference: corrupted} or a reference template",
        id="claim-mean-without-reference",
    ),
    pytest.param(
        claims("path: {from: L9H6, to: {heads: [L9H9, L10H1]}, min_recovery: 0.3}"),
        [],
        ":21: receiver L9H9 (layer 9) is not after sender L9H6 (layer 9): a receiver reads only what earlier "
        "layers wrote; name a receiver in layer 10 or later",
        id="receiver-not-after-sender",
    ),
    pytest.param(
        claims("path: {from: L7H3, to: {head: L9KV1}, top_k: 3}"),
        [],
        ":21: head in to in a path claim: L5KV1 names a key/value head of a grouped-query model, for input k or v, "
        "written for every receiver; found input=q with 'L9KV1'",
        id="key-value-receiver-of-a-query",
    ),
    pytest.param(
        claims("path: {from: L7H3, to: {head: L9H1, input: query}, top_k: 3}"),
        [],
        ":21: input in to in a path claim is one of q, k, v, found input='query'",
        id="unknown-input",
    ),
    pytest.param(
        claims("path: {from: L7H3, to: logit, min_recovery: 0.3}"),
        [],
        ":21: to in a path claim is `logits`, or a receiver {heads: [L25H1, L26H0], input: q} or "
        "{head: L25H1, input: q}; found 'logit' (did you mean 'logits'?)",
        id="to-logit",
    ),
    pytest.param(
        claims("path: {from: L7H3, to: {heads: [L9H1]}, top_k: 3}"),
        [],
        ":21: `heads:` in to in a path claim takes min_recovery (patched together), not top_k",
        id="receivers-with-top-k",
    ),
    pytest.param(
        claims("path: {from: L7H3, to: {head: L9H1}, min_recovery: 0.3}"),
        [],
        ":21: `head:` in to in a path claim names one receiver, with top_k (its rank), not min_recovery",
        id="receiver-with-min-recovery",
    ),
    pytest.param(
        claims("path: {from: L7KV3, to: logits, min_recovery: 0.3}"),
        [],
        ":21: from in a path claim: senders are heads' outputs, written L5H3; L5KV1 is a receiver",
        id="key-value-sender",
    ),
    pytest.param(
        claims("ablate: {components: [L9H6], direction: noising, min_fraction: 0.3}"),
        [],
        ":21: a noising ablate claim takes max_fraction (at most this share of the clean behaviour), not min_fraction",
        id="noising-with-min-fraction",
    ),
    pytest.param(
        claims("ablate: {components: [L9H6], direction: denoising, max_fraction: 0.3}"),
        [],
        ":21: a denoising ablate claim takes min_fraction (at least this share of the clean behaviour), "
        "not max_fraction",
        id="denoising-with-max-fraction",
    ),
    pytest.param(
        claims("ablate: {components: [L5_resid], direction: noising, max_fraction: 0.3, method: zero}"),
        [],
        ":21: L5_resid cannot be ablated with zero: zeroing the residual stream leaves the next norm nothing to "
        "scale; ablate it with resample or mean",
        id="zero-on-resid",
    ),
    pytest.param(
        claims("ablate: {components: [L5_attn], direction: denoising, min_fraction: 0.3}"),
        [],
        ":21: components in a ablate claim: L5_attn is a block's whole attention output, outside the case's "
        "ablation scope 'heads' (heads only); list the block's heads instead (L5H0, L5H1, ...)",
        id="denoising-outside-scope",
    ),
    pytest.param(
        claims("ablate: {components: [L9H6], direction: noising, max_fraction: 0.3, at: last}"),
        [],
        ":21: at in a ablate claim names the position: 'substituted', 'final', or an index (every position "
        "when absent); found 'last'",
        id="ablate-at",
    ),
    pytest.param(
        claims("ablate: {components: [L9H6], direction: noise, max_fraction: 0.3}"),
        [],
        ":21: direction in a ablate claim is one of noising, denoising, found direction='noise' "
        "(did you mean 'noising'?)",
        id="unknown-direction",
    ),
    pytest.param(
        claims("faithfulness_curve: {ranking: z, max_k: 0}"),
        [],
        ":21: max_k in a faithfulness_curve claim must be a whole number ≥ 1, found max_k=0 (int)",
        id="curve-max-k",
    ),
    pytest.param(
        claims("faithfulness_curve: {ranking: z, max_k: 5, confidence: 0.9}"),
        [],
        ":21: confidence in a faithfulness_curve claim judges min_area, and this curve has no bar",
        id="curve-confidence-without-bar",
    ),
    pytest.param(
        claims("faithfulness_curve: {ranking: z, max_k: 5}"),
        [("scope: heads}", "scope: heads_and_mlps}")],
        ":21: a faithfulness_curve claim: a faithfulness curve ranks heads, so its circuits are drawn from the heads "
        "alone; with scope 'heads_and_mlps' every MLP would be switched off in each of them; give the case "
        "ablation: {scope: heads}",
        id="curve-outside-heads-scope",
    ),
    pytest.param(
        claims("necessity: {circuit: movers, max_fraction: 0.3, confidence: 95}"),
        [],
        ":21: confidence in a necessity claim is the interval's level, between 0 and 1 (e.g. 0.95), found 95",
        id="confidence-out-of-range",
    ),
    pytest.param(
        claims("faithfulnes: {circuit: movers, min_faithfulness: 0.6}"),
        [],
        ":21: each claim is one of patch, logit_lens, direct_attribution, path, ablate, faithfulness, necessity, "
        "faithfulness_curve with its settings, e.g. `- patch: {site: resid_pre, ...}`; found "
        "{'faithfulnes': {'circuit': 'movers', 'min_faithfulness': 0.6}} (did you mean 'faithfulness'?)",
        id="unknown-claim-kind",
    ),
]


@pytest.mark.parametrize(("claim_lines", "changes", "message"), ERRORS)
def test_each_mistake_names_its_line_and_the_fix(
    claim_lines: str, changes: list[tuple[str, str]], message: str
) -> None:
    text = case_with(claim_lines, changes)
    with pytest.raises(CaseFileError) as error:
        parse(text)
    assert str(error.value).startswith(PATH + message), str(error.value)
