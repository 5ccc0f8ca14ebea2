"""Source text -> Circuit, through Python's `ast` under a whitelist. Nothing is ever evaluated.

Accepted: numbers, names, `+ - * / **` (constant exponent), unary minus, calls of
exp log sigmoid tanh relu inv max min, and programs of assignments (`q = x + y; f = q * z`,
`f += w`), one per line or separated by `;`. Names that are never assigned are the inputs.
A name read several times is one wire that fans out. The last assigned name is the output,
or a final bare expression, or whatever `output=` names.

The AST is walked with an explicit stack, so depth is bounded by the parser, not by Python's
recursion limit; the parser's own limit becomes a CompileError like any other.
"""

from __future__ import annotations

import ast
import math
import re
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count

from gates.ops import OPS, Op
from gates.protocol import NAME_PATTERN, NAME_RULE
from orchestrator.circuit import RESERVED_IDS, Circuit, GateDef
from orchestrator.errors import CircuitError, CompileError

MAX_SOURCE_CHARS = 1_000_000
PARSER_RECURSION_LIMIT = 100_000
COMPILER_STACK_BYTES = 256 * 1024 * 1024
INFIX: dict[str, Op] = {op.symbol: op for op in OPS.values() if op.infix}
"""'+' -> add, '*' -> mul, ...: the operators that make a gate of their two operands."""
FUNCTIONS: dict[str, Op] = {op.call: op for op in OPS.values() if op.call is not None}
"""exp(x), max(a, b, ...): the functions a program may call."""
SYNTAX: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
    ast.Mod: "%",
    ast.FloorDiv: "//",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
}
"""How Python writes each binary operator; INFIX says which of them make gates."""

Emit = Callable[[list[str]], str]


@dataclass(frozen=True)
class Compiled:
    """A circuit, and what in its source it leaves out: `r = w * 2` that the output never reads
    compiles (its gates dropped, w an input with gradient 0), but a user should hear of it."""

    circuit: Circuit
    warnings: tuple[str, ...] = ()


def compile_source(source: str, *, output: str | None = None, name: str = "circuit") -> Circuit:
    """Compile an expression or a small program into a validated Circuit."""
    return compile_program(source, output=output, name=name).circuit


def compile_program(source: str, *, output: str | None = None, name: str = "circuit") -> Compiled:
    """compile_source, with a warning for every assignment the output never reads."""
    if re.fullmatch(NAME_PATTERN, name) is None:
        raise CircuitError(f"circuit name {name!r}: a name is {NAME_RULE}")
    return _on_deep_stack(lambda: _compile(source, output, name))


_ONE_AT_A_TIME = threading.Lock()
"""Compiles on two threads at once (the web page compiles off its event loop) would set and
restore the process's recursion limit across each other: left raised, or lowered under a parse."""


def _on_deep_stack(work: Callable[[], Compiled]) -> Compiled:
    """Run `work` in a thread with a large stack and a high recursion limit.

    CPython builds and frees an AST recursively in C; an expression of 100,000 terms
    overflows the default 8 MB stack and kills the process. With 256 MB (virtual; only the
    pages used are committed) the parser reaches its recursion limit and fails cleanly first.
    """
    outcome: list[Compiled | BaseException] = []

    def target() -> None:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, PARSER_RECURSION_LIMIT))
        try:
            outcome.append(work())
        except BaseException as exc:  # handed to the calling thread below
            outcome.append(exc)
        finally:
            sys.setrecursionlimit(limit)

    with _ONE_AT_A_TIME:  # the recursion limit and the stack size are the process's, not the thread's
        previous = threading.stack_size(COMPILER_STACK_BYTES)
        try:
            worker = threading.Thread(target=target, name="gatemesh-compiler")
            worker.start()
        finally:
            threading.stack_size(previous)
        worker.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _compile(source: str, output: str | None, name: str) -> Compiled:
    if len(source) > MAX_SOURCE_CHARS:
        raise CompileError(f"source is {len(source)} characters; the limit is {MAX_SOURCE_CHARS}")
    stripped = source.strip()
    blank = source[: len(source) - len(source.lstrip())].count("\n")  # lines before the first: kept
    text = "\n" * blank + stripped
    tree = _parse(text)
    if not tree.body:
        raise CompileError("nothing to compile: the source has no expression")
    return _Builder(tree, name, text.split("\n")).build(output)  # the parser's lines: not str.splitlines()'s


