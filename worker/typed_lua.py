"""Wippy's typed Lua, loaded by erasing the types.

Wippy's Lua dialect (its docs' "Type System" page and the grammar of its parser) adds type syntax
to Lua: ``local x: T = ...``, typed parameters and varargs ``(a: T, b: U?, ...: V)``, return types
``function f(a: number): (string, error?)``, generic parameters ``function f<T: C>(x: T): T``,
declarations ``type Name<T> = ...`` / ``export type ...`` / ``interface Name ... end``, casts
``expr as T`` and ``expr :: T``, the non-nil assertion ``expr!`` and validating casts on built-in
types ``string(x)``, ``number(x)``, ``integer(x)``, ``boolean(x)`` (``int``, ``bool``).

`erase` turns such a file into plain Lua 5.4:

* annotations, generic parameters, casts and ``!`` become spaces (newlines kept, so every line
  keeps its number and every token before/after a type on a line keeps its column);
* a type or interface declaration becomes ``;`` plus spaces: the ``;`` keeps the statements
  around it apart, as the declaration did (``f()`` then ``(g)()`` must not become ``f()(g)()``);
* ``string(x)`` & co become ``(__cast_string(x))``, a local helper doing what Wippy documents
  ("call a type as a function to validate and cast"): return the value when it has that type,
  raise ``cannot cast <type> to <T>`` (at the caller's line) otherwise; ``integer`` also accepts
  a float with an integral value.  The helpers are defined on line 1, before its own code; on a
  line with such a cast (and on line 1 then) the columns after the cast move, lines never do.

It is a real tokenizer (long strings and comments, escapes, every number form and operator) and
a parser of the places where Wippy allows types; everything else is left to Lua, which reports
its own syntax errors at the right lines since none move.  What the eraser cannot parse raises
`TypedLuaError` with line and column.  A file without type syntax comes back unchanged (the very
same string).

Not supported, refused with the line: a declared type used as a value (``Point(data)``,
``Point:is(data)``, ``Point.x``): Legato has no runtime type values.  Validators
(``number @min(0)``) are parsed and erased, not enforced.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable

__all__ = ["TypedLuaError", "compile_source", "erase"]


class TypedLuaError(Exception):
    """Typed-Lua syntax Legato cannot parse, at `line` and `column` (both 1-based)."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"{line}:{column}: {message}")
        self.message = message
        self.line = line
        self.column = column


# ---------------------------------------------------------------- tokenizer

# Each match: the whitespace and comments before a token (possessive: a comment is never cut
# short to make a token), then the token, or the end of the text.  Numbers are read as Lua
# reads them (hex floats, exponents), strings with their escapes (\", \\, \z, an escaped
# newline), long strings and comments with their level ([==[ ... ]==]).  `>>` and `>=` are left
# as two tokens: only type syntax looks at them (``Box<Box<T>>``, ``local b: Box<T>= v``) and
# there they are two.  What Lua would reject (an unfinished string, a stray character) still
# becomes a token here: Lua reports it, at the right line, when it compiles the result.
_TOKEN = re.compile(r"""
  (?:[ \t\r\n\f\v]+ | --\[(?P<ceq>=*)\[.*?\](?P=ceq)\] | --\[=*\[.* | --[^\r\n]*)*+
  (?P<tok>
    [A-Za-z_][A-Za-z0-9_]*
  | 0[xX](?:[pP][+-]|[0-9a-fA-F.])* | \.?[0-9](?:[eE][+-]|[0-9a-fA-F.])*
  | \[(?P<seq>=*)\[.*?\](?P=seq)\] | \[=*\[.*
  | "(?:[^"\\\r\n]|\\z[ \t\r\n\f\v]*|\\\r\n?|\\\n\r?|\\.)*(?:"|$|(?=[\r\n]))
  | '(?:[^'\\\r\n]|\\z[ \t\r\n\f\v]*|\\\r\n?|\\\n\r?|\\.)*(?:'|$|(?=[\r\n]))
  | \.\.\.|\.\.|==|~=|<=|<<|//|::|->|[-+*/%^\#&~|<>=(){}\[\];:,.?!@]
  | [^ \t\r\n\f\v]
  | \Z
  )""", re.S | re.X | re.M)
