"""Loading description files (YAML or JSON) into pydantic models with errors that
name the file and the field."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gimletc.errors import ConfigError

T = TypeVar("T", bound=BaseModel)


def read_data(path: str | Path) -> Any:
    """Parse a YAML or JSON file; malformed text is a ConfigError naming the file and line."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        if p.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: malformed JSON at line {e.lineno}: {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: malformed YAML{where}: {getattr(e, 'problem', None) or e}") from None


def describe_validation_error(err: ValidationError, source: str) -> str:
    """One line: the source, the first failing field's dotted path, and why."""
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        why = "unknown field"
    elif kind == "missing":
        why = "missing field"
    else:
        why = first["msg"]
        if "input" in first and not isinstance(first["input"], dict | list):
            why += f" (got {first['input']!r})"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {loc}: {why}{more}"


def validate(cls: type[T], data: Any, source: str) -> T:
    """Validate `data` as `cls`, turning pydantic's report into a one-line ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e, source)) from None


def load(cls: type[T], path: str | Path) -> T:
    return validate(cls, read_data(path), str(path))


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write text (or bytes) to `path` through a temporary file, so a failure never leaves half a file."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent or ".", prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; a written plan is an ordinary file
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
