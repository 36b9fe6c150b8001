"""Reading description files (YAML or JSON) into pydantic models, and writing output files, with
errors that name the file and the field.

Reading is bounded: a file must be UTF-8 text of at most `MAX_FILE_BYTES`, nested at most
`MAX_DEPTH` levels, and YAML aliases may not expand a document beyond `MAX_ALIAS_EXPANSION`
nodes (or twice its own size, whichever is larger), so a few hundred bytes cannot ask for
gigabytes ("billion laughs"). JSON must be standard JSON (no NaN or Infinity).

Writing is atomic and careful: `write_atomic` writes through a temporary file beside the target
and renames it into place, so a failure never leaves half a file; it refuses a target that is
not a regular file (a directory, a symbolic link, a FIFO, a device), an empty path, a missing
or read-only folder, before it writes anything; and it removes the temporary file an earlier,
killed write to the same target left behind. `write_outputs` writes several files as one step:
every target is checked and every file staged before the first is renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import reprlib
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gimletc.errors import ConfigError

T = TypeVar("T", bound=BaseModel)

STDOUT = "-"  # as an output path: standard output, where a command says so
MAX_FILE_BYTES = 500_000_000  # a 100,000-op plan is about 130 MB
MAX_DEPTH = 128  # mappings and lists inside each other; real files stay under 20
MAX_ALIAS_EXPANSION = 100_000  # YAML nodes aliases may add beyond the document's own (or its size, if larger)

_YAML_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster


# ---- reading ----------------------------------------------------------------------------------


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of `path` (a BOM is dropped). A missing, unreadable, non-regular, oversized or
    non-UTF-8 file is a one-line ConfigError naming it."""
    p = Path(path)
    if str(path) == "":
        raise ConfigError(f"the {what} path is empty")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file (cannot read it)") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{p}: is a directory, not a {what}")
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"{p}: is a {_kind(st.st_mode)}, not a {what}")
    if st.st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{p}: is {st.st_size / 1e6:.0f} MB; gimletc reads files up to {MAX_FILE_BYTES / 1e6:.0f} MB")
    try:
        # In pieces, one byte past the limit at most: a pipe has no size, a file may grow meanwhile, and
        # read(n) sets n bytes aside before it reads any.
        with open(p, "rb", buffering=0) as f:
            pieces, n = [], 0
            while n <= MAX_FILE_BYTES and (piece := f.read(min(max(st.st_size + 1, 2**16), 2**24, MAX_FILE_BYTES + 1 - n))):
                pieces.append(piece)
                n += len(piece)
            data = b"".join(pieces)
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{p}: is larger than {MAX_FILE_BYTES / 1e6:.0f} MB, the most gimletc reads")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{p}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}, line {line})") from None


def read_data(path: str | Path) -> Any:
    """Parse a YAML or JSON file (JSON for a `.json` name); malformed, binary, too deep or
    alias-bomb text is a one-line ConfigError naming the file and line."""
    p = Path(path)
    text = read_text(p)
    return parse_text(text, str(p), json_=p.suffix == ".json")


def parse_text(text: str, source: str, json_: bool) -> Any:
    """Parse `text` as JSON (`json_`) or YAML with the limits of this module; errors name `source`."""
    if json_:
        return _parse_json(text, source)
    return _parse_yaml(text, source)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (RFC 8259); write a finite number")


def _parse_json(text: str, source: str) -> Any:
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # NaN/Infinity, or an integer of more than 4,300 digits
        raise ConfigError(f"{source}: malformed JSON: {_first_line(e)}") from None
    depth = _data_depth(data)
    if depth > MAX_DEPTH:
        raise ConfigError(f"{source}: nested {depth} levels deep; gimletc reads at most {MAX_DEPTH}")
    return data


