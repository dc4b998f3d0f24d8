"""Where a method places itself, by role (query, key, value, attention output, FFN in/out, ...) instead of by
BERT's module names, so the same yaml adapts BERT's ``query``, DeBERTa's ``query_proj``, DistilBERT's
``q_lin`` and ModernBERT's fused ``Wqkv``.

The roles are read off the model's own structure: every ``nn.Linear``/LayerNorm inside the pretrained
backbone is classified by the name its family gives it (the names of the families peft_glue knows below,
checked against peft's per-model-type default targets), and a role resolves to the shortest module-name
suffixes that pick exactly its modules. A family peft_glue does not know still resolves every role whose
modules use one of these names. Written here because peft's tables only hold one default per method and
model type, not roles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from peft_glue.errors import UserError

# the end of a module's name in each family (BERT/RoBERTa/XLM-R/ELECTRA | DeBERTa | DistilBERT | ALBERT |
# ModernBERT | LLaMA-style decoders); a role of several names matches any
LEAF_ROLES: dict[str, str] = {
    "query": r"attention\.self\.query|attention\.query|query_proj|q_lin|q_proj",
    "key": r"attention\.self\.key|attention\.key|key_proj|k_lin|k_proj",
    "value": r"attention\.self\.value|attention\.value|value_proj|v_lin|v_proj",
    "attention_output": r"attention\.output\.dense|attention\.dense|out_lin|attn\.Wo|o_proj",
    "ffn_in": r"intermediate\.dense|albert_layers\.\d+\.ffn|ffn\.lin1|mlp\.Wi|up_proj|gate_proj",
    "ffn_out": r"layer\.\d+\.output\.dense|ffn_output|ffn\.lin2|mlp\.Wo|down_proj",
}
FUSED_QKV = r"attn\.Wqkv|in_proj|qkv_proj|query_key_value"  # one matrix computing query, key and value
QKV = ("query", "key", "value")
# roles made of other roles, and roles that are not one projection
COMPOSITE: dict[str, tuple[str, ...]] = {"attention": (*QKV, "attention_output")}
ROLES = (*LEAF_ROLES, *COMPOSITE, "linear", "layernorm")
ROLE_HELP = ", ".join(ROLES)


@dataclass
class Targets:
    """What a list of targets (roles and/or module names) resolved to on one model."""

    names: list[str] | str  # for peft's ``target_modules``: module-name suffixes, or a regex string
    notes: list[str] = field(default_factory=list)  # e.g. a role adapted through a fused matrix


def family(model: nn.Module) -> str:
    """The model's ``model_type`` (``bert``, ``deberta-v2``, ...), or its class name."""
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or type(model).__name__


def backbone_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The pretrained backbone's modules by full name (the task head is not a role's place)."""
    prefix = getattr(model, "base_model_prefix", "")
    inner = getattr(model, prefix, None) if prefix else None
    if not isinstance(inner, nn.Module):
        return dict(model.named_modules())
    return {f"{prefix}.{name}" if name else prefix: module for name, module in inner.named_modules()}


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def ends_with(pattern: str, name: str) -> bool:
    return re.search(rf"(^|\.)({pattern})$", name) is not None


def role_modules(model: nn.Module) -> dict[str, list[str]]:
    """Each role's modules (full names) in ``model``; a role the model lacks maps to []. Where query, key
    and value live in one fused matrix, each of them maps to that matrix."""
    modules = backbone_modules(model)
    linear = [name for name, module in modules.items() if isinstance(module, nn.Linear)]
    found = {role: [n for n in linear if ends_with(pattern, n)] for role, pattern in LEAF_ROLES.items()}
    fused = [name for name in linear if ends_with(FUSED_QKV, name)]
    for role in QKV:
        if not found[role]:
            found[role] = fused
    for role, parts in COMPOSITE.items():
        found[role] = sorted({name for part in parts for name in found[part]}, key=linear.index)
    found["linear"] = linear
    found["layernorm"] = [name for name, module in modules.items() if is_norm(module)]
    return found


def fused_roles(model: nn.Module, roles: list[str]) -> list[str]:
    """The roles among ``roles`` that sit in a fused query/key/value matrix of ``model``."""
    modules = role_modules(model)
    return [r for r in roles if r in QKV and modules[r] and all(ends_with(FUSED_QKV, n) for n in modules[r])]


def shortest_suffixes(chosen: list[str], every: list[str]) -> list[str]:
    """The fewest-component name suffixes that match each of ``chosen`` and nothing else in ``every``
    (peft matches a target name against the end of each module's name, at a dot): ``query`` for BERT's
    queries, ``attention.output.dense`` for its attention outputs."""
    others = set(every) - set(chosen)
    suffixes: list[str] = []
    for name in chosen:
        parts = name.split(".")
        for size in range(1, len(parts) + 1):
            suffix = ".".join(parts[-size:])
            if not any(o == suffix or o.endswith("." + suffix) for o in others):
                break
        if suffix not in suffixes:
            suffixes.append(suffix)
    return suffixes


def resolve(model: nn.Module, targets: list[str] | str | None, what: str) -> Targets:
    """Turn a method's targets into peft's ``target_modules`` for ``model``: each role name becomes the
    suffixes of its modules; other names, a regex string and ``all-linear`` pass through unchanged."""
    if targets is None or isinstance(targets, str):
        return Targets(targets)
    modules = role_modules(model)
    every = list(dict(model.named_modules()))
    names: list[str] = []
    notes: list[str] = []
    for target in targets:
        if target not in ROLES:
            names.append(target)  # a module name of the user's
            continue
        if not modules[target]:
            raise UserError(
                f"{what}: {family(model)} has no module in the role '{target}' (roles: {ROLE_HELP}); "
                "name its modules instead, e.g. method.target_modules=all-linear"
            )
        names += [s for s in shortest_suffixes(modules[target], every) if s not in names]
    for role in fused_roles(model, [t for t in targets if t in ROLES]):
        fused = shortest_suffixes(modules[role], every)
        notes.append(
            f"{role} is inside {family(model)}'s fused {'/'.join(fused)} (query, key and value in one "
            "matrix): the whole fused matrix is adapted"
        )
    return Targets(names, sorted(set(notes)))
