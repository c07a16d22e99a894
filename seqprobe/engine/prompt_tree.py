"""Logits of many prompts at once, each distinct prefix computed once.

Phrasing families, invariance and direction checks and completion cases ask for the model's
distribution after hundreds of prompts that share their beginnings: the 189 wordings of
"{today}{sep}{ask}" share "Today it is" 63 ways and "Today it is Monday" 9 ways, and a completion's
answer and distractor rows share their whole prompt. Under causal attention the activations at a
position depend only on the tokens up to it, so prompts that agree on their first n tokens agree on
every activation at those n positions. The prompts are laid out as a tree of prefixes (a trie):
one node per distinct prefix, holding its last token. Each node computes its own position once,
its query attending to the keys and values of the nodes on its path from the root; the model runs
layer by layer over the whole tree, so its matrix products are as large as the tree. On the starter library's robustness files this computes 4,317 positions
instead of the 14,573 that right-padded batches ran (16,654 with the padding).

The tree runs on seqprobe's own forward (`seqprobe.engine.forward`), which equals the bridge to
float rounding, so it is used only where the bridge's own call would compute the same thing: a
plain `TransformerBridge` with no hooks on any module (`shares_prefixes`). A bridge with hooks, a
wrapper around one, or an architecture the forward does not cover runs its prompts through
`bridge(tokens)` instead, deduplicated and sorted by length so that batches carry little padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from seqprobe.engine.forward import ResumableForward

__all__ = ["MAX_NODES", "PromptTree", "build_tree", "read_logits", "right_padded", "run_tree", "shares_prefixes"]

# Nodes per tree: a layer's step holds each node's stream and MLP activations (SmolLM2: about 30 KB
# in float32), so a tree of this many stays near 120 MB; longer lists of prompts make several trees.
MAX_NODES = 4096


@dataclass(frozen=True)
class PromptTree:
    """Distinct prefixes of some token sequences, numbered depth by depth (the root's depth is 0)."""

    # Each node's last token.
    tokens: Int[Tensor, " node"]
    # The nodes of depth d are levels[d]..levels[d+1]-1.
    levels: tuple[int, ...]
    # For each depth d, the path of each of its nodes from the root: [nodes_at_d, d+1] node ids.
    paths: tuple[Int[Tensor, "node depth"], ...]
    # The node of each read (row, position): the prefix that ends at that position.
    reads: Int[Tensor, " read"]

    @property
    def n_nodes(self) -> int:
        return self.tokens.shape[0]


def build_tree(rows: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]) -> PromptTree:
    """The prefix tree of `rows`, reading each row at its `positions` (in row order, then position order)."""
    ids: dict[tuple[int, ...], int] = {}
    tokens: list[int] = []
    levels = [0]
    paths: list[list[list[int]]] = []
    depth_of_longest = max((len(row) for row in rows), default=0)
    for depth in range(depth_of_longest):
        level: list[list[int]] = []
        for row in rows:
            if len(row) <= depth:
                continue
            prefix = tuple(row[: depth + 1])
            if prefix in ids:
                continue
            ids[prefix] = len(tokens)
            tokens.append(prefix[-1])
            parent = paths[depth - 1][ids[prefix[:-1]] - levels[depth - 1]] if depth else []
            level.append([*parent, ids[prefix]])
        paths.append(level)
        levels.append(len(tokens))
    reads = [
        ids[tuple(row[: position + 1])]
        for row, row_positions in zip(rows, positions, strict=True)
        for position in row_positions
    ]
    return PromptTree(
        tokens=torch.tensor(tokens, dtype=torch.long),
        levels=tuple(levels),
        paths=tuple(
            torch.tensor(level, dtype=torch.long).view(len(level), depth + 1) for depth, level in enumerate(paths)
        ),
        reads=torch.tensor(reads, dtype=torch.long),
    )


