"""``model=<name as Ollama spells it>``: the override a user of ``ollama run llama3.2:1b`` types, made to work.

Why before Hydra: ``model`` is a config group (conf/model/*.yaml), so Hydra
composes ``model=smollm2:135m`` by looking for ``conf/model/smollm2:135m.yaml``
and fails with a list of the group's files; the user meant the model the
server knows by that name, which is ``model.name=``.  A group option's only
content is that name (:class:`sweep.config.ModelConfig`), so an override
whose value is not a file of the group is rewritten to ``model.name=<value>``
before Hydra parses the command line, with one line saying so.  A real group
option (``model=gemma3_270m``) is left to Hydra.  A comma list that mixes
both (``-m model=gemma3_270m,llama3.2:1b``) becomes one ``model.name=`` list,
each group option replaced by the name its file gives.  Sweep functions
(``choice(…)``, ``glob(…)``) and quoted values are left to Hydra as they are.
"""

from __future__ import annotations

from pathlib import Path

import yaml

MODEL_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"
_PREFIX = "model="


def _name_of(option: str, directory: Path) -> str | None:
    """The ``name:`` of conf/model/<option>.yaml; None when there is no such file (a ``_schema`` is not one)."""
    path = directory / f"{option}.yaml"
    if option.endswith("_schema") or not path.is_file():
        return None
    name = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("name")
    return str(name) if name is not None else None


def model_names(argv: list[str], directory: Path = MODEL_DIR) -> str | None:
    """Rewrite ``model=<server name>`` in ``argv`` (in place) to ``model.name=``; the note to print, or None."""
    for i, arg in enumerate(argv[1:], 1):
        if not arg.startswith(_PREFIX):
            continue
        value = arg[len(_PREFIX):]
        if not value or any(ch in value for ch in "()[]{}'\"$ "):
            return None                      # a sweep function, a quoted value, an interpolation: Hydra's
        parts = value.split(",")
        names = [_name_of(p, directory) for p in parts]
        if all(n is not None for n in names):
            return None                      # every one a group option: Hydra composes them
        served = ",".join(n if n is not None else p for p, n in zip(parts, names))
        argv[i] = f"model.name={served}"
        return (f"note: {arg} is not a config in conf/model/ ({_options(directory)}): "
                f"taken as model.name={served}, the name the server knows")
    return None


def _options(directory: Path) -> str:
    return ", ".join(sorted(p.stem for p in directory.glob("*.yaml") if not p.stem.endswith("_schema")))
