"""Functionary's TypeScript tool schema writer (`typescript_schema`), used by `functionary_v3_llama3`."""

from __future__ import annotations

from typing import Mapping, Sequence

from jaxtool.data.schema import Tool


# Functionary shows tools to the model as TypeScript type declarations (functionary/schema.py,
# `generate_schema_from_functions`). The rules below reproduce its output: one `// description`
# comment and one `type name = (_: {...}) => any;` per function, optional parameters marked `?`,
# integer/float -> number, enums as string-literal unions, nested objects and arrays indented by 4.

def _ts_type(p: Mapping) -> str:
    if "type" in p:
        t = p["type"]
        t = " | ".join(str(x) for x in t) if isinstance(t, list) else str(t)
    elif isinstance(p.get("oneOf"), list):
        seen: list[str] = []  # INFERRED order: functionary de-duplicates through a set (unordered)
        for item in p["oneOf"]:
            if isinstance(item, Mapping) and "type" in item:
                ct = _ts_convert(str(item["type"]))
                if ct not in seen:
                    seen.append(ct)
        t = " | ".join(seen)
    else:
        t = "any"
    return _ts_convert(t)


def _ts_convert(t: str) -> str:
    return "number" if t in ("integer", "float") else t


def _ts_comment(p: Mapping) -> str | None:
    info = []
    if "description" in p:
        desc = str(p["description"])
        info.append(desc if desc.endswith(".") else desc + ".")
    if "default" in p:
        value = p["default"]
        info.append(f"Default={chr(34) + str(value) + chr(34) if p.get('type', 'any') == 'string' else value}.")
    fmt = p.get("format")
    if fmt is None and isinstance(p.get("oneOf"), list):
        fmts = [str(x["format"]) for x in p["oneOf"] if isinstance(x, Mapping) and "format" in x]
        fmt = " or ".join(fmts) if fmts else None
    if fmt is not None:
        info.append(f"Format={fmt}")
    for key, label in (("maximum", "Maximum"), ("minimum", "Minimum"),
                       ("maxLength", "Maximum length"), ("minLength", "Minimum length")):
        if key in p:
            info.append(f"{label}={p[key]}")
    return ("// " + " ".join(info)).replace("\n", " ") if info else None


def _ts_enum_items(values) -> str:
    return " | ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in values)


def _ts_array(name: str | None, p: Mapping, depth: int) -> str:
    pad = "    " * depth
    items = p.get("items")
    items = items if isinstance(items, Mapping) else {}
    if not items:
        return f"{pad}{name}: []" if name is not None else "[]"
    t = _ts_type(items)
    if t == "object":
        lines = [f"{pad}{name}: {{" if name is not None else f"{pad}{{"]
        lines += _ts_params(items.get("properties") or {}, items.get("required", []), depth + 1)
        lines.append(f"{pad}}}[]")
        return "\n".join(lines)
    if t == "array":
        inner = _ts_array(None, items, depth + 1)
        return f"{inner}[]" if name is None else f"{pad}{name}: {inner.strip()}[]"
    if "enum" in items and isinstance(items["enum"], list):
        union = _ts_enum_items(items["enum"])
        return f"({union})[]" if name is None else f"{pad}{name}: ({union})[]"
    return f"{t}[]" if name is None else f"{pad}{name}: {t}[],"


def _ts_params(properties: Mapping, required, depth: int) -> list[str]:
    lines: list[str] = []
    pad = "    " * depth
    for pname, p in properties.items():
        if not isinstance(p, Mapping):
            continue
        comment = _ts_comment(p)
        decl = str(pname)
        if isinstance(required, list) and pname not in required:
            decl += "?"
        t = _ts_type(p)
        if t == "object":
            if comment is not None:
                lines.append(pad + comment)
            lines.append(f"{pad}{decl}: {{")
            lines += _ts_params(p.get("properties") or {}, p.get("required", []), depth + 1)
            lines.append(pad + "},")
        elif t == "array":
            items = p.get("items")
            if not isinstance(items, Mapping) or "type" not in items:
                if comment is not None:
                    lines.append(pad + comment)
                lines.append(f"{pad}{decl}: [],")
            else:
                arr = _ts_array(decl, p, depth)
                if not arr.endswith(","):
                    arr += ","
                if comment is not None:
                    lines.append(pad + comment)
                lines.append(arr)
        else:
            if isinstance(p.get("enum"), list):
                t = " | ".join(f'"{v}"' for v in p["enum"])
            if comment is not None:
                lines.append(pad + comment)
            lines.append(f"{pad}{decl}: {t},")
    return lines


def typescript_schema(tools: Sequence[Tool], namespace: str = "functions") -> str:
    """Functionary's TypeScript rendering of `tools`."""
    out = ["// Supported function definitions that should be called when necessary.\n",
           f"namespace {namespace} {{\n\n"]
    for t in tools:
        out.append(f"// {t.description}\n")
        out.append(f"type {t.name}")
        params = t.parameters if isinstance(t.parameters, Mapping) else {}
        props = params.get("properties")
        if isinstance(props, Mapping):
            lines = _ts_params(props, params.get("required", []), 0)
            out.append(" = (_: {\n" + "\n".join(lines) + "\n}) => any;\n\n")
        else:
            out.append(" = () => any;\n\n")
    out.append(f"}} // namespace {namespace}")
    return "".join(out)