_TOK = _TOKEN.groupindex["tok"]

_KEYWORDS = frozenset("and break do else elseif end false for function goto if in local nil not or repeat "
                      "return then true until while".split())
_OPERATORS = "... .. == ~= <= << // :: -> - + * / % ^ # & ~ | < > = ( ) { } [ ] ; : , . ? ! @".split()
# A token's kind: a keyword or operator is its own kind; otherwise its first character tells.
_KIND = {t: t for t in (*_OPERATORS, *_KEYWORDS)}
_KIND_BY_FIRST = {**dict.fromkeys("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_", "name"),
                  **dict.fromkeys("0123456789.", "number"), **dict.fromkeys("\"'[", "string")}
_EOF = "<eof>"


class _Tokens:
    """The significant tokens of a source: parallel lists of kind and text (offsets are asked
    for the few tokens that need one).  A kind is the keyword or operator itself, or ``name``,
    ``string``, ``number``, ``bad``.  Four <eof> tokens end the lists, so lookahead never
    raises IndexError."""

    __slots__ = ("count", "kinds", "matches", "src", "texts")

    def __init__(self, src: str) -> None:
        self.src = src
        matches = list(_TOKEN.finditer(src))
        while matches and not matches[-1][_TOK]:
            matches.pop()  # the end of the text
        texts = [m[_TOK] for m in matches]
        kind, by_first = _KIND.get, _KIND_BY_FIRST.get
        self.kinds = [kind(t) or by_first(t[0], "bad") for t in texts] + [_EOF] * 4
        self.texts = texts + [""] * 4
        self.matches, self.count = matches, len(matches)

    def start(self, i: int) -> int:
        return self.matches[i].start(_TOK) if i < self.count else len(self.src)

    def end(self, i: int) -> int:
        return self.start(i) + len(self.texts[i])

    def position(self, i: int) -> tuple[int, int]:
        """(line, column) of token `i`, counting newlines as Lua does (\\n, \\r, \\r\\n, \\n\\r)."""
        start = self.start(i)
        before = self.src[:start]
        line = len(_NEWLINE.findall(before)) + 1
        last = max(before.rfind("\n"), before.rfind("\r"))
        return line, start - last


_NEWLINE = re.compile(r"\r\n|\n\r|\r|\n")


# ---------------------------------------------------------------- the eraser

# Tokens after which an expression may just have ended: where `as T`, `:: T` and `!` are casts.
_ENDS_EXPR = frozenset({"name", "string", "number", ")", "]", "}", "nil", "true", "false", "...", "end"})
# Tokens after which an operand must come: there `type`, `export` or `interface` is a variable,
# not the start of a declaration (``local t = type`` then ``Point = {}`` on the next line).
_WANTS_OPERAND = frozenset({"=", ",", "(", "[", "{", "return", "in", "until", "if", "elseif", "while", "and",
                            "or", "not", "+", "-", "*", "/", "//", "%", "^", "#", "&", "~", "|", "<", ">",
                            "<<", "<=", "==", "~=", "..", "local"})
_TYPE_STARTS = frozenset({"name", "string", "number", "nil", "true", "false", "{", "(", "..."})
_FIELD_KINDS = _KEYWORDS | {"name"}
_OPENERS = frozenset("([{")
_CLOSERS = frozenset(")]}")

# Built-in validating casts: the name, and the local helper that replaces it.
_CASTS = {name: f"__cast_{name}" for name in ("string", "number", "integer", "boolean", "int", "bool")}
_CAST_BODIES = {
    "string": 'if type(v) == "string" then return v end',
    "number": 'if type(v) == "number" then return v end',
    "integer": "local i = math.type(v) == 'float' and math.tointeger(v) or v "
               "if math.type(i) == 'integer' then return i end",
    "boolean": 'if type(v) == "boolean" then return v end',
}
_CAST_KIND = {"string": "string", "number": "number", "integer": "integer", "boolean": "boolean",
              "int": "integer", "bool": "boolean"}
