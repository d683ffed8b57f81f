"""The event types the platform publishes, read from its Rust source.

Every published event is built from `EventType::new(domain, aggregate, event)`
in `crates/*/src` (`crates/platform/src/events/mod.rs`). Where the three are
literals the answer is immediate; where one is a parameter of the enclosing
function (`emit(conn, "clock", "started", ...)`, `self.step(.., "approved", ..)`),
the literals passed at every call site of that function in the same crate are
followed, through as many helper functions as it takes. An argument that is
neither a literal nor such a parameter is an error that names the place, so a
new way of naming events cannot be missed silently.

`crates/bench` is left out: it forges events to load the platform, it does not
define them. Test modules (`#[cfg(test)] mod ... { }`) are left out too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXCLUDED_CRATES = {"bench"}
CALL = re.compile(r"\bEventType::new\s*\(")
FN = re.compile(r"\bfn\s+(\w+)\s*(?:<[^(]*?>)?\s*\(")
LITERAL = re.compile(r'^"((?:[^"\\]|\\.)*)"$')
WATERMARK = re.compile(r'watermark:\s*Some\("baladiya\.(\w+)\.watermark"\)')
CHAR = re.compile(r"'(?:\\.|\\u\{[0-9a-fA-F]+\}|[^\\'])'")


class SourceError(Exception):
    """The source names an event in a way this reader cannot follow."""


RAW = re.compile(r'b?r(#*)"')


def mask(text: str) -> str:
    """The text with comments blanked and every string or char literal's
    contents replaced by `_` (quotes, offsets and line breaks kept), so brackets
    and commas can be counted without reading literals; their values are read
    from the original text at the same offsets."""
    out = list(text)
    i, n = 0, len(text)

    def blank(a: int, b: int, keep_quotes: bool) -> None:
        for k in range(a, b):
            if text[k] != "\n":
                out[k] = "_"
        if keep_quotes:
            out[a] = out[b - 1] = '"'

    while i < n:
        c = text[i]
        raw = RAW.match(text, i) if c in "br" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")) else None
        if raw:
            close = '"' + raw.group(1)
            j = text.find(close, raw.end())
            j = n if j < 0 else j + len(close)
            blank(i, j, True)
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(i + 1, j, False)
            i = j + 1
        elif c == "'":
            m = CHAR.match(text, i)
            if m:
                blank(i + 1, m.end() - 1, False)
                i = m.end()
            else:
                i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out[i:j] = " " * (j - i)
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out[i:j] = [ch if ch == "\n" else " " for ch in text[i:j]]
            i = j
        else:
            i += 1
    return "".join(out)


def matching(text: str, open_at: int) -> int:
    """Index of the bracket closing the one at `open_at` in masked text."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = [pairs[text[open_at]]]
    for i in range(open_at + 1, len(text)):
        c = text[i]
        if c in pairs:
            stack.append(pairs[c])
        elif c in ")]}":
            if c != stack.pop():
                raise SourceError(f"unbalanced {c!r} at offset {i}")
            if not stack:
                return i
    raise SourceError(f"no match for {text[open_at]!r} at offset {open_at}")


def split_top(text: str, offset: int, angle: bool = False) -> list[tuple[int, int]]:
    """Spans (start, end) of the comma-separated parts of masked `text`
    outside brackets (and `<...>` when `angle`), as offsets + `offset`."""
    if angle:
        text = text.replace("->", "=>")
    parts, depth, start = [], 0, 0
    opening, closing = "([{" + ("<" if angle else ""), ")]}" + (">" if angle else "")
    for i, c in enumerate(text):
        if c in opening:
            depth += 1
        elif c in closing:
            depth -= 1
        elif c == "," and depth == 0:
            parts.append((start, i))
            start = i + 1
    parts.append((start, len(text)))
    spans = []
    for a, b in parts:
        chunk = text[a:b]
        if chunk.strip():
            lead = len(chunk) - len(chunk.lstrip())
            spans.append((offset + a + lead, offset + a + len(chunk.rstrip())))
    return spans


