"""A function's signature as a msgspec Struct, and that Struct as a JSON schema.

The Struct is the one source of truth: the schema the model is shown and the
validation of what it sends back both come from it, so they cannot disagree.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any, get_args, get_origin

import msgspec

from laneway.tools.errors import ToolLoadError

_REF_PREFIX = "#/$defs/"
_UNSUPPORTED_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional-only",
    inspect.Parameter.VAR_POSITIONAL: "*args",
    inspect.Parameter.VAR_KEYWORD: "**kwargs",
}


def arguments_struct(
    fn: Callable[..., Any], name: str, descriptions: Mapping[str, str]
) -> type[msgspec.Struct]:
    """A Struct with one field per parameter; those without a default are
    required, and unknown fields are refused. ``descriptions`` (from the
    docstring) apply where the annotation carries none of its own."""
    try:
        signature = inspect.signature(fn, eval_str=True)
    except (NameError, TypeError, ValueError) as exc:
        raise ToolLoadError(f"cannot read the signature of {name!r}: {exc}") from exc
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for param in signature.parameters.values():
        if param.kind in _UNSUPPORTED_KINDS:
            kind = _UNSUPPORTED_KINDS[param.kind]
            raise ToolLoadError(f"{name!r}: parameter {param.name!r} is {kind}; not supported")
        if param.annotation is inspect.Parameter.empty:
            raise ToolLoadError(f"{name!r}: parameter {param.name!r} has no type hint")
        hint = _described(param.annotation, descriptions.get(param.name))
        if param.default is inspect.Parameter.empty:
            fields.append((param.name, hint))
        else:
            fields.append((param.name, hint, param.default))
    try:
        return msgspec.defstruct(name, fields, kw_only=True, forbid_unknown_fields=True)
    except (TypeError, ValueError) as exc:
        raise ToolLoadError(f"{name!r}: {exc}") from exc


def _described(hint: Any, description: str | None) -> Any:
    if not description or _has_description(hint):
        return hint
    return Annotated[hint, msgspec.Meta(description=description)]


def _has_description(hint: Any) -> bool:
    if get_origin(hint) is not Annotated:
        return False
    metas = get_args(hint)[1:]
    return any(isinstance(m, msgspec.Meta) and m.description for m in metas)


def parameters_schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """The Struct's schema as one plain object, references inlined.

    OpenAI-compatible servers (llama.cpp among them) handle ``$ref`` poorly, so
    only a recursive type keeps one, with the ``$defs`` it needs at the top.
    """
    try:
        (ref,), components = msgspec.json.schema_components(
            [struct], ref_template=_REF_PREFIX + "{name}"
        )
    except TypeError as exc:
        raise ToolLoadError(
            f"{struct.__name__!r}: no JSON schema for its arguments: {exc}"
        ) from exc
    top = ref["$ref"].removeprefix(_REF_PREFIX)
    kept: set[str] = set()
    schema: dict[str, Any] = _inline(components[top], components, (top,), kept)
    # The tool's name already says what the title would.
    schema.pop("title", None)
    defs: dict[str, Any] = {}
    while pending := kept - defs.keys():
        for name in sorted(pending):
            defs[name] = _inline(components[name], components, (name,), kept)
    if defs:
        schema["$defs"] = defs
    return schema


def _inline(
    node: Any, components: Mapping[str, Any], stack: tuple[str, ...], kept: set[str]
) -> Any:
    if isinstance(node, list):
        return [_inline(item, components, stack, kept) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
        name = ref.removeprefix(_REF_PREFIX)
        if name in stack:
            kept.add(name)
            return node
        # A reference may carry siblings, such as the parameter's description.
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        return {**_inline(components[name], components, (*stack, name), kept), **siblings}
    return {key: _inline(value, components, stack, kept) for key, value in node.items()}