# The tokens the main loop visits: where type syntax or a built-in cast may begin.
_TRIGGERS = frozenset({"local", "function", "for", "::", "!", "?", "@", "->", "type", "export", "interface", "as",
                       *_CASTS})


class _Eraser:
    """Statements that may carry types (local, function headers, for, declarations) are parsed
    where they start; between them the code is not looked at, only the few tokens that may begin
    type syntax (`_TRIGGERS`) are visited."""

    def __init__(self, src: str) -> None:
        self.t = _Tokens(src)
        self.kinds = self.t.kinds
        self.texts = self.t.texts
        self.edits: list[tuple[int, int, str | None]] = []  # (start, end, replacement); None: blank
        self.erased: list[tuple[int, int]] = []  # token ranges [first, after) blanked
        self.declared: set[str] = set()  # Lua variables: a cast name declared here is no cast
        self.type_names: set[str] = set()
        self.casts: list[int] = []  # tokens `string` in `string(`...

    # ---- helpers

    def fail(self, i: int, message: str) -> TypedLuaError:
        line, column = self.t.position(i)
        near = (self.texts[i] or _EOF)[:24]
        return TypedLuaError(f"{message} near '{near}'", line, column)

    def expect(self, i: int, kind: str, what: str) -> int:
        if self.kinds[i] != kind:
            raise self.fail(i, f"expected '{kind}' {what}")
        return i + 1

    def blank(self, first: int, after: int, lead: str = "") -> None:
        """Erase tokens first..after-1 (and what lies between them)."""
        if after > first:
            self.edits.append((self.t.start(first), self.t.end(after - 1), lead or None))
            self.erased.append((first, after))

    # ---- the main loop

    def run(self) -> None:
        # A trigger token is its text (a keyword, an operator or a bare name: never a string).
        triggers = [i for i, t in enumerate(self.texts) if t in _TRIGGERS]
        after = 0  # tokens before it were consumed by a statement parsed already
        for i in triggers:
            if i >= after:
                after = self.trigger(i)

    def trigger(self, i: int) -> int:
        k = self.kinds[i]
        if k == "name":
            return self.name(i)
        if k == "local":
            return self.local(i + 1)
        if k == "function":
            return self.function(i + 1)
        if k == "for":
            return self.names(i + 1)
        if k == "::":
            return self.colons(i)
        if k == "!":
            return self.bang(i)
        raise self.fail(i, f"unexpected '{k}' outside a type")

    def prev(self, i: int) -> str:
        return self.kinds[i - 1] if i > 0 else ";"

    def name(self, i: int) -> int:
        kinds, text = self.kinds, self.texts[i]
        prev, nxt = self.prev(i), kinds[i + 1]
        if prev in (".", ":"):
            return i + 1  # a field or method
        if prev not in _WANTS_OPERAND:
            if text == "type" and nxt == "name" and kinds[i + 2] in ("=", "<"):
                return self.type_decl(i, i)
            if text == "export" and nxt == "name" and self.texts[i + 1] == "type" and kinds[i + 2] == "name":
                return self.type_decl(i, i + 1)
            if text == "interface" and nxt == "name":
                return self.interface(i)
            if text == "as" and prev in _ENDS_EXPR and nxt in _TYPE_STARTS and not self.as_call(i):
                after = self.type(i + 1)
                self.blank(i, after)
                return after
        if text in _CASTS:
            if nxt == "(":
                self.casts.append(i)
            elif nxt == "=" and not self.table_field(i):
                self.declared.add(text)  # `integer = ...`: a variable, its calls are no casts
        return i + 1

    def table_field(self, i: int) -> bool:
        """Whether NAME in `NAME =` is a field in a table constructor (``{number = 1}``)."""
        if self.prev(i) not in ("{", ",", ";"):
            return False
        kinds, depth = self.kinds, 0
        for j in range(i - 1, -1, -1):
            k = kinds[j]
            if k in _CLOSERS:
                depth += 1
            elif k in _OPENERS:
                if depth == 0:
                    return k == "{"
                depth -= 1
        return False

    def as_call(self, i: int) -> bool:
        """Whether `as` (after an expression) starts a new statement calling a variable `as`:
        ``as(x)``, ``as "x"``, ``as {x}`` at the start of a line.  A cast written on the next
        line (``get()`` then ``as User``) starts with a type name."""
        if self.kinds[i + 1] not in ("(", "string", "{"):
            return False
        between = self.t.src[self.t.end(i - 1):self.t.start(i)]
        return "\n" in between or "\r" in between

    def colons(self, i: int) -> int:
        kinds = self.kinds
        if kinds[i + 1] == "name" and kinds[i + 2] == "::":
            return i + 3  # a label ::name::
        if self.prev(i) not in _ENDS_EXPR:
            raise self.fail(i, "unexpected '::' (a cast needs an expression before it)")
        after = self.type(i + 1)
        self.blank(i, after)
        return after

    def bang(self, i: int) -> int:
        if self.kinds[i + 1] == "=":
            raise self.fail(i, "'!=' is not Lua: use '~='")
        if self.prev(i) not in _ENDS_EXPR:
            raise self.fail(i, "'!' is not Lua: use 'not'")
        self.blank(i, i + 1)  # the non-nil assertion: checked by Wippy's type checker only
        return i + 1

    # ---- statements that carry types

    def local(self, i: int) -> int:
        kinds = self.kinds
        if kinds[i] == "function":
            return self.function(i + 1)
        while kinds[i] == "name":
            self.declared.add(self.texts[i])
            i = self.attrib(i + 1)
            if kinds[i] == ":":
                after = self.type(i + 1)
                self.blank(i, after)
                i = self.attrib(after)
            if kinds[i] != ",":
                break
            i += 1
        return i

    def attrib(self, i: int) -> int:
        """Skip a Lua 5.4 attribute ``<const>`` / ``<close>``."""
        if self.kinds[i] == "<" and self.kinds[i + 1] == "name" and self.kinds[i + 2] == ">":
            return i + 3
        return i

    def names(self, i: int) -> int:
        """`for` names, optionally typed: ``for k: string, v: number in pairs(t)``."""
        return self.typed_list(i, ("name",))

    def typed_list(self, i: int, starts: tuple[str, ...]) -> int:
        """A comma list of names (or `...`), each optionally `: T`; the types are blanked."""
        kinds = self.kinds
        while kinds[i] in starts:
            if kinds[i] == "name":
                self.declared.add(self.texts[i])
            i += 1
            if kinds[i] == ":":
                after = self.type(i + 1)
                self.blank(i, after)
                i = after
            if kinds[i] != ",":
                break
            i += 1
        return i

    def function(self, i: int) -> int:
        """After `function`: [name] [<generics>] (params) [: return types]."""
        kinds = self.kinds
        if kinds[i] == "name":
            simple = True
            first = i
            i += 1
            while kinds[i] in (".", ":") and kinds[i + 1] == "name":
                i += 2
                simple = False
            if simple:
                self.declared.add(self.texts[first])
        if kinds[i] == "<":
            after = self.generics(i)
            self.blank(i, after)
            i = after
        if kinds[i] != "(":
            return i  # not a function header Lua knows: Lua reports it
        i = self.params(i + 1)
        if kinds[i] == ":":
            after = self.return_types(i + 1)
            self.blank(i, after)
            i = after
        return i

    def params(self, i: int) -> int:
        i = self.typed_list(i, ("name", "..."))
        return i + 1 if self.kinds[i] == ")" else i

    def return_types(self, i: int) -> int:
        i = self.type(i, ret=True)
        while self.kinds[i] == ",":  # `: number, string` (a function body never starts with ',')
            i = self.type(i + 1)
        return i

    def generics(self, i: int) -> int:
        """``<T, U: Constraint>`` after a function or type name."""
        kinds = self.kinds
        i += 1
        while True:
            i = self.expect(i, "name", "(a type parameter)")
            if kinds[i] == "...":
                i += 1
            if kinds[i] == ":":
                i = self.type(i + 1)
            if kinds[i] != ",":
                return self.expect(i, ">", "to close the type parameters")
            i += 1

    def type_decl(self, first: int, i: int) -> int:
        """``[export] type Name[<T>] = type``, at `first`; `i` is the `type` token."""
        self.type_names.add(self.texts[i + 1])
        i += 2
        if self.kinds[i] == "<":
            i = self.generics(i)
        i = self.expect(i, "=", "in a type declaration")
        after = self.type(i)
        self.blank(first, after, lead=";")
        return after

    def interface(self, first: int) -> int:
        """``interface Name [: Base, ...] {function m(params): ret | field: type} end``."""
        kinds = self.kinds
        self.type_names.add(self.texts[first + 1])
        i = first + 2
        if kinds[i] == "<":
            i = self.generics(i)
        if kinds[i] == ":":
            i = self.type(i + 1)
            while kinds[i] == ",":
                i = self.type(i + 1)
        while kinds[i] != "end":
            if kinds[i] == "function":
                i = self.expect(i + 1, "name", "(a method name)")
                if kinds[i] == "<":
                    i = self.generics(i)
                i = self.expect(i, "(", "to open the parameters")
                i = self.type_list(i, ")")
                if kinds[i] == ":":
                    i = self.return_types(i + 1)
            elif kinds[i] in _FIELD_KINDS and kinds[i + 1] in (":", "?"):
                i = self.field(i)
            else:
                raise self.fail(i, "expected a method or a field in the interface")
            if kinds[i] in (",", ";"):
                i += 1
        self.blank(first, i + 1, lead=";")
        return i + 1

    # ---- types (greedy: a type ends where no type syntax can continue it)

    def type(self, i: int, ret: bool = False) -> int:
        kinds = self.kinds
        if kinds[i] in ("|", "&"):
            i += 1  # a union written one member per line: `| A` `| B`
        i = self.simple(i, ret)
        while True:
            k = kinds[i]
            if k in ("|", "&"):
                i = self.simple(i + 1, False)
            elif k == "name" and self.texts[i] == "extends":  # A extends B ? X : Y
                i = self.primary(i + 1, False)
                i = self.expect(i, "?", "in a conditional type")
                i = self.type(i)
                i = self.expect(i, ":", "in a conditional type")
                i = self.type(i)
            else:
                return i

    def simple(self, i: int, ret: bool) -> int:
        kinds = self.kinds
        i = self.primary(i, ret)
        while True:
            k = kinds[i]
            if k == "?":
                i += 1
            elif k == "[":
                i = i + 2 if kinds[i + 1] == "]" else self.expect(self.type(i + 1), "]", "to close the index type")
            elif k == "@":
                i = self.validator(i)
            else:
                return i

    def primary(self, i: int, ret: bool) -> int:
        kinds = self.kinds
        k = kinds[i]
        if k in ("nil", "true", "false", "string", "number"):
            return i + 1
        if k == "-" and kinds[i + 1] == "number":
            return i + 2
        if k == "name":
            return self.named(i)
        if k == "{":
            return self.table(i)
        if k == "(":
            return self.parens(i, ret)
        if k == "...":
            return self.simple(i + 1, False)  # variadic `...T`
        raise self.fail(i, "expected a type")

    def named(self, i: int) -> int:
        kinds, text = self.kinds, self.texts[i]
        nxt = kinds[i + 1]
        if text == "fun" and nxt == "(":
            i = self.type_list(i + 2, ")")
            return self.return_types(i + 1) if kinds[i] == ":" else i
        if text in ("interface", "readonly") and nxt == "{":
            return self.table(i + 1)
        if text in ("typeof", "keyof") and nxt == "(":
            return self.balanced(i + 1)
        if text == "asserts" and nxt == "name":
            i += 2
            return self.type(i + 1) if kinds[i] == "name" and self.texts[i] == "is" else i
        i += 1
        while kinds[i] == "." and kinds[i + 1] == "name":
            i += 2
        if kinds[i] == "<" and not self.is_attrib(i):
            i = self.type_list(i + 1, ">")  # generic arguments
        return i

    def is_attrib(self, i: int) -> bool:
        """``local x: number <const>``: a Lua attribute, not generic arguments."""
        return (self.kinds[i + 1] == "name" and self.texts[i + 1] in ("const", "close")
                and self.kinds[i + 2] == ">")

    def type_list(self, i: int, close: str) -> int:
        """Types (optionally named, `...` variadic) separated by ',' up to `close`; after it."""
        return self.counted_types(i, close)[0]

    def counted_types(self, i: int, close: str) -> tuple[int, int]:
        kinds, count = self.kinds, 0
        while kinds[i] != close:
            count += 1
            if kinds[i] == "...":
                i += 1
                if kinds[i] == ":":
                    i += 1
            elif kinds[i] == "name" and kinds[i + 1] == ":":
                i += 2  # a parameter name
            i = self.type(i)
            if kinds[i] != ",":
                break
            i += 1
        return self.expect(i, close, "to close the type list"), count

    def parens(self, i: int, ret: bool) -> int:
        """``(params) -> ret``, a grouping ``(A | B)``, or in return position a tuple."""
        start = i
        i, items = self.counted_types(i + 1, ")")
        if self.kinds[i] == "->":
            return self.type(i + 1, ret=True)
        if ret or items == 1:
            return i
        raise self.fail(start, "a parenthesised type list needs '->' (a function type)")

    def table(self, i: int) -> int:
        """``{}``, ``{T}``, ``{[K]: V}``, ``{name: T, opt?: U}`` (mixable, Luau-style)."""
        kinds = self.kinds
        i += 1
        while kinds[i] != "}":
            if kinds[i] == "[":
                i = self.expect(self.type(i + 1), "]", "to close the key type")
                i = self.type(self.expect(i, ":", "after the key type"))
            elif kinds[i] in _FIELD_KINDS and (kinds[i + 1] == ":" or (kinds[i + 1] == "?" and kinds[i + 2] == ":")):
                i = self.field(i)
            else:
                i = self.type(i)
            if kinds[i] not in (",", ";"):
                break
            i += 1
        return self.expect(i, "}", "to close the table type")

    def field(self, i: int) -> int:
        i += 1
        if self.kinds[i] == "?":
            i += 1
        return self.type(self.expect(i, ":", "after the field name"))

    def validator(self, i: int) -> int:
        """``@min(0)``, ``@pattern("^.+$")``: erased, not enforced."""
        i = self.expect(i + 1, "name", "(a validator name)")
        return self.balanced(i) if self.kinds[i] == "(" else i

    def balanced(self, i: int) -> int:
        """From an opening '(' to after its matching ')'."""
        kinds, depth = self.kinds, 0
        while True:
            k = kinds[i]
            if k == "(":
                depth += 1
            elif k == ")":
                depth -= 1
                if depth == 0:
                    return i + 1
            elif k == _EOF:
                raise self.fail(i, "unclosed '(' in a type")
            i += 1

    # ---- the result

    def check_type_values(self) -> None:
        """Refuse a declared type used as a value in the code (not in an annotation)."""
        if not self.type_names:
            return
        kinds, texts = self.kinds, self.texts
        uses = [i for i, t in enumerate(texts) if t in self.type_names]  # names: strings are quoted
        erased = sorted(self.erased)
        starts = [first for first, _ in erased]
        in_code = []
        for i in uses:
            if self.prev(i) in (".", ":") or kinds[i + 1] not in ("(", ":", ".", "string", "{", "="):
                continue
            k = bisect.bisect_right(starts, i) - 1
            if k >= 0 and i < erased[k][1]:
                continue  # inside an annotation
            if kinds[i + 1] == "=":
                self.declared.add(texts[i])  # a Lua variable of that name
            else:
                in_code.append(i)
        for i in in_code:
            name = texts[i]
            if name not in self.declared:
                raise self.fail(i, f"type '{name}' used as a value ({name}(x), {name}:is(x), {name}.field): "
                                   "Legato erases types, it has no runtime type values")

    def rewrite_casts(self) -> dict[str, str]:
        """``string(x)`` → ``(__cast_string(x))``: the parentheses keep ``return string(x)`` from
        being a tail call, which would lose the caller's line in the helper's error."""
        used: dict[str, str] = {}
        for i in self.casts:
            name = self.texts[i]
            close = self.matching_paren(i + 1)
            if name in self.declared or close is None:
                continue
            used[name] = _CASTS[name]
            self.edits.append((self.t.start(i), self.t.end(i), "(" + _CASTS[name]))
            self.edits.append((self.t.end(close), self.t.end(close), ")"))
        return used

    def matching_paren(self, i: int) -> int | None:
        kinds, depth = self.kinds, 0
        for j in range(i, len(kinds)):
            if kinds[j] == "(":
                depth += 1
            elif kinds[j] == ")":
                depth -= 1
                if depth == 0:
                    return j
        return None

    def output(self) -> str:
        src = self.t.src
        used = self.rewrite_casts()
        if not self.edits:
            return src
        self.edits.sort(key=lambda edit: (edit[0], edit[1]))
        out, pos = [_prelude(used)], 0
        for start, end, replacement in self.edits:
            out.append(src[pos:start])
            if replacement is None or replacement == ";":  # blanked, or blanked after a ';'
                blanked = _blanked(src[start:end])
                out.append(blanked if replacement is None else ";" + blanked[1:])
            else:
                out.append(replacement)
            pos = end
        out.append(src[pos:])
        return "".join(out)