def _parse(text: str) -> ast.Module:
    try:
        with warnings.catch_warnings():  # e.g. "invalid decimal literal" for 1x: the error below says it better
            warnings.simplefilter("ignore", SyntaxWarning)
            return ast.parse(text, mode="exec")
    except SyntaxError as exc:
        raise _syntax_error(exc, text.split("\n")) from exc
    except (RecursionError, MemoryError) as exc:
        raise CompileError(
            "expression is nested too deeply for the parser; split it into assignments (q = ...; f = q * z)"
        ) from exc
    except ValueError as exc:  # e.g. an integer literal with too many digits
        raise CompileError(f"cannot parse: {exc}") from exc


UNSUPPORTED = {
    "Attribute": "an attribute (a.b)",
    "Compare": "a comparison (<, ==, ...)",
    "IfExp": "a conditional (a if c else b)",
    "BoolOp": "and / or",
    "Subscript": "indexing (a[i])",
    "Lambda": "a lambda",
    "Tuple": "a tuple",
    "List": "a list",
    "Dict": "a dict",
    "Set": "a set",
    "Starred": "*a",
    "NamedExpr": ":=",
    "JoinedStr": "an f-string",
    "Await": "await",
    "UnaryOp": "~ or not",
    "Yield": "yield",
    "ListComp": "a comprehension",
    "GeneratorExp": "a comprehension",
    "SetComp": "a comprehension",
    "DictComp": "a comprehension",
}
"""Python syntax a circuit has no gate for, in words (else the parser's own name for it)."""


def _targets(stmt: ast.stmt) -> list[ast.expr]:
    """What a statement assigns to: `q = ...` and `f += ...` one name, an expression none."""
    if isinstance(stmt, ast.Assign):
        return stmt.targets
    return [stmt.target] if isinstance(stmt, ast.AugAssign) else []


def _where(node: ast.AST) -> tuple[int, int]:
    return getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1


def _fail(node: ast.AST, reason: str) -> CompileError:
    return CompileError(reason, *_where(node))


def _number(node: ast.expr, known: dict[ast.expr, float | None] | None = None) -> float | None:
    """The value of a numeric literal (with any leading signs), else None.

    `known`: what was found so far, by node (AST nodes hash by identity), added to: the compiler asks at every sign of a
    chain, and a chain of 5,000 signs over a name is then walked once, not 5,000 times (14 s)."""
    chain: list[ast.UnaryOp] = []
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        if known is not None and node in known:
            break
        chain.append(node)
        node = node.operand
    if known is not None and node in known:
        value = known[node]
    else:
        value = _literal(node)
        if known is not None:
            known[node] = value
    for sign in reversed(chain):
        if value is not None and isinstance(sign.op, ast.USub):
            value = -value
        if known is not None:
            known[sign] = value
    return value


