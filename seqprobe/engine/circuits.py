"""Ablations in both directions and circuit evaluation (faithfulness, as in the IOI paper), exact and batched.

The method. A *component* (seqprobe.vocabulary.circuits: a head's output z, a block's attention
output, its MLP output, the residual stream entering it) is *switched off* by replacing its
activation, at every position or at one position `at`, with

- `resample`: its value in the corrupted prompt's run, pair by pair (row by row);
- `mean`: its mean over reference prompts (token rows of the pairs' prompt length), position by
  position, the same for every pair;
- `zero`: 0 (not for `resid`: the next norm would have nothing to scale).

A *scope* ("heads", or "heads_and_mlps") is the set of components a circuit is drawn from; the
components outside it always compute normally. Two runs anchor every number:

    m(full) = the clean run's metric
    m(∅)    = the clean prompt with every component of the scope switched off

A circuit C ⊆ scope is evaluated by running the clean prompt with every scope component *not* in
C switched off, while C's components (and everything outside the scope) compute normally on what
reaches them; faithfulness(C) = (m(C) − m(∅)) / (m(full) − m(∅)), 1 for the whole scope and 0 for
the ∅ run. The two directions of an ablation (`DIRECTIONS`) of a set X:

- noising: the clean run with X switched off (is X necessary?);
- denoising: the ∅ run with X given its *clean* activation, the clean run's value patched in,
  not recomputed (does X suffice?); X may hold attn or resid components outside the scope.

Both are put on faithfulness's scale by `fraction`. With `at`, only that position is switched
off (noising) or given back (denoising); the ∅ run stays off everywhere.

Multi-token answers (the continuation readout's rows are prompt + continuation): resample and zero
switch a component off at every position, the continuation's included (the corrupted rows carry
the same continuation); mean ablation averages reference *prompts*, so it switches components off
at the prompt's positions only and the continuation's positions compute normally. `at` indexes
the prompt's positions.

The metric is the patching metric of seqprobe.engine.metric, through the pairs' readout, per pair
in float32, so that intervals can resample the pairs. All configurations of a call run as one
batched forward (seqprobe.engine.interventions), equal to TransformerLens runs with hooks on the
replaced activations (tests/engine/test_circuits.py); the runs with nothing switched off and with
the whole scope off are the clean and ∅ runs themselves, so their fractions are exactly 1 and 0.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from seqprobe.engine.architectures import resumable_forward
from seqprobe.engine.forward import ResumableForward, Run
from seqprobe.engine.interventions import SOURCE_SITES, Source, intervened_metric
from seqprobe.engine.memory import max_lanes
from seqprobe.engine.metric import DEFAULT_MIN_GAP, readout_for, readout_rows, run_metric
from seqprobe.engine.pairs import PatchingPair
from seqprobe.errors import CircuitError
from seqprobe.vocabulary.circuits import ABLATION_METHODS, DIRECTIONS, SCOPES, SUPPORTED_ABLATIONS, Component

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["CircuitRuns", "absent_components", "scope_components"]

# The sources of a configuration's replacements: the ablation's value, or the clean run's.
_OFF, _CLEAN = 0, 1


def scope_components(forward: ResumableForward, scope: str) -> tuple[Component, ...]:
    """Every component of `scope` in the model, layer by layer (heads, then the MLP)."""
    kinds = SCOPES[scope]
    return tuple(
        component
        for layer in range(forward.n_layers)
        for component in (
            *(Component(layer, "head", head) for head in range(forward.n_heads) if "head" in kinds),
            *((Component(layer, "mlp"),) if "mlp" in kinds else ()),
        )
    )


class CircuitRuns:
    """The clean run, its ablation values and the ∅ run of a set of pairs, ready for circuits and ablations."""

    def __init__(
        self,
        bridge: TransformerBridge,
        pairs: Sequence[PatchingPair],
        *,
        method: str = "resample",
        scope: str = "heads",
        reference: Sequence[Tensor] | None = None,
        max_memory: int | None = None,
    ) -> None:
        _check_choice("method", method, ABLATION_METHODS)
        _check_choice("scope", scope, tuple(SCOPES))
        self.bridge = bridge
        self.pairs = tuple(pairs)
        self.method = method
        self.scope = scope
        # Bytes a batch of configurations may take (None: half the device's free memory).
        self.max_memory = max_memory
        self.forward = resumable_forward(bridge.original_model)
        self.n_prompt = _prompt_length(self.pairs)
        self.readout = readout_for(self.pairs).to(self.forward.device)
        self.tokens = readout_rows(self.pairs, self.readout, [p.clean for p in self.pairs])  # [row pos]
        self.components = scope_components(self.forward, scope)
        self._empty: Mapping[Component, int] = dict.fromkeys(self.components, _OFF)
        with torch.inference_mode():
            clean = self.forward.run(self.tokens.to(self.forward.device), keep=SOURCE_SITES)
            self.full_pairs = run_metric(self.forward, clean, self.readout).float().cpu()
            self._clean = Source(acts=clean.acts, positions=slice(None))
            self._off = self._ablation_values(clean, reference)
            self.empty_pairs = self._intervened([self._empty], (self._off, self._clean))[0]
        self.full_metric = float(self.full_pairs.mean())
        self.empty_metric = float(self.empty_pairs.mean())

    def evaluate(self, circuits: Sequence[Collection[Component]]) -> Float[Tensor, "circuit pair"]:
        """Each pair's metric m(C) of each circuit: the scope's other components off, in one batched run."""
        for i, circuit in enumerate(circuits):
            if not circuit:
                raise CircuitError(
                    f"circuit {i} is empty; a circuit names at least one component of the scope {self.scope!r} "
                    "(the run with the whole scope switched off is `empty_pairs`)"
                )
            self._check_present(circuit)
            outside = sorted(c for c in circuit if c.kind not in SCOPES[self.scope])
            if outside:
                raise CircuitError(
                    f"circuit {i} has {_names(outside)} outside the scope {self.scope!r}, which holds "
                    f"{' and '.join(sorted(SCOPES[self.scope]))} components; a circuit is drawn from its scope "
                    f"(choose scope= one of {list(SCOPES)} that holds them, or leave them out)"
                )
        kept = [frozenset(circuit) for circuit in circuits]
        configs = [{c: _OFF for c in self.components if c not in circuit} for circuit in kept]
        return self._metric(configs, (self._off, self._clean))

    def ablated(
        self, configs: Sequence[Collection[Component]], *, direction: str, at: int | None = None
    ) -> Float[Tensor, "config pair"]:
        """Each pair's metric with each set X noised (switched off in the clean run) or denoised (given its clean
        value in the ∅ run); with `at`, at that prompt position only."""
        _check_choice("direction", direction, DIRECTIONS)
        if at is not None and not 0 <= at < self.n_prompt:
            raise CircuitError(
                f"at={at} is not a position of the prompts, which have {self.n_prompt} tokens (0..{self.n_prompt - 1})"
            )
        for config in configs:
            self._check_present(config)
        if direction == "noising":
            self._check_supported([c for config in configs for c in config])
            sources = (_only_at(self._off, at), self._clean)
            return self._metric([dict.fromkeys(config, _OFF) for config in configs], sources)
        sources = (self._off, _only_at(self._clean, at))
        return self._metric([{**self._empty, **dict.fromkeys(config, _CLEAN)} for config in configs], sources)

    def curve(self, ranking: Sequence[Component], *, max_k: int) -> Float[Tensor, "k pair"]:
        """m(C) of the circuits top-1 .. top-K of `ranking` (K = max_k, or fewer if it is shorter), in one batched run."""
        if max_k < 1 or not ranking:
            raise CircuitError(
                f"a curve needs max_k >= 1 and a ranking of at least one component, got max_k={max_k}, {len(ranking)} component(s)"
            )
        return self.evaluate([ranking[:k] for k in range(1, min(max_k, len(ranking)) + 1)])

    def fraction(self, metric: Tensor) -> Tensor:
        """(m − m(∅)) / (m(full) − m(∅)): faithfulness for circuits, the same scale for ablations."""
        gap = self.full_metric - self.empty_metric
        if not abs(gap) >= DEFAULT_MIN_GAP:
            raise CircuitError(
                f"the fraction is undefined: the clean run's metric {self.full_metric:.4f} and the ∅ run's (scope "
                f"{self.scope!r} switched off by {self.method} ablation) {self.empty_metric:.4f} differ by {abs(gap):.4f}, "
                f"less than min_gap={DEFAULT_MIN_GAP:g}, so (m − m(∅)) / (m(full) − m(∅)) would divide by almost zero. "
                "The scope carries no part of the metric here: choose an ablation that moves it (another method, "
                "or a corrupted prompt or reference prompts that favour the distractor), or the heads_and_mlps scope"
            )
        return (metric - self.empty_metric) / gap

    # -- the runs ---------------------------------------------------------------------------------

    def _metric(
        self, configs: Sequence[Mapping[Component, int]], sources: tuple[Source, Source]
    ) -> Float[Tensor, "config pair"]:
        """The configurations' metrics; the clean and ∅ configurations are those runs themselves (exact anchors)."""
        empty_is_anchor = sources[_OFF] is self._off
        anchors = [
            self.full_pairs if not config else self.empty_pairs if empty_is_anchor and config == self._empty else None
            for config in configs
        ]
        rest = [config for config, anchor in zip(configs, anchors, strict=True) if anchor is None]
        computed = iter(self._intervened(rest, sources)) if rest else iter(())
        return torch.stack([next(computed) if anchor is None else anchor for anchor in anchors])

    def _intervened(
        self, configs: Sequence[Mapping[Component, int]], sources: tuple[Source, Source]
    ) -> Float[Tensor, "config pair"]:
        n_pos = self.tokens.shape[1]
        with torch.inference_mode():
            lanes = max_lanes(self.forward, n_keys=n_pos, budget=self.max_memory)
            metric = intervened_metric(self.forward, self.tokens, configs, sources, self.readout, max_lanes=lanes)
        return metric.float().cpu()

    def _ablation_values(self, clean: Run, reference: Sequence[Tensor] | None) -> Source:
        """What a switched-off component outputs, per `SOURCE_SITES` and layer."""
        if reference is not None and self.method != "mean":
            raise CircuitError(
                f"reference prompts are averaged by mean ablation only; method={self.method!r} does not read them"
            )
        if self.method == "zero":
            return Source(
                acts={s: tuple(torch.zeros_like(t[:1]) for t in clean.acts[s]) for s in SOURCE_SITES},
                positions=slice(None),
            )
        if self.method == "resample":
            corrupted = readout_rows(self.pairs, self.readout, [p.corrupted for p in self.pairs])
            run = self.forward.run(corrupted.to(self.forward.device), keep=SOURCE_SITES)
            return Source(acts=run.acts, positions=slice(None))
        rows = self._reference_rows(reference)
        run = self.forward.run(rows.to(self.forward.device), keep=SOURCE_SITES)
        means = {s: tuple(t.mean(dim=0, keepdim=True) for t in run.acts[s]) for s in SOURCE_SITES}  # [1 pos ...]
        return Source(acts=means, positions=slice(0, self.n_prompt))

    def _reference_rows(self, reference: Sequence[Tensor] | None) -> Tensor:
        if reference is None or not len(reference):
            raise CircuitError(
                f"mean ablation averages reference prompts position by position; pass reference= a list of token "
                f"rows of the pairs' prompt length ({self.n_prompt} tokens)"
            )
        wrong = [f"reference {i} has {row.numel()}" for i, row in enumerate(reference) if row.shape != (self.n_prompt,)]
        if wrong:
            raise CircuitError(
                f"mean ablation averages the reference prompts position by position, so each must be one row of the "
                f"pairs' prompt length, {self.n_prompt} tokens: {', '.join(wrong)}; choose reference prompts that "
                f"tokenize to {self.n_prompt} tokens"
            )
        return torch.stack(list(reference))  # [reference pos]

    # -- checks -------------------------------------------------------------------------------------

    def _check_present(self, components: Collection[Component]) -> None:
        f = self.forward
        missing = absent_components(f, components)
        if missing:
            raise CircuitError(
                f"the model has no {_names(missing)}: it has layers 0..{f.n_layers - 1} and {f.n_heads} heads "
                f"(0..{f.n_heads - 1}) per layer"
            )

    def _check_supported(self, components: Collection[Component]) -> None:
        refused = sorted({c for c in components if self.method not in SUPPORTED_ABLATIONS[c.kind]})
        if refused:
            kinds = sorted({c.kind for c in refused})
            allowed = sorted(set.intersection(*(set(SUPPORTED_ABLATIONS[k]) for k in kinds)))
            raise CircuitError(
                f"{self.method} ablation cannot switch off {_names(refused)}: {' and '.join(kinds)} components take "
                f"{' or '.join(allowed)} ablation (zeroing the residual stream leaves the next norm nothing to scale); "
                "choose another method or leave them out"
            )


def absent_components(forward: ResumableForward, components: Collection[Component]) -> list[Component]:
    """The components the model lacks (a layer or head past its shape), sorted."""
    return sorted(
        c for c in components
        if not 0 <= c.layer < forward.n_layers or (c.kind == "head" and not 0 <= (c.head or 0) < forward.n_heads)
    )  # fmt: skip


def _only_at(source: Source, at: int | None) -> Source:
    """`source` replacing position `at` only (a prompt position, which every source covers), or all it covers."""
    return source if at is None else replace(source, positions=slice(at, at + 1))


def _names(components: Sequence[Component]) -> str:
    return ", ".join(c.name for c in components)


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise CircuitError(f"unknown {what} {value!r}; choose one of {list(choices)}")


def _prompt_length(pairs: Sequence[PatchingPair]) -> int:
    """The pairs' common prompt length: they run as one batch, and mean references must match it."""
    lengths = [pair.clean.numel() for pair in pairs]
    if len(set(lengths)) != 1:
        raise CircuitError(
            f"circuit runs need at least one pair, all of the same prompt length since they run as one batch: "
            f"lengths per pair {lengths}; group pairs by length and evaluate each group"
        )
    return lengths[0]