_BLANK = re.compile(r"[^\r\n]")


def _blanked(text: str) -> str:
    """Spaces in place of `text`, its line breaks kept."""
    if "\n" in text or "\r" in text:
        return _BLANK.sub(" ", text)
    return " " * len(text)


def _prelude(used: dict[str, str]) -> str:
    """The cast helpers, one line (prepended to line 1, so no line moves)."""
    if not used:
        return ""
    parts = [f"local {', '.join(used.values())} do local type, error, math = type, error, math "
             "local function bad(k, v) "
             "error('cannot cast ' .. (math.type(v) or type(v)) .. ' to ' .. k, 3) end"]
    for name, helper in used.items():
        kind = _CAST_KIND[name]
        parts.append(f"{helper} = function(v) {_CAST_BODIES[kind]} bad('{kind}', v) end")
    return " ".join(parts) + " end "


# ---------------------------------------------------------------- API

def erase(src: str) -> str:
    """Plain Lua 5.4 for a typed-Lua source (the same string when it has no type syntax).
    Raises `TypedLuaError` for type syntax it cannot parse."""
    eraser = _Eraser(src)
    eraser.run()
    eraser.check_type_values()
    return eraser.output()


Compiled = tuple[bytes | None, str | None]  # (bytecode, None) or (None, "chunk:LINE: message")