def run_tree(forward: ResumableForward, tree: PromptTree) -> Float[Tensor, "read vocab"]:
    """Every read's logits: all nodes layer by layer, each attending along its path.

    Within a layer, a node's query, key and value depend only on its own residual stream and
    position (its depth, for rotary angles), so they are computed for every node at once; then each
    depth's queries read their paths' keys and values. (Padding paths to attend several depths at
    once was slower on the library's trees: the gathered keys and values grow with the deepest.)
    The projections and the MLP, most of the arithmetic, run on every node of the tree as one
    batch; the last layer's output projection and MLP only on the nodes that are read.
    """
    device = forward.device
    reads = tree.reads.to(device)
    tokens = tree.tokens.to(device)
    spans = [(tree.levels[depth], tree.levels[depth + 1], path.to(device)) for depth, path in enumerate(tree.paths)]
    depths = torch.repeat_interleave(torch.arange(len(spans)), torch.tensor(tree.levels).diff()).to(device)
    # [node 1 d_model]: each depth's nodes sit at that position
    resid = torch.cat(
        [forward.embed(tokens[first:stop, None], start=depth) for depth, (first, stop, _) in enumerate(spans)]
    )
    for layer in range(forward.n_layers):
        q, k, v = forward.qkv(layer, forward.attention_input(layer, resid), start=depths)  # [node head 1 d_head]
        keys, values = k[:, :, 0], v[:, :, 0]  # [node kv_head d_head]
        z = torch.empty(tree.n_nodes, 1, forward.n_heads, forward.d_head, dtype=resid.dtype, device=device)
        for depth, (first, stop, path) in enumerate(spans):
            # A path's nodes are this depth's or shallower: [node depth+1 kv_head d_head] -> [node kv_head depth+1 d_head]
            pattern = forward.pattern(layer, q[first:stop], keys[path].transpose(1, 2), q_start=depth)
            z[first:stop] = forward.mix(pattern, values[path].transpose(1, 2))  # [node 1 head d_head]
        if layer == forward.n_layers - 1:  # nothing reads the other nodes' streams any more
            resid, z = resid[reads], z[reads]
        resid = resid + forward.attention_output(layer, z)
        resid = resid + forward.mlp_output(layer, resid)
    return forward.logits(resid[:, 0]).float()