def _data_depth(data: Any) -> int:
    """Nesting depth of lists and dicts (a scalar is 0), without recursion."""
    best = 0
    stack = [(data, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            items: Any = v.values()
        elif isinstance(v, list):
            items = v
        else:
            continue
        best = max(best, d)
        if d <= MAX_DEPTH:  # deeper is already too deep; no need to walk further
            stack.extend((x, d + 1) for x in items)
    return best


def _parse_yaml(text: str, source: str) -> Any:
    loader = _YAML_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_node(node, source)
        return loader.construct_document(node)
    except ConfigError:
        raise
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        why = getattr(e, "problem", None) or e
        raise ConfigError(f"{source}: malformed YAML{where}: {_first_line(why)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. an integer of more than 4,300 digits
        raise ConfigError(f"{source}: malformed YAML: {_first_line(e)}") from None
    finally:
        loader.dispose()


def _check_yaml_node(root: yaml.Node, source: str) -> None:
    """Refuse a composed YAML document nested deeper than MAX_DEPTH, or whose aliases would expand
    it past max(MAX_ALIAS_EXPANSION, its own node count) extra nodes once built into Python objects.
    An alias is the same node object reached twice, so sizes and heights are memoised per node."""
    if isinstance(root, yaml.ScalarNode):
        return
    size: dict[int, int] = {}  # id(collection node) -> nodes it stands for, aliases expanded
    height: dict[int, int] = {}  # id(collection node) -> levels of nesting below and including it
    on_path: set[int] = set()  # the nodes whose subtree is being walked: a recursive alias meets one again
    scalars = 0
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:  # iterative post-order: no recursion, whatever the nesting
        node, depth, done = stack.pop()
        children = _yaml_children(node)
        if done:
            on_path.discard(id(node))
            n, h = 1, 1
            for c in children:
                if isinstance(c, yaml.ScalarNode):
                    n += 1
                    h = max(h, 2)
                else:
                    n += size[id(c)]
                    h = max(h, 1 + height[id(c)])
            size[id(node)], height[id(node)] = n, h
            if depth + h - 1 > MAX_DEPTH:
                raise ConfigError(f"{source}: nested deeper than {MAX_DEPTH} levels (at line {_line(node)})")
            continue
        if id(node) in size:
            continue
        if id(node) in on_path:
            raise ConfigError(f"{source}: a YAML alias refers to a node that contains it (line {_line(node)})")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{source}: nested deeper than {MAX_DEPTH} levels (at line {_line(node)})")
        on_path.add(id(node))
        stack.append((node, depth, True))
        for c in children:
            if isinstance(c, yaml.ScalarNode):
                scalars += 1  # aliased scalars count once: they expand to no more than themselves
            elif id(c) not in size:
                stack.append((c, depth + 1, False))
    distinct, total = len(size) + scalars, size[id(root)]
    allowed = distinct + max(MAX_ALIAS_EXPANSION, distinct)
    if total > allowed:
        raise ConfigError(
            f"{source}: YAML aliases expand {distinct:,} nodes into {total:,}; gimletc allows at most {allowed:,} "
            "(an alias bomb?)"
        )


def _line(node: yaml.Node) -> int | str:
    return node.start_mark.line + 1 if node.start_mark is not None else "?"


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    return []


def _first_line(x: Any) -> str:
    s = str(x).strip()
    m = re.match(r"Exceeds the limit \((\d+) digits\).*value has (\d+) digits", s)
    if m:
        return f"an integer of {m[2]} digits; gimletc reads at most {m[1]}"
    return brief_text(s.splitlines()[0] if s else s)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISDIR(mode):
        return "directory"
    return "special file"


# ---- short reprs for messages --------------------------------------------------------------------

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 3, 6, 6, 6, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 80, 80, 40


def brief(value: Any) -> str:
    """`repr(value)`, cut short (nesting, items, long strings and numbers), so one message stays one
    short line whatever a file holds."""
    return brief_text(_REPR.repr(value))


def brief_text(s: str, limit: int = 300) -> str:
    """`s` on one line, at most `limit` characters."""
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


# ---- validation ----------------------------------------------------------------------------------


def describe_validation_error(err: ValidationError, source: str) -> str:
    """One line: the source, the first failing field's dotted path, and why."""
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"])
    kind = first["type"]
    if not loc and kind != "value_error":
        loc = "(top level)"
    if kind == "extra_forbidden":
        why = "unknown field"
    elif kind == "missing":
        why = "missing field"
    else:
        why = first["msg"]
        if kind == "value_error":
            why = why.removeprefix("Value error, ")
        elif "input" in first and not isinstance(first["input"], dict | list):
            why += f" (got {brief(first['input'])})"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return brief_text(f"{source}: {loc}: {why}{more}" if loc else f"{source}: {why}{more}", 600)


def validate(cls: type[T], data: Any, source: str) -> T:
    """Validate `data` as `cls`, turning pydantic's report into a one-line ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e, source)) from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to validate") from None


def load(cls: type[T], path: str | Path) -> T:
    return validate(cls, read_data(path), str(path))


# ---- writing -------------------------------------------------------------------------------------

_TMP_SUFFIX = ".tmp"


def check_output(path: str | Path, what: str = "output", allow_stdout: bool = False) -> Path:
    """`path` as a Path, once it is known that `write_atomic` can put a file there: refuses (ConfigError,
    one line naming the path) an empty path, an existing target that is not a regular file (a
    directory, a symbolic link, a FIFO, a device) or is read-only, and a folder that is missing, not a
    folder, or not writable. `-` is standard output where `allow_stdout`.

    "Writable" is checked twice: by `os.access` (the OS's answer for this user) and by the folder's
    own mode bits (no write bit for anyone means read-only, for root as well, although root could
    write there: a folder made read-only says what its owner wants)."""
    s = os.fspath(path)
    if s == "":
        raise ConfigError(f"the {what} path is empty")
    if s == STDOUT:
        if allow_stdout:
            return Path(STDOUT)
        raise ConfigError(f"{what}: '-' (standard output) is not accepted here; give a file name")
    p = Path(s)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise ConfigError(f"{what} {p}: cannot write: {e.strerror or e}") from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(p)
            raise ConfigError(f"{what} {p}: is a symbolic link (to {target}); gimletc replaces files whole and will not "
                              "replace a link: write to the file itself, or remove the link")
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{what} {p}: is a directory; give the path of a file (inside it, or elsewhere)")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what} {p}: is a {_kind(st.st_mode)}, not a regular file; gimletc will not replace it")
        if not st.st_mode & 0o222:
            raise ConfigError(f"{what} {p}: exists and is read-only (mode {stat.S_IMODE(st.st_mode):04o})")
    parent = p.parent
    try:
        pst = os.stat(parent)
    except FileNotFoundError:
        raise ConfigError(f"{what} {p}: folder {parent} does not exist") from None
    except OSError as e:
        raise ConfigError(f"{what} {p}: folder {parent}: {e.strerror or e}") from None
    if not stat.S_ISDIR(pst.st_mode):
        raise ConfigError(f"{what} {p}: {parent} is not a folder")
    if not pst.st_mode & 0o222 or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {p}: folder {parent} is read-only (mode {stat.S_IMODE(pst.st_mode):04o})")
    return p


def _tmp_pattern(p: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(p.name)}\.(\d+)\.[A-Za-z0-9_]+{re.escape(_TMP_SUFFIX)}")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def clean_orphans(path: str | Path) -> list[Path]:
    """Remove the temporary files that writes to `path` by processes no longer running left behind
    (a write killed between creating its temporary file and renaming it); returns what was removed.
    Temporary files of running processes, this one included, are kept."""
    p = Path(path)
    pat = _tmp_pattern(p)
    removed = []
    try:
        names = os.listdir(p.parent)
    except OSError:
        return removed
    for name in names:
        m = pat.fullmatch(name)
        if m is None or _pid_alive(int(m[1])):
            continue
        orphan = p.parent / name
        try:
            if stat.S_ISREG(os.lstat(orphan).st_mode):
                orphan.unlink()
                removed.append(orphan)
        except OSError:
            pass
    return removed


def staging_folder(folder: str | Path, what: str = "output folder") -> Path:
    """A new, empty folder beside `folder` (`.NAME.PID.RANDOM.tmp`) to build its contents in before they
    are moved into it, so a failed build leaves nothing behind; staging folders of processes no longer
    running are removed first. `folder` must be a folder (or a link to one) or not exist yet, in an
    existing, writable folder; otherwise a one-line ConfigError naming it."""
    import shutil

    s = os.fspath(folder)
    if s == "":
        raise ConfigError(f"the {what} path is empty")
    p = Path(s)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {p}: is a {'file' if p.is_file() else _kind(os.stat(p).st_mode)}, not a folder")
    parent = p.parent
    if not parent.is_dir():
        raise ConfigError(f"{what} {p}: folder {parent} does not exist" if not parent.exists()
                          else f"{what} {p}: {parent} is not a folder")
    pst = os.stat(parent)
    if not pst.st_mode & 0o222 or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {p}: folder {parent} is read-only (mode {stat.S_IMODE(pst.st_mode):04o})")
    pat = _tmp_pattern(p)
    for name in os.listdir(parent):
        m = pat.fullmatch(name)
        if m is not None and not _pid_alive(int(m[1])) and stat.S_ISDIR(os.lstat(parent / name).st_mode):
            shutil.rmtree(parent / name, ignore_errors=True)
    try:
        return Path(tempfile.mkdtemp(dir=parent, prefix=f".{p.name}.{os.getpid()}.", suffix=_TMP_SUFFIX))
    except OSError as e:
        raise ConfigError(f"{what} {p}: cannot create a folder in {parent}: {e.strerror or e}") from None


def _stage(p: Path, text: str | bytes) -> str:
    """Write `text` to a new temporary file beside `p` (named after `p` and this process) and return its name."""
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.{os.getpid()}.", suffix=_TMP_SUFFIX)
    except OSError as e:
        raise ConfigError(f"output {p}: cannot create a file in {p.parent}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; a written plan is an ordinary file
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"output {p}: writing failed: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write text (or bytes) to `path` through a temporary file, so a failure never leaves half a file.
    The target is checked first (see `check_output`); errors are one-line ConfigErrors naming it."""
    write_outputs([(path, text)])


def check_outputs(paths: Sequence[str | Path | None], allow_stdout: bool = False) -> list[Path]:
    """`check_output` for each path given (None: no such output), and no two naming the same file
    (or, with `allow_stdout`, both standard output)."""
    checked = [check_output(p, allow_stdout=allow_stdout) for p in paths if p is not None]
    seen: set[str] = set()
    for p in checked:
        key = STDOUT if str(p) == STDOUT else os.path.realpath(p)
        if key in seen:
            raise ConfigError(f"two outputs would be written to {p}" + (" (standard output)" if key == STDOUT else ""))
        seen.add(key)
    return checked


def write_outputs(items: Sequence[tuple[str | Path, str | bytes]], allow_stdout: bool = False) -> None:
    """Write several files as one step: every target is checked (`check_outputs`) and every file is
    written to its temporary name before the first is renamed into place, so a failure in any
    leaves none of them written. With `allow_stdout`, at most one item may be `-`, written to
    standard output after the files."""
    paths = check_outputs([path for path, _ in items], allow_stdout=allow_stdout)
    staged: list[tuple[str, Path]] = []
    stdout_text: str | bytes | None = None
    try:
        for p, (_, text) in zip(paths, items, strict=True):
            if str(p) == STDOUT:
                stdout_text = text
                continue
            clean_orphans(p)
            staged.append((_stage(p, text), p))
        for i, (tmp, p) in enumerate(staged):
            try:
                os.replace(tmp, p)
            except OSError as e:
                for t, _ in staged[i:]:
                    Path(t).unlink(missing_ok=True)
                raise ConfigError(f"output {p}: cannot put it in place: {e.strerror or e}") from None
    except BaseException:
        for t, _ in staged:
            Path(t).unlink(missing_ok=True)
        raise
    if stdout_text is not None:
        if isinstance(stdout_text, bytes):
            sys.stdout.flush()
            sys.stdout.buffer.write(stdout_text)
            sys.stdout.buffer.flush()
        else:
            sys.stdout.write(stdout_text)
            sys.stdout.flush()