def without_test_modules(masked: str) -> str:
    """Blanks `#[cfg(test)] mod name { ... }` blocks of masked text."""
    for m in reversed(list(re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", masked))):
        end = matching(masked, m.end() - 1) + 1
        masked = masked[: m.start()] + "".join(ch if ch == "\n" else " " for ch in masked[m.start() : end]) + masked[end:]
    return masked


@dataclass
class Source:
    text: str  # as written
    masked: str  # comments, literals' contents and test modules blanked

    def line(self, offset: int) -> int:
        return self.text.count("\n", 0, offset) + 1


@dataclass
class Function:
    path: Path
    name: str
    params: list[str]  # names, `self` first for methods
    body: tuple[int, int]


@dataclass
class Crate:
    name: str
    files: dict[Path, Source]
    root: Path  # the repository, for messages

    def where(self, path: Path, offset: int) -> str:
        return f"{path.relative_to(self.root)}:{self.files[path].line(offset)}"

    @cached_property
    def functions(self) -> list[Function]:
        found = []
        for path, src in self.files.items():
            masked = src.masked
            for m in FN.finditer(masked):
                close = matching(masked, m.end() - 1)
                names = []
                for a, b in split_top(masked[m.end() : close], m.end(), angle=True):
                    head = masked[a:b].split(":", 1)[0].strip()
                    names.append(re.sub(r"^(&\s*('\w+\s+)?)?(mut\s+)?", "", head))
                brace = masked.find("{", close)
                semi = masked.find(";", close)
                if brace < 0 or 0 <= semi < brace:
                    continue  # a declaration without a body
                found.append(Function(path, m.group(1), names, (brace, matching(masked, brace))))
        return found

    def enclosing(self, path: Path, offset: int) -> Function | None:
        inside = [f for f in self.functions if f.path == path and f.body[0] < offset < f.body[1]]
        return min(inside, key=lambda f: f.body[1] - f.body[0]) if inside else None

    def calls(self, fn: Function) -> list[tuple[Path, int, list[tuple[int, int]]]]:
        """Every call of `fn` in the crate: (file, offset, argument spans)."""
        method = bool(fn.params) and fn.params[0] == "self"
        pattern = re.compile(rf"(?<![\w]){fn.name}\s*\(")
        out = []
        for path, src in self.files.items():
            masked = src.masked
            for m in pattern.finditer(masked):
                before = masked[: m.start()].rstrip()
                if re.search(r"\bfn$", before) or method != before.endswith("."):
                    continue
                close = matching(masked, m.end() - 1)
                out.append((path, m.start(), split_top(masked[m.end() : close], m.end())))
        return out


def load(crate_dir: Path, root: Path = ROOT) -> Crate:
    files = {}
    for path in sorted((crate_dir / "src").rglob("*.rs")):
        text = path.read_text()
        files[path] = Source(text, without_test_modules(mask(text)))
    return Crate(crate_dir.name, files, root)


def resolve(crate: Crate, path: Path, offset: int, args: list[str], depth: int = 0) -> set[tuple[str, ...]]:
    """The values a call at `offset` in `path` with argument texts `args` can
    take: literals as they are; parameters of the enclosing function followed,
    together, to every call of that function."""
    values = [LITERAL.match(a) for a in args]
    if all(values):
        return {tuple(v.group(1) for v in values)}
    where = crate.where(path, offset)
    fn = crate.enclosing(path, offset)
    for a, v in zip(args, values):
        if not v and (depth > 8 or fn is None or not re.fullmatch(r"\w+", a) or a not in fn.params):
            raise SourceError(f"{where}: cannot tell which event `{a}` names (neither a literal nor a parameter)")
    assert fn is not None
    shift = 1 if fn.params[0] == "self" else 0
    calls = crate.calls(fn)
    if not calls:
        raise SourceError(f"{where}: `{fn.name}` names events through a parameter but is never called")
    found: set[tuple[str, ...]] = set()
    for call_path, call_offset, spans in calls:
        text = crate.files[call_path].text
        outer = []
        for a, v in zip(args, values):
            if v:
                outer.append(a)
                continue
            position = fn.params.index(a) - shift
            if position >= len(spans):
                raise SourceError(f"{crate.where(call_path, call_offset)}: a call of `{fn.name}` has too few arguments")
            outer.append(argument(text, spans[position]))
        found |= resolve(crate, call_path, call_offset, outer, depth + 1)
    return found


def argument(text: str, span: tuple[int, int]) -> str:
    return text[span[0] : span[1]].strip().lstrip("&").strip()


def published_event_types(root: Path = ROOT) -> set[str]:
    """`<domain>.<aggregate>.<event>` for every event type the crates publish."""
    found: set[str] = set()
    for crate_dir in sorted((root / "crates").iterdir()):
        if crate_dir.name in EXCLUDED_CRATES or not (crate_dir / "src").is_dir():
            continue
        crate = load(crate_dir, root)
        for path, src in crate.files.items():
            for m in CALL.finditer(src.masked):
                close = matching(src.masked, m.end() - 1)
                spans = split_top(src.masked[m.end() : close], m.end())
                if len(spans) != 3:
                    raise SourceError(f"{crate.where(path, m.start())}: EventType::new with {len(spans)} arguments")
                args = [argument(src.text, s) for s in spans]
                found |= {".".join(t) for t in resolve(crate, path, m.start(), args)}
    # Watermarks are published by the relays of the streams that declare a
    # watermark subject (events/watermark.rs), not through EventType::new.
    streams = root / "crates/platform/src/events/streams.rs"
    if streams.exists():
        found |= {f"{d}.watermark" for d in WATERMARK.findall(streams.read_text())}
    return found


if __name__ == "__main__":
    for t in sorted(published_event_types()):
        print(t)