def shares_prefixes(bridge: object) -> bool:
    """Whether the prefix tree computes what `bridge(tokens)` would: a plain bridge, no hooks, a covered model."""
    from transformer_lens.model_bridge import TransformerBridge

    from seqprobe.engine.architectures import SUPPORTED_MODEL_TYPES

    if type(bridge) is not TransformerBridge:
        return False
    model = bridge.original_model
    if getattr(model.config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return False
    torch_hooks = torch.nn.modules.module
    if torch_hooks._global_forward_hooks or torch_hooks._global_forward_pre_hooks:
        return False
    return not any(_may_change_numbers(module) for module in (*bridge.modules(), *model.modules()))


def _may_change_numbers(module: torch.nn.Module) -> bool:
    """Whether a module has a hook that may change what it computes, or is offloaded.

    Every hook on a HookPoint is a user's (TransformerLens's `add_hook`, `hooks()`). Elsewhere, the
    hooks transformers and the bridge install on a first forward only record outputs; any other
    hook may change them.
    """
    from transformer_lens.hook_points import HookPoint

    hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
    if isinstance(module, HookPoint):
        return bool(hooks)
    library = ("transformers", "transformer_lens")
    return hasattr(module, "_hf_hook") or any(
        getattr(hook, "__module__", "").split(".")[0] not in library for hook in hooks
    )


def read_logits(
    bridge: TransformerBridge,
    rows: Sequence[Sequence[int]],
    positions: Sequence[Sequence[int]],
    *,
    batch_size: int,
) -> Float[Tensor, "read vocab"]:
    """The logits at each row's `positions` (in row order, then position order), float32 on the CPU.

    Through the prefix tree when the bridge allows it (`shares_prefixes`), else through the bridge
    in right-padded batches of at most `batch_size` distinct rows, sorted by length. A row given
    twice runs once.
    """
    wanted: dict[tuple[int, ...], set[int]] = {}
    for row, row_positions in zip(rows, positions, strict=True):
        wanted.setdefault(tuple(row), set()).update(row_positions)
    # Sorted, neighbours share prefixes (the tree's chunks) and lengths (the padded batches').
    distinct = sorted(wanted)
    reads = [(row, position) for row in distinct for position in sorted(wanted[row])]
    if not reads:
        return torch.empty(0, 0)
    slot = {read: i for i, read in enumerate(reads)}
    with torch.inference_mode():
        logits = _distinct_logits(bridge, distinct, [sorted(wanted[row]) for row in distinct], batch_size=batch_size)
    order = [
        slot[tuple(row), position]
        for row, row_positions in zip(rows, positions, strict=True)
        for position in row_positions
    ]
    return logits[torch.tensor(order, dtype=torch.long)]


def _distinct_logits(
    bridge: TransformerBridge, rows: Sequence[tuple[int, ...]], positions: Sequence[Sequence[int]], *, batch_size: int
) -> Float[Tensor, "read vocab"]:
    """The reads of distinct `rows`, in row order."""
    from seqprobe.engine.architectures import resumable_forward

    if shares_prefixes(bridge):
        forward = resumable_forward(bridge.original_model)
        trees = [build_tree([rows[i] for i in chunk], [positions[i] for i in chunk]) for chunk in _tree_chunks(rows)]
        return torch.cat([run_tree(forward, tree).cpu() for tree in trees])
    first_slot = torch.tensor([0, *(len(p) for p in positions)]).cumsum(0).tolist()
    out: Tensor | None = None
    for batch in _length_batches(rows, batch_size):
        logits = _padded_logits(bridge, [rows[i] for i in batch], [positions[i] for i in batch])
        if out is None:
            out = torch.empty(first_slot[-1], logits.shape[-1])
        slots = [s for i in batch for s in range(first_slot[i], first_slot[i + 1])]
        out[torch.tensor(slots, dtype=torch.long)] = logits
    assert out is not None
    return out


def _tree_chunks(rows: Sequence[tuple[int, ...]]) -> list[range]:
    """Consecutive runs of sorted `rows` whose trees have at most MAX_NODES nodes (a longer row alone)."""
    chunks: list[range] = []
    first, nodes = 0, 0
    for i, row in enumerate(rows):
        # A sorted row shares its longest shared prefix with the row before it; the rest are new nodes.
        added = len(row) - (_common_prefix(rows[i - 1], row) if i > first else 0)
        if i > first and nodes + added > MAX_NODES:
            chunks.append(range(first, i))
            first, nodes, added = i, 0, len(row)
        nodes += added
    chunks.append(range(first, len(rows)))
    return chunks


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _length_batches(rows: Sequence[tuple[int, ...]], batch_size: int) -> list[list[int]]:
    """Batches of at most `batch_size` rows, taken in order of length so that little is padded."""
    by_length = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    return [by_length[start : start + batch_size] for start in range(0, len(by_length), batch_size)]


def right_padded(batch: Sequence[Sequence[int]]) -> tuple[Int[Tensor, "batch pos"], list[int]]:
    """`batch` as one tensor, each row padded after its end, and the rows' lengths.

    Under causal attention a token never sees the padding after it, so each row's own positions
    get the logits they would alone.
    """
    lengths = [len(ids) for ids in batch]
    width = max(lengths)
    # The pad value is never attended to by the positions that are read, so any id will do.
    tokens = torch.tensor([list(ids) + [ids[-1]] * (width - len(ids)) for ids in batch])
    return tokens, lengths


def _padded_logits(
    bridge: TransformerBridge, rows: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]
) -> Float[Tensor, "read vocab"]:
    tokens, _ = right_padded(rows)
    logits = bridge(tokens.to(bridge.cfg.device), return_type="logits")  # [batch pos d_vocab]
    row_of = torch.tensor([r for r, row_positions in enumerate(positions) for _ in row_positions])
    position = torch.tensor([p for row_positions in positions for p in row_positions])
    return logits[row_of.to(logits.device), position.to(logits.device)].float().cpu()
