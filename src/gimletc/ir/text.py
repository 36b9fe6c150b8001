"""The IR's text form: MLIR generic syntax, printed and parsed back identically.

```
module attributes {gimlet.level = "agent"} {
  %req = "agent.input"() {sym_name = "req", tokens = 100 : i64} : () -> !gimlet.tokens<100>
  %fix = "agent.loop"(%req) ({
  ^bb0(%it: !gimlet.tokens<100>):
    "agent.yield"(%it) {sym_name = "fix.yield"} : (!gimlet.tokens<100>) -> ()
  }) {expected = 2.5 : f64, max = 8 : i64, sym_name = "fix"} : (!gimlet.tokens<100>) -> !gimlet.tokens<100>
}
```

An op's name is its `sym_name` attribute; attributes print in sorted key order
(int `N : i64`, float `2.5 : f64`, str `"..."`, bool `true`, tuple `[a, b]`);
an int outside i64 prints with a wider type (`N : i128`) so MLIR keeps it exact;
types are `!gimlet.{tokens,kv,act,bytes}<N>` and `!async.token`.

`parse_graph(print_graph(g)) == g` for every graph `verify` accepts whose region
graphs carry no attributes (MLIR regions have none). The real MLIR parser reads
the text, with unregistered dialects allowed, exactly as written, unless the
top-level graph has arguments (printed as a `^bb0` label, which a module may
not have) or a graph attribute name has no dialect prefix (MLIR wants
`gimlet.level`, not `level`, on a module); both still round-trip here.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gimletc.ir.core import ASYNC_TOKEN, TYPE_KINDS, AttrValue, Graph, IRError, Op, Type, Value, frozen_attrs

__all__ = ["parse_graph", "print_graph"]

_INDENT = "  "
_BARE_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_$.]*")
# MLIR's suffix-id: all digits, or a letter/punct followed by letters, digits and punct.
_VALUE_ID = re.compile(r"[0-9]+|[A-Za-z_.$-][A-Za-z0-9_.$-]*")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_SIZED_KINDS = tuple(k for k in TYPE_KINDS if k != "token")


# ---- printing ----------------------------------------------------------------------------


def print_graph(graph: Graph) -> str:
    """The graph as MLIR generic syntax, one op per line, ending in a newline.

    Deterministic: equal graphs print identical text. Raises IRError naming the
    op or value that has no text form: a value name MLIR cannot spell, an
    inf/NaN float, a `sym_name` attribute, attributes on a region graph, or an
    operand no op or region argument defines (its type would be unknown)."""
    p = _Printer(graph)
    head = f"module attributes {_attr_dict(graph.attrs, 'module')} {{" if graph.attrs else "module {"
    p.lines.append(head)
    p.block(graph, 1, {}, "module")
    p.lines.append("}")
    return "\n".join(p.lines) + "\n"


class _Printer:
    def __init__(self, graph: Graph) -> None:
        self.lines: list[str] = []
        # Every value in the graph, so that a use before its definition (an
        # invalid graph being dumped) still prints with its type.
        self.anywhere: dict[str, Type] = {}
        self._collect(graph)

    def _collect(self, g: Graph) -> None:
        for a in g.args:
            self.anywhere.setdefault(a.name, a.type)
        for op in g.ops:
            for v in op.results:
                self.anywhere.setdefault(v.name, v.type)
            for r in op.regions:
                self._collect(r)

    def block(self, g: Graph, depth: int, scope: dict[str, Type], where: str) -> None:
        if g.args:
            args = ", ".join(f"{_value_ref(a.name, where)}: {_type(a.type, where)}" for a in g.args)
            self.lines.append(f"{_INDENT * (depth - 1)}^bb0({args}):")
            scope.update((a.name, a.type) for a in g.args)
        for op in g.ops:
            self.op(op, depth, scope)

    def op(self, op: Op, depth: int, scope: dict[str, Type]) -> None:
        where = f"op @{op.name} ({op.kind})"
        ind = _INDENT * depth
        head = ", ".join(_value_ref(v.name, where) for v in op.results)
        head = f"{head} = " if head else ""
        operands = ", ".join(_value_ref(n, where) for n in op.operands)
        in_types = ", ".join(_type(self._type_of(n, scope, where), where) for n in op.operands)
        out = [_type(v.type, where) for v in op.results]
        out_types = out[0] if len(out) == 1 else f"({', '.join(out)})"
        if "sym_name" in op.attrs:
            raise IRError(f"{where}: attribute sym_name is reserved for the op's name")
        attrs = _attr_dict({"sym_name": op.name, **op.attrs}, where)
        tail = f"{attrs} : ({in_types}) -> {out_types}"
        call = f"{ind}{head}{_quote(op.kind)}({operands})"
        if not op.regions:
            self.lines.append(f"{call} {tail}")
        else:
            self.lines.append(f"{call} ({{")
            for i, r in enumerate(op.regions):
                if r.attrs:
                    raise IRError(f"{where}: region {i} has graph attributes, which MLIR regions cannot carry")
                if i:
                    self.lines.append(f"{ind}}}, {{")
                self.block(r, depth + 1, dict(scope), where)
            self.lines.append(f"{ind}}}) {tail}")
        scope.update((v.name, v.type) for v in op.results)

    def _type_of(self, name: str, scope: dict[str, Type], where: str) -> Type:
        t = scope.get(name) or self.anywhere.get(name)
        if t is None:
            raise IRError(f"{where} uses %{name}, which no op or region argument defines, so its type is unknown")
        return t


def _value_ref(name: str, where: str) -> str:
    if not _VALUE_ID.fullmatch(name):
        raise IRError(
            f"{where}: value name %{name!s} cannot be printed; MLIR value names are all digits, or "
            "letters, digits and _ . $ - not starting with a digit"
        )
    return f"%{name}"


def _type(t: Type, where: str) -> str:
    if t.kind == "token":
        if t.size:
            raise IRError(f"{where}: an !async.token has no size, but this one has size {t.size}")
        return "!async.token"
    return f"!gimlet.{t.kind}<{_size(t.size, where)}>"


def _size(x: float, where: str) -> str:
    try:
        return str(operator.index(x))
    except TypeError:
        pass
    x = float(x)
    if not math.isfinite(x):
        raise IRError(f"{where}: a value size of {x} cannot be printed")
    return str(int(x)) if x.is_integer() else _float(x, where)


def _float(x: float, where: str) -> str:
    """repr(x) spelled as an MLIR float literal: it always has a '.' before any exponent."""
    if not math.isfinite(x):
        raise IRError(f"{where}: float {x} cannot be printed (MLIR has no literal for inf or nan)")
    mantissa, e, exponent = repr(float(x)).partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}{e}{exponent}"


def _int(x: int) -> str:
    if _I64_MIN <= x <= _I64_MAX:
        return f"{x} : i64"
    # MLIR wraps an out-of-range i64 literal silently; a wider type keeps it exact.
    return f"{x} : i{64 * math.ceil((x.bit_length() + 1) / 64)}"


def _quote(s: str) -> str:
    """An MLIR string literal: `\\"`, `\\\\`, `\\n`, and `\\XX` UTF-8 bytes for other non-printables."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.extend(f"\\{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    out.append('"')
    return "".join(out)


def _attr(v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return _int(int(v))
    if isinstance(v, float):
        return f"{_float(v, where)} : f64"
    if isinstance(v, str):
        return _quote(v)
    if isinstance(v, tuple):
        return f"[{', '.join(_attr(x, where) for x in v)}]"
    raise IRError(f"{where}: attribute value {v!r} is not an int, float, str, bool or tuple")


def _attr_dict(attrs: Mapping[str, AttrValue], where: str) -> str:
    parts = []
    for key in sorted(attrs):
        if not key:
            raise IRError(f"{where}: an attribute has an empty name, which MLIR cannot print")
        name = key if _BARE_ID.fullmatch(key) else _quote(key)
        try:
            parts.append(f"{name} = {_attr(attrs[key], where)}")
        except IRError as e:
            raise IRError(f"{e} (attribute {key})") from None
    return "{" + ", ".join(parts) + "}"


# ---- parsing -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # punct, ident, value, label, type, string, int, float, eof
    text: str  # decoded for strings; the name (no sigil) for values and labels
    line: int
    col: int

    def describe(self) -> str:
        if self.kind == "eof":
            return "end of input"
        if self.kind == "value":
            return f"%{self.text}"
        if self.kind == "label":
            return f"^{self.text}"
        if self.kind == "string":
            return _quote(self.text)
        if self.kind == "type":
            return f"!{self.text}"
        return f"'{self.text}'"


_NUMBER = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?")
_SUFFIX = re.compile(r"[A-Za-z0-9_.$-]*")
_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$.]*")
_STRING_CHUNK = re.compile(r'[^"\\\n\v\f]+')
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")
_INT_TYPE = re.compile(r"[su]?i[0-9]+|index")
_FLOAT_TYPES = frozenset({"f16", "bf16", "f32", "f64", "f80", "f128"})


def _error(line: int, col: int, msg: str) -> IRError:
    return IRError(f"line {line}, column {col}: {msg}")


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, line, bol, n = 0, 1, 0, len(text)
    while i < n:
        c, col = text[i], i - bol + 1
        if c == "\n":
            i, line, bol = i + 1, line + 1, i + 1
        elif c in " \t\r":
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("->", i):
            toks.append(_Tok("punct", "->", line, col))
            i += 2
        elif c in "(){}[],:=":
            toks.append(_Tok("punct", c, line, col))
            i += 1
        elif c in "%^":
            m = _SUFFIX.match(text, i + 1)
            name = m.group()
            if c == "%" and not _VALUE_ID.fullmatch(name):
                raise _error(line, col, f"invalid value name %{name}")
            if not name:
                raise _error(line, col, "expected a block label name after '^'")
            toks.append(_Tok("value" if c == "%" else "label", name, line, col))
            i = m.end()
        elif c == "!":
            m = _TYPE_NAME.match(text, i + 1)
            if not m:
                raise _error(line, col, "expected a type name after '!'")
            j = m.end()
            if j < n and text[j] == "<":
                k = text.find(">", j)
                nl = text.find("\n", j)
                if k < 0 or 0 <= nl < k:
                    raise _error(line, col, f"type !{m.group()}< has no closing '>' on its line")
                j = k + 1
            toks.append(_Tok("type", text[i + 1 : j], line, col))
            i = j
        elif c == '"':
            s, i = _lex_string(text, i, line, col)
            toks.append(_Tok("string", s, line, col))
        elif c.isdigit() or (c in "-+" and i + 1 < n and text[i + 1].isdigit()):
            m = _NUMBER.match(text, i)
            is_float = m.group(1) is not None or m.group(2) is not None
            toks.append(_Tok("float" if is_float else "int", m.group(), line, col))
            i = m.end()
        elif c.isascii() and (c.isalpha() or c == "_"):
            m = _BARE_ID.match(text, i)
            toks.append(_Tok("ident", m.group(), line, col))
            i = m.end()
        else:
            raise _error(line, col, f"unexpected character {c!r}")
    toks.append(_Tok("eof", "", line, i - bol + 1))
    return toks


def _lex_string(text: str, i: int, line: int, col: int) -> tuple[str, int]:
    """The decoded string literal starting at text[i] == '"', and the index after it."""
    buf = bytearray()
    j, n = i + 1, len(text)
    while True:
        m = _STRING_CHUNK.match(text, j)
        if m:
            buf += m.group().encode("utf-8", "surrogatepass")
            j = m.end()
        if j >= n or text[j] in "\n\v\f":
            raise _error(line, col, "string literal has no closing '\"' on its line")
        if text[j] == '"':
            break
        esc = text[j + 1 : j + 2]  # text[j] is a backslash
        if esc in ('"', "\\"):
            buf += esc.encode()
            j += 2
        elif esc in ("n", "t"):
            buf += b"\n" if esc == "n" else b"\t"
            j += 2
        elif _HEX2.fullmatch(text, j + 1, j + 3):
            buf.append(int(text[j + 1 : j + 3], 16))
            j += 3
        else:
            raise _error(line, j - i + col, f"unknown escape '\\{esc}' in string literal")
    try:
        return buf.decode("utf-8", "surrogatepass"), j + 1
    except UnicodeDecodeError:
        raise _error(line, col, "string literal is not valid UTF-8 once its escapes are decoded") from None


def parse_graph(text: str) -> Graph:
    """The graph `text` spells (as `print_graph` writes it); does not verify it.

    Raises IRError with the line and column of the first malformed token:
    unbalanced braces, unknown types, bad escapes, operand or result counts
    that disagree with the op's function type, an operand used with a type
    other than the one it was defined with, or an op without a `sym_name`."""
    return _Parser(_tokenize(text)).module()


class _Parser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.pos = 0

    # -- token helpers
    def peek(self) -> _Tok:
        return self.toks[self.pos]

    def next(self) -> _Tok:
        tok = self.toks[self.pos]
        if tok.kind != "eof":
            self.pos += 1
        return tok

    def at(self, text: str) -> bool:
        tok = self.peek()
        return tok.kind in ("punct", "ident") and tok.text == text

    def expect(self, text: str, context: str) -> _Tok:
        tok = self.next()
        if tok.kind not in ("punct", "ident") or tok.text != text:
            raise self.error(tok, f"expected '{text}' {context}, got {tok.describe()}")
        return tok

    def expect_kind(self, kind: str, context: str) -> _Tok:
        tok = self.next()
        if tok.kind != kind:
            raise self.error(tok, f"expected {context}, got {tok.describe()}")
        return tok

    @staticmethod
    def error(tok: _Tok, msg: str) -> IRError:
        return _error(tok.line, tok.col, msg)

    # -- grammar
    def module(self) -> Graph:
        tok = self.peek()
        if not self.at("module"):
            raise self.error(tok, f"expected 'module', got {tok.describe()}")
        self.next()
        attrs: dict[str, AttrValue] = {}
        if self.at("attributes"):
            self.next()
            attrs = self.attr_dict()
        self.expect("{", "to open the module's body")
        scope: dict[str, Type] = {}
        args = self.block_label(scope) if self.peek().kind == "label" else ()
        ops = self.ops(scope)
        self.expect("}", "to close the module")
        end = self.peek()
        if end.kind != "eof":
            raise self.error(end, f"expected end of input after the module, got {end.describe()}")
        return Graph(ops, args, frozen_attrs(attrs))

    def block_label(self, scope: dict[str, Type]) -> tuple[Value, ...]:
        self.next()  # ^bb0
        args: list[Value] = []
        if self.at("("):
            self.next()
            while not self.at(")"):
                if args:
                    self.expect(",", "between block arguments")
                name = self.expect_kind("value", "a block argument %name").text
                self.expect(":", f"after block argument %{name}")
                t = self.type()
                args.append(Value(name, t))
                scope[name] = t
            self.next()
        self.expect(":", "after the block label")
        return tuple(args)

    def ops(self, scope: dict[str, Type]) -> tuple[Op, ...]:
        ops: list[Op] = []
        while not self.at("}"):
            tok = self.peek()
            if tok.kind == "eof":
                raise self.error(tok, "expected '}' to close the region, got end of input")
            if tok.kind == "label":
                raise self.error(tok, f"a region holds one block; unexpected block label ^{tok.text}")
            ops.append(self.op(scope))
        return tuple(ops)

    def op(self, scope: dict[str, Type]) -> Op:
        start = self.peek()
        results: list[_Tok] = []
        if start.kind == "value":
            results.append(self.next())
            while self.at(","):
                self.next()
                results.append(self.expect_kind("value", "a result %name"))
            self.expect("=", "after the op's results")
        kind = self.expect_kind("string", 'an op kind in quotes, e.g. "agent.llm"').text
        self.expect("(", f"to open the operands of {kind}")
        operands: list[_Tok] = []
        while not self.at(")"):
            if operands:
                self.expect(",", f"between operands of {kind}")
            operands.append(self.expect_kind("value", f"an operand %name of {kind}"))
        self.next()
        regions: list[Graph] = []
        if self.at("("):
            self.next()
            regions.append(self.region(scope))
            while self.at(","):
                self.next()
                regions.append(self.region(scope))
            self.expect(")", f"to close the regions of {kind}")
        attrs = self.attr_dict() if self.at("{") else {}
        self.expect(":", f"before the type of {kind}")
        in_types = self.type_list()
        self.expect("->", f"in the type of {kind}")
        out_types = self.type_list() if self.at("(") else [self.type()]

        name = attrs.pop("sym_name", None)
        if not isinstance(name, str):
            raise self.error(start, f"op {kind} has no sym_name string attribute (the op's name)")
        where = f"op @{name} ({kind})"
        if len(in_types) != len(operands):
            raise self.error(start, f"{where} has {len(operands)} operands but {len(in_types)} operand types")
        if len(out_types) != len(results):
            raise self.error(start, f"{where} has {len(results)} results but {len(out_types)} result types")
        for tok, t in zip(operands, in_types, strict=True):
            known = scope.get(tok.text)
            if known is not None and known != t:
                raise self.error(
                    tok, f"{where} uses %{tok.text} as {_type(t, where)}, but it was defined as {_type(known, where)}"
                )
        values = tuple(Value(tok.text, t) for tok, t in zip(results, out_types, strict=True))
        scope.update((v.name, v.type) for v in values)
        try:
            return Op(kind, name, tuple(t.text for t in operands), values, frozen_attrs(attrs), tuple(regions))
        except IRError as e:
            raise self.error(start, str(e)) from None

    def region(self, scope: dict[str, Type]) -> Graph:
        self.expect("{", "to open a region")
        inner = dict(scope)
        args = self.block_label(inner) if self.peek().kind == "label" else ()
        ops = self.ops(inner)
        self.next()  # }
        return Graph(ops, args)

    def type_list(self) -> list[Type]:
        self.expect("(", "to open a type list")
        types: list[Type] = []
        while not self.at(")"):
            if types:
                self.expect(",", "between types")
            types.append(self.type())
        self.next()
        return types

    def type(self) -> Type:
        tok = self.expect_kind("type", "a type such as !gimlet.tokens<N> or !async.token")
        name, _, body = tok.text.partition("<")
        if name == "async.token" and not body:
            return ASYNC_TOKEN
        kind = name.removeprefix("gimlet.")
        if name.startswith("gimlet.") and kind in _SIZED_KINDS and body:
            size = body[:-1].strip()
            m = _NUMBER.fullmatch(size)
            if m is None:
                raise self.error(tok, f"type !{tok.text} needs a numeric size")
            try:
                return Type(kind, float(size) if m.group(1) or m.group(2) else int(size))  # type: ignore[arg-type]
            except IRError as e:
                raise self.error(tok, str(e)) from None
        known = ", ".join(f"!gimlet.{k}<N>" for k in _SIZED_KINDS)
        raise self.error(tok, f"unknown type !{tok.text}; known: {known}, !async.token")

    def attr_dict(self) -> dict[str, AttrValue]:
        self.expect("{", "to open an attribute dictionary")
        attrs: dict[str, AttrValue] = {}
        while not self.at("}"):
            if attrs:
                self.expect(",", "between attributes")
            tok = self.next()
            if tok.kind not in ("ident", "string") or not tok.text:
                raise self.error(tok, f"expected an attribute name, got {tok.describe()}")
            if tok.text in attrs:
                raise self.error(tok, f"attribute {tok.text} is given twice")
            self.expect("=", f"after attribute name {tok.text}")
            attrs[tok.text] = self.attr()
        self.next()
        return attrs

    def attr(self) -> AttrValue:
        tok = self.next()
        if tok.kind == "string":
            return tok.text
        if tok.kind == "ident" and tok.text in ("true", "false"):
            return tok.text == "true"
        if tok.kind == "punct" and tok.text == "[":
            items: list[AttrValue] = []
            while not self.at("]"):
                if items:
                    self.expect(",", "between array elements")
                items.append(self.attr())
            self.next()
            return tuple(items)
        if tok.kind in ("int", "float"):
            is_float = tok.kind == "float"
            if self.at(":"):
                self.next()
                t = self.expect_kind("ident", f"a type after {tok.text} :")
                if t.text in _FLOAT_TYPES:
                    is_float = True
                elif not _INT_TYPE.fullmatch(t.text) or is_float:
                    raise self.error(t, f"{tok.text} cannot have type {t.text}")
            return float(tok.text) if is_float else int(tok.text)
        raise self.error(tok, f"expected an attribute value, got {tok.describe()}")
