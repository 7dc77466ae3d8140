"""Function tools for the harmony developer message: validation and the TypeScript-like rendering
of their JSON-schema parameters, written to match openai-harmony 0.0.8 character for character
(`namespace functions { type NAME = (_: {...}) => any; }`)."""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Sequence

_TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclasses.dataclass(frozen=True)
class Tool:
    """A function the model may call as `to=functions.NAME`. `parameters` is a JSON schema of
    type object (None: the function takes no arguments)."""
    name: str
    description: str = ""
    parameters: dict | None = None


def validate_tools(tools: Sequence[Tool]) -> None:
    """Raise ValueError naming the tool and the problem (name, schema, duplicates)."""
    seen = set()
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, Tool):
            raise ValueError(f"{where}: expected a Tool, got {type(tool).__name__}")
        if not isinstance(tool.name, str) or not _TOOL_NAME.fullmatch(tool.name):
            raise ValueError(f"{where}: tool name {tool.name!r} must be an identifier "
                             "([A-Za-z_][A-Za-z0-9_]*, at most 64 characters)")
        if tool.name in seen:
            raise ValueError(f"{where}: duplicate tool name {tool.name!r}")
        seen.add(tool.name)
        if not isinstance(tool.description, str):
            raise ValueError(f"{where} ({tool.name}): description must be a string")
        if tool.parameters is not None:
            _validate_object_schema(tool.parameters, f"{where} ({tool.name}) parameters")


def _validate_object_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        raise ValueError(f"{where}: must be a JSON schema object, got {type(schema).__name__}")
    if schema.get("type") != "object":
        raise ValueError(f"{where}: must be an object schema ({{\"type\": \"object\", ...}}), "
                         f"got type {schema.get('type')!r}")
    try:
        json.dumps(schema, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: not serializable as JSON: {exc}") from None
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise ValueError(f"{where}: 'properties' must be an object")
    for key, prop in props.items():
        if not isinstance(prop, dict):
            raise ValueError(f"{where}: property {key!r} must be a schema object")
        if any(c.isspace() for c in key) or not key:
            raise ValueError(f"{where}: property name {key!r} must be non-empty without whitespace")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ValueError(f"{where}: 'required' must be a list of property names")
    unknown = [r for r in required if r not in props]
    if unknown:
        raise ValueError(f"{where}: 'required' names unknown properties {unknown}")


def tools_section(tools: Sequence[Tool]) -> str:
    """The '# Tools' section of the developer message for the `functions` namespace."""
    lines = ["## functions\n", "namespace functions {\n"]
    for tool in tools:
        lines += [f"// {line}" for line in rust_lines(tool.description)]
        if tool.parameters is None:
            lines.append(f"type {tool.name} = () => any;\n")
        else:
            lines.append(f"type {tool.name} = (_: {schema_to_typescript(tool.parameters, '')}) => any;\n")
    lines.append("} // namespace functions")
    return "# Tools\n\n" + "\n".join(lines)


def rust_lines(text: str) -> list[str]:
    """Rust's str::lines(): split on \\n, drop one trailing empty line, strip a trailing \\r."""
    if not text:
        return []
    parts = text.split("\n")
    if parts[-1] == "":
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts]


def _get(schema: Any, key: str) -> Any:
    return schema.get(key) if isinstance(schema, dict) else None


def _has(schema: Any, key: str) -> bool:
    return isinstance(schema, dict) and key in schema


def _is_enum(schema: Any) -> bool:
    values = _get(schema, "enum")
    return isinstance(values, list) and len(values) > 0


