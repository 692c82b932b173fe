"""Hydra's multi-line composition errors → one line that names the fix.

Why here and not in Hydra's hands: Hydra prints an unknown group option as a
list plus the whole config search path, and a wrong type as five lines of
OmegaConf internals.  A sweep's user needs the one fact (which key, which
value, what is allowed).  :func:`run` makes Hydra hand us the exception
(``HYDRA_FULL_ERROR``) and prints it as ``error: …``, exit code 2, before any
request is sent.  Set ``HYDRA_FULL_ERROR=1`` yourself to see Hydra's own report.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable

from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from sweep import config as schemas

EXIT_CONFIG = 2
_FULL = "HYDRA_FULL_ERROR"
_TYPES = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "text"}


def _choices(options: list[str] | None) -> str:
    # The structured-config schemas registered beside the YAML files are not choices for users.
    return ", ".join(o for o in (options or []) if not o.endswith("_schema"))


def _schema_keys(type_name: str | None) -> str:
    node = getattr(schemas, type_name or "", None)
    if node is None or not dataclasses.is_dataclass(node):
        return ""
    return ", ".join(f.name for f in dataclasses.fields(node))


def one_line(exc: BaseException) -> str:
    """The sentence for one composition error (without the ``error:`` prefix)."""
    text = str(exc)
    if isinstance(exc, MissingConfigException):
        found = re.search(r"Could not find '(?:(.+)/)?([^/']+)'", text)
        if found and exc.options:
            group, name = found.group(1) or "", found.group(2)
            where = group.replace("/", ".") if group.startswith("hydra/") else group
            return f"unknown {where}={name}: choose one of {_choices(list(exc.options))}"
        return text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, OverrideParseException):
        return f"cannot parse the override '{exc.override}': {exc.message.splitlines()[0]} (quote lists: key='[1,2]')"
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
    if isinstance(cause, ValidationError) and cause.full_key:
        choices = re.search(r"expected one of \[([^\]]*)\]", str(cause))   # a choice key (an enum of sweep.config)
        if choices:
            return f"invalid {cause.full_key}={cause.value!r}: choose one of {choices.group(1)}"
        kind = re.search(r"converted to (\w+)|not a valid (bool)", str(cause))
        name = kind and (kind.group(1) or "Boolean")
        wanted = f"must be {_TYPES.get(name, name)}" if name else str(cause).splitlines()[0]
        return f"invalid {cause.full_key}={cause.value!r}: {wanted}"
    if isinstance(cause, ConfigKeyError) or "not in '" in str(cause):
        key = getattr(cause, "full_key", None) or "?"
        obj = getattr(cause, "object_type", None)
        keys = _schema_keys(obj.__name__ if isinstance(obj, type) else None)
        return f"unknown key {key}: valid keys there are {keys}" if keys else f"unknown key {key}"
    first = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
    detail = str(cause).splitlines()[0] if cause is not exc and str(cause) else ""
    return f"{first}: {detail}" if detail else first


def flags_first(argv: list[str]) -> None:
    """Move ``-m``/``--multirun`` before the overrides, in place.

    Hydra's argument parser rejects the overrides after a flag placed between
    them with its whole usage text (argparse stops taking positional overrides at
    the flag: Hydra issue #3053, open for Hydra 1.3; its fix is pull request #3133);
    the intent of ``python -m sweep a=1 -m b=1,2`` is not in doubt.  The one place our code
    changes ``sys.argv`` (elsewhere it is only echoed back in hints); no public Hydra API reorders it.
    """
    flags = [a for a in argv[1:] if a in ("-m", "--multirun")]
    if flags:
        argv[1:] = flags[:1] + [a for a in argv[1:] if a not in ("-m", "--multirun")]


def run(main: Callable[[], None]) -> None:
    """Call the ``@hydra.main`` function; a composition error becomes one line and exit code 2."""
    user_wants_full = _FULL in os.environ
    os.environ[_FULL] = "1"      # Hydra re-raises instead of printing its multi-line report
    try:
        main()
    except (HydraException, OmegaConfBaseException) as exc:
        if user_wants_full:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG) from None
    finally:
        if not user_wants_full:
            os.environ.pop(_FULL, None)
