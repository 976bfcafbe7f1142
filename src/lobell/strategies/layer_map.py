"""The layer map: any backbone's parameters as ordered groups, input side first, new head last.

Every parameter lands in exactly one group. Freezing, gradual unfreezing and per-group learning
rates all work on these groups, so they work the same on every backbone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

# A unit holding less than this share of the backbone is merged into a neighbour: a group of a
# LayerNorm or a pooler alone would waste a whole gradual-unfreezing epoch.
_SMALL_SHARE = 0.02
# Deeper encoders keep one group per block up to this many groups; beyond, neighbours merge.
_MAX_GROUPS = 16


@dataclass
class LayerGroup:
    """One unit of freezing and learning-rate scaling."""

    name: str
    param_names: list[str] = field(default_factory=list)
    is_head: bool = False
    # Never trains in any stage (audio's CNN feature encoder, unless strategy.train_feature_encoder).
    frozen: bool = False

    def num_params(self, model: nn.Module) -> int:
        params = dict(model.named_parameters())
        return sum(params[n].numel() for n in self.param_names)


@dataclass
class LayerMap:
    groups: list[LayerGroup]
    source: str  # how the groups were found, shown to the user

    def __len__(self) -> int:
        return len(self.groups)

    def group_of(self) -> dict[str, int]:
        return {name: i for i, g in enumerate(self.groups) for name in g.param_names}


@dataclass
class _Unit:
    name: str
    module: nn.Module | None  # None for a module's own parameters
    params: list[str]


def build_layer_map(model: nn.Module, head_prefixes: list[str], source: str) -> LayerMap:
    """Group `model`'s parameters: backbone units in order, then one head group.

    Args:
        model: the whole network (backbone plus new head).
        head_prefixes: parameter-name prefixes of the new head (e.g. ["classifier"]).
        source: a short description of where the structure came from, for the user.
    """
    head = [n for n, _ in model.named_parameters() if _under(n, head_prefixes)]
    # A tied weight (a masked-LM decoder sharing the word embeddings) belongs to the group of its first
    # name only: its other names are left out as the head's names are.
    aliases = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
    units = _expand(model, "", set(head) | aliases)
    return _finish(model, units, head, source)


def layer_map_from_assignment(model: nn.Module, assignment: dict[str, int], head_prefixes: list[str],
                              source: str) -> LayerMap:
    """Build a map from an explicit parameter -> group-id assignment (timm's group_matcher)."""
    ordered: dict[int, _Unit] = {}
    head: list[str] = []
    for name, _ in model.named_parameters():
        if _under(name, head_prefixes):
            head.append(name)
            continue
        gid = assignment[name]
        ordered.setdefault(gid, _Unit("", None, [])).params.append(name)
    for unit in ordered.values():
        unit.name = _common_prefix(unit.params)
    return _finish(model, [ordered[k] for k in sorted(ordered)], head, source)


def _common_prefix(names: list[str]) -> str:
    parts = [n.split(".")[:-1] for n in names]
    common = []
    for column in zip(*parts):
        if len(set(column)) > 1:
            break
        common.append(column[0])
    return ".".join(common) or (parts[0][0] if parts[0] else "stem")


def _finish(model: nn.Module, units: list[_Unit], head: list[str], source: str) -> LayerMap:
    units = [u for u in units if u.params]
    total = sum(_count(model, u.params) for u in units) or 1
    units = _cap(model, _merge_small(model, units, total), _MAX_GROUPS)
    groups = [LayerGroup(u.name, u.params) for u in units]
    if head:
        groups.append(LayerGroup("head", head, is_head=True))
    return LayerMap(groups, source)


def _under(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _count(model: nn.Module, names: list[str]) -> int:
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in names)


def _expand(module: nn.Module, prefix: str, head: set[str]) -> list[_Unit]:
    """Ordered units: a module's own parameters, then each child, expanding block lists."""
    own = [prefix + n for n, _ in module.named_parameters(recurse=False) if prefix + n not in head]
    units = [_Unit(prefix.rstrip(".") or "stem", None, own)] if own else []
    children = [(n, c) for n, c in module.named_children()]
    sizes = {n: _size(c, prefix + n + ".", head) for n, c in children}
    total = sum(sizes.values()) or 1
    for name, child in children:
        child_prefix = prefix + name + "."
        if sizes[name] == 0:
            continue
        if _should_expand(child, sizes[name] / total):
            units.extend(_expand(child, child_prefix, head))
        else:
            params = [child_prefix + n for n, _ in child.named_parameters() if child_prefix + n not in head]
            units.append(_Unit(prefix + name, child, params))
    return units


def _size(module: nn.Module, prefix: str, head: set[str]) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if prefix + n not in head)


def _should_expand(module: nn.Module, share: float) -> bool:
    """Expand a block list, a holder of a block list, or a child that dominates its parent."""
    children = list(module.children())
    if not children:
        return False
    if isinstance(module, nn.ModuleList) or share > 0.9:
        return True
    own = sum(p.numel() for p in module.parameters()) or 1
    return any(isinstance(c, nn.ModuleList) and sum(p.numel() for p in c.parameters()) / own >= 0.5
               for c in children)


def _merge_small(model: nn.Module, units: list[_Unit], total: int) -> list[_Unit]:
    """Merge units under _SMALL_SHARE of the backbone into their smaller neighbour."""
    units = list(units)
    while len(units) > 1:
        sizes = [_count(model, u.params) for u in units]
        small = [i for i, s in enumerate(sizes) if s / total < _SMALL_SHARE]
        if not small:
            break
        i = min(small, key=lambda k: sizes[k])
        j = _smaller_neighbour(sizes, i)
        units = _merge_pair(units, min(i, j))
    return units


def _cap(model: nn.Module, units: list[_Unit], limit: int) -> list[_Unit]:
    while len(units) > limit:
        sizes = [_count(model, u.params) for u in units]
        pair = min(range(len(units) - 1), key=lambda k: sizes[k] + sizes[k + 1])
        units = _merge_pair(units, pair)
    return units


def _smaller_neighbour(sizes: list[int], i: int) -> int:
    if i == 0:
        return 1
    if i == len(sizes) - 1:
        return i - 1
    return i - 1 if sizes[i - 1] <= sizes[i + 1] else i + 1


def _merge_pair(units: list[_Unit], i: int) -> list[_Unit]:
    first, second = units[i], units[i + 1]
    merged = _Unit(_join_names(first.name, second.name), None, first.params + second.params)
    return units[:i] + [merged] + units[i + 2:]


def _join_names(first: str, second: str) -> str:
    start = first.split("..")[0]
    end = second.split("..")[-1]
    return f"{start}..{end}"