def _literal(node: ast.expr) -> float | None:
    """The value of a numeric constant, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        try:
            value = float(node.value)
        except OverflowError:
            raise _fail(node, "number is too large for a float") from None
        if not math.isfinite(value):
            raise _fail(node, "number is too large for a float")
        return value
    return None


_PYTHON_ADVICE = re.compile(r"\. (Maybe|Perhaps|Did) you .*$")
"""CPython's suggestions ("Maybe you meant '==' or ':='"): Python's syntax, which gatemesh does not take."""
_NUMBER_THEN_NAME = re.compile(r"(?<![\w.])((?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([A-Za-z_]\w*)")
"""A Python number written against a name: `2x`, `.5x`, `2e-3x`."""
_ENDS_A_VALUE = re.compile(r"[\w)]$")


def _syntax_error(exc: SyntaxError, lines: list[str]) -> CompileError:
    """CPython's syntax error without its advice for Python, with gatemesh's where the slip is a
    common one: `2x`, `(x+y)z`, assignments separated by commas, a function defined."""
    line, column = exc.lineno or 1, exc.offset or 1
    reason = _PYTHON_ADVICE.sub("", exc.msg)
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    hint = _syntax_hint(reason, text, column)
    return CompileError(f"syntax error: {reason}" + (f"; {hint}" if hint else ""), line, column)


def _outside_brackets(text: str) -> str:
    """`text` without what its brackets hold: `q = max(x, y)` has no comma of its own."""
    kept, depth = [], 0
    for char in text:
        depth += (char in "([{") - (char in ")]}")
        if depth == 0 and char not in ")]}":
            kept.append(char)
    return "".join(kept)


def _syntax_hint(reason: str, text: str, column: int) -> str:
    if reason == "invalid decimal literal":
        for found in _NUMBER_THEN_NAME.finditer(text):
            if found.end() >= column:  # CPython points into the literal, not always at its start
                return f"write {found[1]}*{found[2]} to multiply"
    if reason.startswith("cannot assign to function call"):
        return "a function cannot be defined: assign a name, like f = x * x"
    if reason.startswith("cannot assign to"):
        return "only a name can be assigned: name = expression"
    if reason == "invalid syntax":
        if ";" not in text and text.count("=") > 1 and "," in _outside_brackets(text):
            return "separate assignments with ';' or a new line"
        before, after = text[: column - 1].rstrip(), text[column - 1 : column]
        if _ENDS_A_VALUE.search(before) and after and (after.isalnum() or after in "_("):
            return "two values side by side: write * between them to multiply, or name(...) to call a function"
    return ""


class _Builder:
    """Turns one parsed module into gates, one statement at a time."""

    def __init__(self, tree: ast.Module, name: str, lines: list[str]) -> None:
        self.tree = tree
        self.name = name
        self.lines = lines
        """The text parsed, by line: where an operator stands (the tree gives only its operands' places)."""
        self.gates: list[GateDef] = []
        self.ids: set[str] = set()
        self.bound: dict[str, str] = {}  # program name -> id of the gate that holds its value
        self.bindings: list[tuple[ast.stmt, str, str]] = []  # every assignment: (statement, name, gate id)
        self.consts: dict[float, str] = {}
        self.numbers: dict[ast.expr, float | None] = {}
        """Each node's numeric value, or None, once asked (`_number`)."""
        self.assigned = self._assigned_names()
        names = [n for n in ast.walk(tree) if isinstance(n, ast.Name)]
        for node in names:
            if not re.match(NAME_PATTERN, node.id):
                raise _fail(node, f"name {node.id!r} cannot be a gate id: use ASCII letters, digits and '_'")
            if node.id in RESERVED_IDS:
                raise _fail(node, f"name {node.id!r} is taken: it names the {node.id} in messages and traces")
        self.taken = {n.id for n in names}
        self.counter = count(1)
        self.last: str | None = None

    def _assigned_names(self) -> dict[str, ast.stmt]:
        first: dict[str, ast.stmt] = {}
        for stmt in self.tree.body:
            for target in _targets(stmt):
                if isinstance(target, ast.Name):
                    first.setdefault(target.id, stmt)
        return first

    # -- statements -----------------------------------------------------------------------

    def _operator_at(self, node: ast.BinOp) -> tuple[int, int]:
        """The 1-based line and column of a binary operator: the first character after its left
        operand (and any spaces, closing parentheses or line continuations) that is not a comment."""
        line, column = node.left.end_lineno or node.lineno, node.left.end_col_offset or 0
        while line <= len(self.lines):
            text = self.lines[line - 1].encode()  # the tree's columns count UTF-8 bytes
            rest = text[column:]
            skipped = len(rest) - len(rest.lstrip(b" \t\f\r)\\"))
            if rest[skipped:] and not rest[skipped:].startswith(b"#"):
                return line, len(text[: column + skipped].decode(errors="replace")) + 1
            line, column = line + 1, 0
        return _where(node)

    def build(self, output: str | None) -> Compiled:
        body = self.tree.body
        for index, stmt in enumerate(body):
            self._statement(stmt, is_last=index == len(body) - 1)
        out = self._output(output)
        gates = _reachable(self.gates, out)
        try:
            circuit = Circuit(name=self.name, gates=tuple(gates), output=out)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise CircuitError(f"compiled circuit is invalid: {exc}") from exc
        return Compiled(circuit, self._unused(circuit, out, output))

    def _unused(self, circuit: Circuit, out: str, output: str | None) -> tuple[str, ...]:
        """One sentence per assignment the output never reads (its gates are left out) or that
        nothing reads at all: `a = x` with a never used leaves no gate out, but its name is idle.
        Then one for the inputs only such assignments read."""
        used = {source for gate in circuit.gates for source in gate.inputs} | {out}
        read = self._read_later(output, out)
        sentences = []
        shown = output or next((name for _, name, gate_id in reversed(self.bindings) if gate_id == out), None)
        named = f"the output ({shown})" if shown else "the output"
        for stmt, name, gate_id in self.bindings:
            left_out = gate_id not in used and gate_id not in circuit.inputs
            if id(stmt) in read and not left_out:
                continue
            where = f"line {stmt.lineno}, column {stmt.col_offset + 1}: the value given to {name} here is never read"
            sentences.append(f"{where} by {named}; its gates are left out" if left_out else where)
        final = self.tree.body[-1]
        if isinstance(final, ast.Expr) and self.last != out:  # `output=` names another value
            left_out = self.last not in used and self.last not in circuit.inputs
            where = f"line {final.lineno}, column {final.col_offset + 1}: the final expression is never read"
            sentences.append(f"{where}: the output is {output}" + ("; its gates are left out" if left_out else ""))
        idle = [name for name in circuit.inputs if name not in used]
        if sentences and idle:
            stays = f"{idle[0]} stays an input" if len(idle) == 1 else f"{', '.join(idle)} stay inputs"
            sentences.append(f"{stays}, with gradient 0")
        return tuple(sentences)

    def _read_later(self, output: str | None, out: str) -> frozenset[int]:
        """The assignments (by id of their statement) whose value is read: by a later statement
        before the name is assigned again, or as the output (gate `out`). One walk backwards over
        the program."""
        body = self.tree.body
        live = {output} if output is not None else set()
        read: set[int] = set()
        for index in reversed(range(len(body))):
            stmt = body[index]
            targets = _targets(stmt)
            for target in targets:
                if isinstance(target, ast.Name):
                    if target.id in live or (output is None and index == len(body) - 1):
                        read.add(id(stmt))
                    live.discard(target.id)
            nodes = list(ast.walk(stmt))
            called = {id(node.func) for node in nodes if isinstance(node, ast.Call)}  # exp(y) reads no exp
            loads = {
                node.id
                for node in nodes
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and id(node) not in called
            }
            if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
                loads.add(stmt.target.id)  # `f += z` reads f
            live |= loads
        if output is not None and output not in self.bound:  # `output="f.2"`: a gate id, not a name
            read |= {id(stmt) for stmt, _, gate_id in self.bindings if gate_id == out}
        return frozenset(read)

    def _statement(self, stmt: ast.stmt, *, is_last: bool) -> None:
        if isinstance(stmt, ast.Assign):
            if len(stmt.targets) != 1 or not isinstance(stmt.targets[0], ast.Name):
                raise _fail(stmt, "assign to exactly one plain name, like `q = x + y`")
            target = stmt.targets[0].id
            self._bind(stmt, target, self._expr(stmt.value, target))
        elif isinstance(stmt, ast.AugAssign):
            if not isinstance(stmt.target, ast.Name):
                raise _fail(stmt, "update a plain name, like `f += x`")
            target = stmt.target.id
            if target not in self.bound:
                raise _fail(stmt, f"name {target!r} is updated before it is assigned")
            update = ast.BinOp(left=ast.Name(id=target, ctx=ast.Load()), op=stmt.op, right=stmt.value)
            self._bind(stmt, target, self._expr(ast.copy_location(update, stmt), target))
        elif isinstance(stmt, ast.Expr):
            if not is_last:
                raise _fail(stmt, "a bare expression may only be the last statement (it is the output)")
            self.last = self._expr(stmt.value, "f" if "f" not in self.taken else None)
        else:
            raise _fail(stmt, f"unsupported statement: {type(stmt).__name__}; only assignments and expressions")

    def _bind(self, stmt: ast.stmt, name: str, gate_id: str) -> None:
        self.bound[name] = gate_id
        self.bindings.append((stmt, name, gate_id))
        self.last = gate_id

    def _output(self, output: str | None) -> str:
        if output is None:
            assert self.last is not None
            return self.last
        if output in self.bound:
            return self.bound[output]
        if output in self.ids and output not in self.assigned:
            return output
        names = ", ".join(self.bound) or "none"
        raise CompileError(f"--output {output!r} is not a name of this program (its names: {names})", None, None)

    # -- expressions ----------------------------------------------------------------------

    def _expr(self, root: ast.expr, hint: str | None) -> str:
        """Emit gates for an expression tree in post-order, without recursion."""
        done: dict[int, str] = {}
        stack: list[tuple[ast.expr, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            children, emit = self._plan(node, hint if node is root else None)
            if expanded or not children:
                done[id(node)] = emit([done[id(c)] for c in children])
                continue
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(children))
        return done[id(root)]

    def _plan(self, node: ast.expr, hint: str | None) -> tuple[list[ast.expr], Emit]:
        """What a node reads, and how to make its gate once those have gate ids."""
        value = _number(node, self.numbers)
        if value is not None:
            return [], lambda _: self._const(value)
        match node:
            case ast.Name(id=name):
                return [], lambda _: self._read(node, name)
            case ast.UnaryOp(op=ast.UAdd(), operand=operand):
                return [operand], lambda ids: ids[0]
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return [operand], lambda ids: self._gate("neg", ids, hint)
            case ast.BinOp(op=ast.Pow(), left=base, right=exponent):
                power = _number(exponent)
                if power is None:
                    raise _fail(exponent, "the exponent of ** must be a constant number")
                return [base], lambda ids: self._gate("pow", ids, hint, param=power)
            case ast.BinOp(op=ast.Div(), left=left, right=right) if _number(left) == 1.0:
                return [right], lambda ids: self._gate("inv", ids, hint)  # the notes' 1/x gate
            case ast.BinOp(op=op, left=left, right=right) if SYNTAX.get(type(op)) in INFIX:
                infix = INFIX[SYNTAX[type(op)]]
                return [left, right], lambda ids: self._gate(infix.name, ids, hint)
            case ast.BinOp(op=op):
                symbol = SYNTAX.get(type(op), type(op).__name__)  # every other operator
                reason = f"unsupported operator {symbol!r}; use {' '.join(INFIX)} or ** with a constant"
                raise CompileError(reason, *self._operator_at(node))
            case ast.Call():
                return self._plan_call(node, hint)
            case ast.Constant(value=constant):
                raise _fail(node, f"unsupported constant {constant!r}; only numbers")
        kind = type(node).__name__
        usable = f"numbers, names, {' '.join(INFIX)} **, and the functions {', '.join(FUNCTIONS)}"
        raise _fail(node, f"unsupported syntax: {UNSUPPORTED.get(kind, kind)}; use {usable}")

    def _plan_call(self, node: ast.Call, hint: str | None) -> tuple[list[ast.expr], Emit]:
        if not isinstance(node.func, ast.Name):
            raise _fail(node, "only plain function calls like exp(x) are allowed")
        function = node.func.id
        op = FUNCTIONS.get(function)
        if op is None:
            raise _fail(node, f"unknown function {function!r}; known: {', '.join(FUNCTIONS)}")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise _fail(node, f"{function}() takes plain positional arguments")
        given = len(node.args)
        if op.variadic:
            if given < op.arity:
                raise _fail(node, f"{function}() takes at least {op.arity} arguments, got {given}")
        elif given != op.arity:
            raise _fail(node, f"{function}() takes {op.arity} argument(s), got {given}")
        return list(node.args), lambda ids: self._fold(op.name, ids, hint)

    def _fold(self, op: str, ids: list[str], hint: str | None) -> str:
        """max(a, b, c) is max(max(a, b), c): every gate keeps its fixed arity."""
        result = ids[0] if len(ids) > 1 else self._gate(op, ids, hint)
        for index in range(1, len(ids)):
            result = self._gate(op, [result, ids[index]], hint if index == len(ids) - 1 else None)
        return result

    # -- gates ----------------------------------------------------------------------------

    def _read(self, node: ast.Name, name: str) -> str:
        if name in self.bound:
            return self.bound[name]
        if name in self.assigned:
            line = self.assigned[name].lineno
            raise _fail(node, f"name {name!r} is read before it is assigned (on line {line})")
        if name in FUNCTIONS:
            raise _fail(node, f"{name!r} is a function; call it like {name}(x)")
        if name not in self.ids:
            self._add(GateDef(id=name, op="input"))
        return name

    def _const(self, value: float) -> str:
        if value not in self.consts:
            self.consts[value] = self._gate("const", [], None, param=value)
        return self.consts[value]

    def _gate(self, op: str, inputs: list[str], hint: str | None, *, param: float | None = None) -> str:
        gate_id = self._fresh_id(hint, op)
        self._add(GateDef(id=gate_id, op=op, inputs=tuple(inputs), param=param))
        return gate_id

    def _add(self, gate: GateDef) -> None:
        self.gates.append(gate)
        self.ids.add(gate.id)

    def _fresh_id(self, hint: str | None, op: str) -> str:
        if hint is not None:
            candidate, version = hint, 1
            while candidate in self.ids:
                version += 1
                candidate = f"{hint}.{version}"
            return candidate
        while True:
            candidate = f"{op}_{next(self.counter)}"
            if candidate not in self.ids and candidate not in self.taken:
                return candidate


def _reachable(gates: list[GateDef], output: str) -> list[GateDef]:
    """The gates the output depends on, plus every input (an unused input's gradient is 0)."""
    by_id = {g.id: g for g in gates}
    keep = {output}
    stack = [output]
    while stack:
        for source in by_id[stack.pop()].inputs:
            if source not in keep:
                keep.add(source)
                stack.append(source)
    return [g for g in gates if g.id in keep or OPS[g.op].fed]