def _may_cast(text: str) -> bool:
    """Whether `text` may call a built-in cast: ``string(`` not preceded by a name character,
    '.' or ':' (so not ``tostring(``, ``s.number(``).  str.find: a regex is 5x slower here."""
    for name in _CASTS:
        i = text.find(name)
        while i >= 0:
            j = i + len(name)
            if (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_.:")) \
                    and text[j:j + 8].lstrip(" \t").startswith("("):
                return True
            i = text.find(name, j)
    return False


def compile_source(text: str, chunk_name: str, compile_lua: Callable[[str, str], Compiled]) -> Compiled:
    """Compile an entry's source with `compile_lua`, erasing its types first if it has any.
    Returns (bytecode, None) or (None, "chunk:LINE: message").

    Fast path: what Lua compiles as it is has no type syntax (every form but the built-in casts
    is a Lua syntax error), so the eraser runs only on what Lua refuses or on a possible cast."""
    bytecode, err = compile_lua(text, chunk_name)
    if bytecode is not None and not _may_cast(text):
        return bytecode, None
    try:
        plain = erase(text)
    except TypedLuaError as e:
        if bytecode is not None:
            return bytecode, None  # Lua took it as it is: there was no cast after all
        return None, f"{chunk_name}:{e.line}: {e.message}"
    if plain is text:
        return bytecode, err  # plain Lua: Lua's own verdict
    return compile_lua(plain, chunk_name)