def _json(value: Any) -> str:
    """serde_json's compact Display (key order kept, non-ASCII unescaped)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _default_text(schema: dict, enum_string_raw: bool) -> str:
    """How a 'default' is shown: strings quoted unless the schema is an enum; for enums harmony
    prints the raw string in property comments (`enum_string_raw`) but JSON in top-level oneOf."""
    default = schema["default"]
    if isinstance(default, str) and not _is_enum(schema):
        return f'"{default}"'
    if isinstance(default, str) and enum_string_raw:
        return default
    return _json(default)


def _with_null(type_text: str, schema: Any) -> str:
    if _get(schema, "nullable") is True and "null" not in type_text:
        return f"{type_text} | null"
    return type_text


def schema_to_typescript(schema: Any, indent: str) -> str:
    """JSON schema -> the TypeScript-ish type text openai-harmony renders."""
    one_of = _get(schema, "oneOf")
    if isinstance(one_of, list):
        return _top_level_one_of(one_of, indent)
    kind = _get(schema, "type")
    if isinstance(kind, list):
        names = ["number" if k == "integer" else k for k in kind if isinstance(k, str)]
        if names:
            return " | ".join(names)
    if not isinstance(kind, str):
        return "any"
    if kind == "object":
        return _object(schema, indent)
    if kind == "string":
        values = _get(schema, "enum")
        quoted = [f'"{v}"' for v in values if isinstance(v, str)] if isinstance(values, list) else []
        return " | ".join(quoted) if quoted else "string"
    if kind in ("number", "integer"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "array":
        if "items" in schema:
            return f"{schema_to_typescript(schema['items'], indent)}[]"
        return "Array<any>"
    return "any"


def _top_level_one_of(variants: list, indent: str) -> str:
    out = ""
    for variant in variants:
        out += f"\n{indent} | " + _with_null(schema_to_typescript(variant, indent + "   "), variant)
        comments = []
        if isinstance(_get(variant, "description"), str):
            comments.append(variant["description"])
        if _has(variant, "default"):
            comments.append("default: " + _default_text(variant, enum_string_raw=False))
        if comments:
            out += " // " + " ".join(comments)
    return out


def _object(schema: dict, indent: str) -> str:
    out = ""
    if isinstance(schema.get("description"), str):
        out += f"{indent}// {schema['description']}\n"
    out += "{\n"
    props = schema.get("properties")
    if isinstance(props, dict):
        required = schema.get("required")
        required = {r for r in required if isinstance(r, str)} if isinstance(required, list) else set()
        for key, prop in props.items():
            out += _property(key, prop, key in required, indent)
    return out + f"{indent}}}"


def _property_comments(prop: Any, indent: str) -> str:
    out = ""
    if isinstance(_get(prop, "title"), str):
        out += f"{indent}// {prop['title']}\n{indent}//\n"
    if not _has(prop, "oneOf") and isinstance(_get(prop, "description"), str):
        out += f"{indent}// {prop['description']}\n"
    examples = _get(prop, "examples")
    if isinstance(examples, list) and examples:
        out += f"{indent}// Examples:\n"
        out += "".join(f'{indent}// - "{ex}"\n' for ex in examples if isinstance(ex, str))
    return out


def _property(key: str, prop: Any, required: bool, indent: str) -> str:
    mark = "" if required else "?"
    out = _property_comments(prop, indent)
    one_of = _get(prop, "oneOf")
    if isinstance(one_of, list):
        return out + _one_of_property(key, prop, one_of, mark, indent)
    out += f"{indent}{key}{mark}: "
    out += _with_null(schema_to_typescript(prop, indent + "    "), prop) + ","
    if not _has(prop, "oneOf") and _has(prop, "default"):
        out += " // default: " + _default_text(prop, enum_string_raw=True)
    return out + "\n"


def _one_of_property(key: str, prop: dict, variants: list, mark: str, indent: str) -> str:
    desc = prop.get("description") if isinstance(prop.get("description"), str) else None
    first_desc = _get(variants[0], "description") if variants else None
    out = ""
    desc_above = desc is not None and first_desc != desc
    if desc_above:
        out += f"{indent}// {desc}\n"
    if "default" in prop:
        out += f"{indent}// default: {_default_text(prop, enum_string_raw=True)}\n"
    out += f"{indent}{key}{mark}:\n"
    for i, variant in enumerate(variants):
        out += f"{indent} | " + _with_null(schema_to_typescript(variant, indent + "   "), variant)
        comments = []
        variant_desc = _get(variant, "description")
        if not (i == 0 and desc_above) and isinstance(variant_desc, str) and variant_desc != desc:
            comments.append(variant_desc)
        if _has(variant, "default"):
            comments.append("default: " + _default_text(variant, enum_string_raw=True))
        if comments:
            out += " // " + " ".join(comments)
        out += "\n"
    return out + f"{indent},\n"
