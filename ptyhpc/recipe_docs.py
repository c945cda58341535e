"""Write ``docs/recipes.md``, the reference of every ``ptyhpc run`` recipe key, from the option models.

Run ``python -m ptyhpc.recipe_docs`` to rewrite the file, ``--check`` to fail when it is out of date
(``tests/test_newcomer.py`` does). Every field of :class:`ptyhpc.recipe.Recipe` becomes a section;
a field typed by a pydantic model (a stage's options) is documented from that model, nested models
as dotted keys, so a new stage added to ``recipe.py`` as one model and one field appears without
touching this module. Sections that the recipe keeps as a mapping checked by another class
(``ptycho`` by :class:`~ptyhpc.ptycho.options.PtychoOptions`, ``cluster`` by
:class:`~ptyhpc.cluster.ClusterConfig`) are listed in :data:`MAPPED_SECTIONS`.

A key's meaning is taken, in this order, from the field's ``description``, the comment at the end of
its line in the source, or the entry for it in the class docstring (``name : type`` or ````name````
followed by an indented paragraph).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

__all__ = ["render", "MAPPED_SECTIONS", "DOC_PATH"]

#: Where the generated reference lives in the repository.
DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"


def _mapped_sections() -> dict:
    from .cluster import ClusterConfig  # noqa: PLC0415
    from .ptycho.options import PtychoOptions  # noqa: PLC0415

    return {"ptycho": PtychoOptions, "cluster": ClusterConfig}


#: Recipe fields typed ``dict`` whose keys another class checks: field name -> class (lazy).
MAPPED_SECTIONS = _mapped_sections


def _type_name(ann) -> str:
    origin = typing.get_origin(ann)
    args = [a for a in typing.get_args(ann)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return " \\| ".join(repr(a).replace("'", "") for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if isinstance(ann, type):
        if issubclass(ann, BaseModel):
            return "mapping (below)"
        return {"str": "text", "bool": "true/false", "int": "integer", "float": "number",
                "dict": "mapping", "list": "list"}.get(ann.__name__, ann.__name__)
    return str(ann).replace("typing.", "").replace("NoneType", "null")


def _default(value) -> str:
    if value is PydanticUndefined or value is dataclasses.MISSING:
        return "**required**"
    if isinstance(value, BaseModel):
        return "(below)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)) and not value:
        return "{}" if isinstance(value, dict) else "[]"
    return f"`{value}`"


def _source_comments(cls) -> dict[str, str]:
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for line in src.splitlines():
        m = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
        if m and not line.strip().startswith("#"):
            out[m.group(1)] = m.group(2).strip()
    return out


def _docstring_entries(cls) -> dict[str, str]:
    doc = inspect.cleandoc(cls.__doc__ or "")
    lines = doc.splitlines()
    out = {}
    for i, line in enumerate(lines):
        m = re.match(r"^``([\w, `]+)``\s*$", line.strip()) or re.match(r"^(\w+)\s*:\s*\S.*$", line.strip())
        if not m or line.startswith(" "):
            continue
        body = []
        for nxt in lines[i + 1:]:
            if not nxt.startswith("    ") or not nxt.strip():
                break
            body.append(nxt.strip())
        if body:
            text = " ".join(body)
            for name in re.split(r"[`, ]+", m.group(1)):
                if name:
                    out.setdefault(name, text)
    return out


def _clean(text: str) -> str:
    text = re.sub(r":(?:func|class|data|mod|meth|attr):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`").replace("|", "\\|").replace("\n", " ")


def _rows(cls) -> list[tuple[str, str, str, str, type | None]]:
    """(key, type, default, meaning, nested model or None) for each option of ``cls``."""
    comments, entries = _source_comments(cls), _docstring_entries(cls)
    rows = []
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        hints = typing.get_type_hints(cls)
        for name, f in cls.model_fields.items():
            ann = hints.get(name, f.annotation)
            default = f.default_factory() if f.default_factory is not None else f.default
            meaning = f.description or comments.get(name) or entries.get(name, "")
            nested = next((a for a in (ann, *typing.get_args(ann))
                           if isinstance(a, type) and issubclass(a, BaseModel)), None)
            rows.append((name, _type_name(ann), _default(default), _clean(meaning), nested))
    elif dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            meaning = comments.get(f.name) or entries.get(f.name, "")
            rows.append((f.name, _type_name(hints.get(f.name, f.type)), _default(default), _clean(meaning), None))
    return rows


def _summary(cls) -> str:
    doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0]
    return _clean(doc)


def _table(prefix: str, cls, out: list[str], level: int) -> None:
    rows = _rows(cls)
    out += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    out += [f"| `{prefix}{k}` | {t} | {d} | {m} |" for k, t, d, m, _ in rows]
    out.append("")
    for k, _, _, _, nested in rows:
        if nested is not None:
            out += [f"{'#' * (level + 1)} `{prefix}{k}`", "", _summary(nested), ""]
            _table(f"{prefix}{k}.", nested, out, level + 1)


def render() -> str:
    """The text of ``docs/recipes.md`` for the option models as they are now."""
    from .recipe import Recipe  # noqa: PLC0415

    mapped = MAPPED_SECTIONS()
    out = ["# Recipe reference (`ptyhpc run RECIPE.yaml`)", "",
           "<!-- Generated by `python -m ptyhpc.recipe_docs` from the option models in ptyhpc/recipe.py; "
           "do not edit (tests/test_newcomer.py fails when it is out of date). -->", "",
           "A recipe is a YAML mapping. Unknown keys are errors that name the key; paths are relative to "
           "the recipe's folder. `examples/cnt_demo.yaml` is a complete one. Only `input` and `store` "
           "are required.", "", "## Top level", ""]
    rows = _rows(Recipe)
    out += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    out += [f"| `{k}` | {t} | {d} | {m} |" for k, t, d, m, _ in rows]
    out.append("")
    for k, _, _, _, nested in rows:
        cls = nested or mapped.get(k)
        if cls is None:
            continue
        out += [f"## `{k}`", "", _summary(cls), ""]
        _table(f"{k}.", cls, out, 2)
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        if not DOC_PATH.is_file() or DOC_PATH.read_text() != text:
            print(f"{DOC_PATH} is out of date: run `python -m ptyhpc.recipe_docs`", file=sys.stderr)
            return 1
        return 0
    DOC_PATH.write_text(text)
    print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
