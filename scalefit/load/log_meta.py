"""A user log's run metadata: its sidecar (``run.json``/``run.yaml``), a Trainer's
``config.json``, the parameter count derived from a model config, the default run id, and
the hash of everything but the file that shapes its rows (:func:`_settings_sha`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from .._counts import parse_count
from ..errors import IngestError

SIDECARS = ("run.json", "run.yaml", "run.yml")
"""Run-metadata files read with every log in the same folder."""


DEFAULT_PROJECT = "default"


def _read_mapping(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise IngestError(f"{path}: not valid JSON ({exc}); fix the run metadata") from None
        except RecursionError:
            raise IngestError(f"{path}: JSON nested too deeply; fix the run metadata") from None
    else:
        try:
            import yaml
        except ImportError:  # pragma: no cover - PyYAML comes with Prefect
            raise IngestError(
                f"{path}: reading YAML needs PyYAML (`pip install pyyaml`); or write run.json"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise IngestError(f"{path}: not valid YAML ({exc}); fix the run metadata") from None
        except RecursionError:
            raise IngestError(f"{path}: YAML nested too deeply; fix the run metadata") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise IngestError(f"{path}: run metadata must be a mapping of keys to values")
    return data


@dataclass(frozen=True)
class _Metadata:
    sidecar: dict
    model_config: dict
    files: tuple[str, ...]
    digest: str


def _metadata(path: Path, fmt: str) -> _Metadata:
    """Sidecar run metadata beside ``path`` (and a Trainer's ``config.json``)."""
    sidecar: dict = {}
    files: list[str] = []
    h = hashlib.sha256()
    for name in SIDECARS:
        candidate = path.parent / name
        if candidate.is_file():
            sidecar = _read_mapping(candidate)
            files.append(name)
            h.update(candidate.read_bytes())
            break
    model_config: dict = {}
    config_json = path.parent / "config.json"
    if fmt == "trainer_state" and config_json.is_file():
        with contextlib.suppress(ValueError, OSError, IngestError):
            model_config = _read_mapping(config_json)
            files.append("config.json")
            h.update(config_json.read_bytes())
    return _Metadata(sidecar, model_config, tuple(files), h.hexdigest())


def _settings_sha(fmt: str | None, meta: _Metadata, **options: object) -> str:
    text = json.dumps(
        {"format": fmt, "metadata": meta.digest, "version": __version__, **options},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


_LAYER_KEYS = ("n_layer", "n_layers", "num_layers", "num_hidden_layers")


_WIDTH_KEYS = ("d_model", "n_embd", "hidden_size")


def params_from_config(config: dict) -> float | None:
    """Non-embedding parameters ``12 n_layer d_model^2`` from a model config, or None.

    Accepts GPT-2 (``n_layer``, ``n_embd``), Llama-style (``num_hidden_layers``,
    ``hidden_size``) and plain (``n_layer``, ``d_model``) names. The count is the usual
    approximation of Kaplan et al. (2020), eq. 2.1 (attention ``4 d^2`` plus MLP ``8 d^2`` per
    layer); embeddings (``vocab_size * d_model``) are excluded.

    Raises
    ------
    IngestError
        The count overflows (e.g. ``d_model`` 1e200): not a model, a typo.

    Examples
    --------
    >>> params_from_config({"n_layer": 12, "d_model": 768, "vocab_size": 50257})
    84934656.0
    """
    layers = next((config[k] for k in _LAYER_KEYS if k in config), None)
    width = next((config[k] for k in _WIDTH_KEYS if k in config), None)
    try:
        layers, width = float(layers), float(width)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if layers <= 0 or width <= 0:
        return None
    try:
        params = 12.0 * layers * width**2
    except OverflowError:
        params = math.inf
    if not math.isfinite(params):
        raise IngestError(
            f"the model config's layers ({layers:g}) and width ({width:g}) give no finite "
            "parameter count (12 n_layer d_model^2); fix them, or give `params` in run.json "
            "or with --params"
        )
    return params


_COUNTS = ("params", "unique_tokens", "tokens_per_step")


def _count(name: str, value: object) -> object:
    """A count given as text (``"350M"``, ``"1.3B"``) read as the command line reads it
    (:func:`scalefit._counts.parse_count`), and a ``schedule`` in any case (``"Cosine"``);
    text that is neither is left for the schema to reject with its reason."""
    if name == "schedule" and isinstance(value, str):
        return value.strip().lower()
    if name in _COUNTS and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return parse_count(value)
    return value


def _run_id_default(path: Path, fmt: str, meta: _Metadata) -> str:
    side = meta.sidecar
    for key in ("run_id", "name"):
        if isinstance(side.get(key), str | int) and str(side[key]).strip():
            return str(side[key]).strip()
    folder = path.parent
    if fmt == "trainer_state":
        if folder.name.startswith("checkpoint-") and folder.parent.name:
            folder = folder.parent
        return folder.name or path.stem
    # A run.json describes the run of its folder: `runs/gpt-125m/{run.json,log.csv}`.
    return folder.name if meta.files and folder.name else path.stem
