"""Model files: ``MODEL_DIR/model.safetensors`` + ``MODEL_DIR/config.json``. Nothing is ever unpickled.

``config.json`` says everything needed to rebuild and use the network — architecture, input channels and
2.5D context, slicing axis, intensity normalisation, the task and soft-label method it was trained for,
the calibration temperature — plus a training summary, validation metrics and the package version.
``model.safetensors`` holds only tensors (stored as float16 by default to keep shipped models small;
they are turned back into float32 on load).

Loading refuses, with a :class:`~napari_softseg.errors.SoftsegError` that names the file:

- PyTorch pickle checkpoints (``.pt``, ``.pth``, ``.ckpt``, ...): a pickle can carry code, so such a file
  is never opened by any unpickler;
- a ``model.safetensors`` that is not valid safetensors, or whose tensors do not fit the architecture;
- a config from a newer model format, an unknown architecture, or inconsistent channel counts.

Every file is written atomically (temporary name in the same folder, then :func:`os.replace`), so a
crash or a full disk leaves the previous file intact.

Example:
    >>> from napari_softseg.model.model_io import ModelConfig, new_network, save_model, load_model
    >>> config = ModelConfig(architecture={"base_channels": 4, "depth": 2})
    >>> save_model("my_model", new_network(config), config)  # doctest: +SKIP
    >>> load_model("my_model").config.task  # doctest: +SKIP
    1
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from napari_softseg import __version__
from napari_softseg.errors import SoftsegError
from napari_softseg.io.files import atomic_destination, crash_point, write_bytes_synced
from napari_softseg.io.jsonio import read_json_object
from napari_softseg.io.memory import check_memory
from napari_softseg.model.architecture import normalize_architecture
from napari_softseg.model.normalization import Normalization

FORMAT_NAME = "napari-softseg-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar")
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol >= 2; torch.save's zip container
MANIFEST_FILE = "manifest.json"
ARCHITECTURE_KEYS = ("name", "in_channels", "out_channels", "base_channels", "depth", "norm")
MAX_BASE_CHANNELS = 256
MAX_IMAGE_CHANNELS = 256
MAX_CONTEXT_SLICES = 16
#: Largest magnitude accepted in a weight tensor: trained weights are far smaller; beyond this the
#: network's activations overflow float16/float32 and the map becomes NaN or a constant.
MAX_WEIGHT_MAGNITUDE = 1e4
MAX_WEIGHTS_BYTES = 4 * 2**30
MAX_PARAMETERS = 2e8


def estimate_parameters(architecture: dict) -> float:
    """Approximate weight count of the U-Net (two 3x3 convolutions per level, encoder and decoder)."""
    base, depth = architecture["base_channels"], architecture["depth"]
    total, previous = 0.0, architecture["in_channels"]
    for level in range(depth + 1):
        c = base * 2**level
        total += 9 * (previous * c + c * c)  # encoder level
        if level:
            total += 9 * (2 * c // 2 * c // 2 + (c // 2) ** 2) + c * (c // 2) * 4  # decoder level + up-convolution
        previous = c
    return total


@dataclass
class ModelConfig:
    """Everything ``config.json`` records about a model.

    Attributes:
        architecture: Network description for :func:`napari_softseg.model.unet.build_network`; its
            ``in_channels`` is derived from ``image_channels`` and ``context_slices``.
        task: Task number the model was trained for (QUBIQ ``task0T``).
        image_channels: Channels of the input image (e.g. 4 for QUBIQ brain tumour).
        context_slices: 2.5D context: this many neighbouring slices on each side become extra channels.
        slice_axis: Spatial axis (0, 1 or 2 of ``(X, Y, Z)``) that is sliced into 2D images.
        normalization: :class:`~napari_softseg.model.normalization.Normalization` as a dict.
        softlabel: How the training targets were made (method, sigma_mm, ...).
        loss: ``"bce"``, ``"dice"`` or ``"bce+dice"``.
        temperature: Calibration temperature; probabilities are ``sigmoid(logit / temperature)``.
        calibration: ECE before/after temperature scaling on the validation cases, when fitted.
        training: Summary of the training run (dataset, cases, epochs, seconds, device, seed, ...).
        validation: Validation metrics of the kept (best) epoch.
        software: Name and version of the package that wrote the model.
        weights_dtype: ``"float16"`` or ``"float32"``: how ``model.safetensors`` stores the weights.
        patch_size: Training patch (2 sides for a 2D model, 3 for a 3D one); prediction then slides a window
            of this size with Gaussian blending. ``None`` (older models): whole slices in one pass.
        plan: The training plan (dataset fingerprint and the choices made from it), for the record.
        target_spacing: Voxel size ``(sx, sy, sz)`` in mm the network was trained at; prediction resamples
            each input to it and the probabilities back (a 2D model only in-plane). ``None`` (models before
            v0.3, or trained with ``--target-spacing native``): the network runs on the input's own grid.
        background_margin_mm: Prediction sets p = 0 farther than this from the body (the scan above its body
            level, :mod:`~napari_softseg.model.background`); set by training for body-region z-scored MR,
            ``None`` otherwise (and in models before v0.3).
    """

    architecture: dict = field(default_factory=dict)
    task: int = 1
    image_channels: int = 1
    context_slices: int = 0
    slice_axis: int = 2
    normalization: dict = field(default_factory=lambda: {"mode": "zscore"})
    softlabel: dict = field(default_factory=lambda: {"method": "mean"})
    loss: str = "bce"
    temperature: float = 1.0
    calibration: dict | None = None
    training: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    software: dict = field(default_factory=lambda: {"name": "napari-softseg", "version": __version__})
    weights_dtype: str = "float16"
    patch_size: list | None = None
    plan: dict = field(default_factory=dict)
    target_spacing: list | None = None
    background_margin_mm: float | None = None

    def __post_init__(self):

        for name in ("task", "image_channels", "context_slices", "slice_axis"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise SoftsegError(f"{name} must be a whole number, got {value!r}")
        for name in ("architecture", "normalization", "softlabel", "training", "validation", "software", "plan"):
            if not isinstance(getattr(self, name), dict):
                raise SoftsegError(f"{name} must be a JSON object, got {getattr(self, name)!r}")
        if not isinstance(self.temperature, (int, float)) or isinstance(self.temperature, bool):
            raise SoftsegError(f"temperature must be a number, got {self.temperature!r}")
        if self.slice_axis not in (0, 1, 2):
            raise SoftsegError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis!r}")
        if self.context_slices < 0 or self.image_channels < 1:
            raise SoftsegError("context_slices must be >= 0 and image_channels >= 1")
        if self.image_channels > MAX_IMAGE_CHANNELS or self.context_slices > MAX_CONTEXT_SLICES:
            raise SoftsegError(f"image_channels ({self.image_channels}) or context_slices ({self.context_slices}) is "
                               f"implausibly large (at most {MAX_IMAGE_CHANNELS} and {MAX_CONTEXT_SLICES})")
        unknown = sorted(set(self.architecture) - set(ARCHITECTURE_KEYS))
        if unknown:
            raise SoftsegError(f"unknown architecture field(s) {', '.join(map(repr, unknown))}")
        base = self.architecture.get("base_channels", 16)
        if isinstance(base, int) and not isinstance(base, bool) and base > MAX_BASE_CHANNELS:
            raise SoftsegError(f"architecture base_channels {base} is larger than {MAX_BASE_CHANNELS}")
        if not isinstance(self.loss, str) or not isinstance(self.weights_dtype, str):
            raise SoftsegError(f"loss and weights_dtype must be text, got {self.loss!r} and {self.weights_dtype!r}")
        expected = self.in_channels
        arch = dict(self.architecture)
        if "in_channels" in arch and arch["in_channels"] != expected:
            raise SoftsegError(
                f"architecture has {arch['in_channels']} input channels but image_channels="
                f"{self.image_channels} with {self.context_slices} context slice(s) needs {expected}"
            )
        arch["in_channels"] = expected
        self.architecture = normalize_architecture(arch)
        n_params = estimate_parameters(self.architecture)
        if n_params > MAX_PARAMETERS:
            raise SoftsegError(f"a U-Net with base_channels {self.architecture['base_channels']} and depth "
                               f"{self.architecture['depth']} has about {n_params:.2g} parameters, more than this tool "
                               f"handles ({MAX_PARAMETERS:.0e})")
        if self.architecture["out_channels"] != 1:
            raise SoftsegError("only networks with one output channel (a soft foreground map) are supported")
        try:
            Normalization.from_dict(self.normalization)  # validates
        except (TypeError, ValueError, AttributeError) as exc:
            raise SoftsegError(f"invalid normalization {self.normalization!r} ({exc})") from None
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise SoftsegError(f"temperature must be positive and finite, got {self.temperature!r}")
        if self.weights_dtype not in ("float16", "float32"):
            raise SoftsegError(f"weights_dtype must be float16 or float32, got {self.weights_dtype!r}")
        if self.patch_size is not None:
            if (not isinstance(self.patch_size, (list, tuple)) or len(self.patch_size) != self.dim
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in self.patch_size)):
                raise SoftsegError(f"patch_size must be {self.dim} positive whole numbers, got {self.patch_size!r}")
            self.patch_size = [int(v) for v in self.patch_size]
        if self.dim == 3 and self.context_slices:
            raise SoftsegError("a 3D model has no 2.5D context slices")
        if self.target_spacing is not None:
            values = self.target_spacing
            if (not isinstance(values, (list, tuple)) or len(values) != 3
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                               for v in values)):
                raise SoftsegError(f"target_spacing must be 3 positive sizes in mm, got {values!r}")
            self.target_spacing = [float(v) for v in values]
        margin = self.background_margin_mm
        if margin is not None:
            if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not (math.isfinite(margin) and margin > 0):
                raise SoftsegError(f"background_margin_mm must be a positive number of mm, got {margin!r}")
            self.background_margin_mm = float(margin)

    @property
    def dim(self) -> int:
        """2 for a network on slices, 3 for a network on volumes (from the architecture name)."""
        return 3 if self.architecture.get("name") == "unet3d" else 2

    @property
    def in_channels(self) -> int:
        """Network input channels: image channels × (2 × context_slices + 1)."""
        return self.image_channels * (2 * self.context_slices + 1)

    def to_dict(self) -> dict:
        """JSON-ready form, with the format name and version first."""
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, path: str | os.PathLike | None = None) -> ModelConfig:
        """Read a config written by :meth:`to_dict`, checking format and version.

        Raises:
            SoftsegError: Not a napari-softseg model config, a newer format, or invalid fields.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise SoftsegError(f"not a napari-softseg model config (no \"format\": \"{FORMAT_NAME}\")", path)
        version = data.get("format_version")
        software = data.get("software")
        written_by = software.get("version", "?") if isinstance(software, dict) else "?"
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise SoftsegError(
                f"model format version {version!r} (written by napari-softseg {written_by}) is not supported by "
                f"this napari-softseg {__version__}, which reads format {FORMAT_VERSION}; upgrade napari-softseg",
                path,
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known - {"format", "format_version"})
        if unknown:
            raise SoftsegError(f"unknown field(s) {', '.join(map(repr, unknown[:5]))} in the model config "
                               "(misspelt, or written by another program?)", path)
        fields = {k: v for k, v in data.items() if k in known}
        try:
            return cls(**fields)
        except SoftsegError as exc:
            raise SoftsegError(exc.message, path) from None
        except (TypeError, ValueError, AttributeError, KeyError, RecursionError, OverflowError) as exc:
            raise SoftsegError(f"invalid model config: {type(exc).__name__}: {str(exc)[:200]}", path) from None


@dataclass
class LoadedModel:
    """A network ready for inference (evaluation mode, float32, on the CPU) and its config."""

    network: Any
    config: ModelConfig
    path: Path | None = None


def new_network(config: ModelConfig):
    """An untrained network for ``config`` (float32, CPU)."""
    from napari_softseg.model.unet import build_network  # imports torch


    return build_network(config.architecture)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and :func:`os.replace`.

    On any failure (a full disk, Ctrl-C) the temporary file is removed and ``path`` keeps its previous
    content.

    Raises:
        OSError: Writing failed (the caller turns it into a user message).
    """
    with atomic_destination(path, overwrite=True) as tmp:
        write_bytes_synced(tmp, data)
    return Path(path)


def save_tensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> Path:
    """Atomically write tensors (and JSON-able ``metadata``) as one safetensors file."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {"json": json.dumps(metadata or {})}
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def _refuse_foreign(path: Path) -> None:
    raise SoftsegError(
        "is a PyTorch pickle checkpoint; napari-softseg never opens pickles (they can run code). "
        f"A napari-softseg model is a folder with {WEIGHTS_FILE} + {CONFIG_FILE}",
        path,
    )


def _looks_like_pickle(path: Path) -> bool:
    """Whether a file is a pickle or ``torch.save`` zip (checked by its first bytes, never by unpickling).

    A safetensors file starts with an 8-byte little-endian header length followed by ``{``; anything else
    starting like a pickle (protocol 2+) or a zip archive is treated as a foreign checkpoint.
    """
    with open(path, "rb") as handle:
        head = handle.read(9)
    size = path.stat().st_size
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return False
    return head.startswith(_PICKLE_MAGIC)


def load_tensors(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read a safetensors file written by :func:`save_tensors`: ``(tensors, metadata)``.

    Raises:
        SoftsegError: Missing file, a pickle in disguise, or not valid safetensors.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise SoftsegError("file not found", path)
    if _looks_like_pickle(path):
        _refuse_foreign(path)

    size = path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise SoftsegError(f"weights file is {size / 2**30:.1f} GiB; a napari-softseg model is far smaller", path)
    check_memory(2 * size, "loading these weights", path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises SafetensorError / OSError / ValueError for bad files
        raise SoftsegError(f"not a valid safetensors file ({str(exc).strip() or type(exc).__name__})", path) from None
    try:
        meta = json.loads(metadata.get("json", "{}"))
    except json.JSONDecodeError:
        raise SoftsegError("safetensors metadata is not valid JSON", path) from None
    return tensors, meta


def save_model(model_dir: str | os.PathLike, network, config: ModelConfig) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``manifest.json`` into ``model_dir``.

    Each file is replaced atomically, and ``manifest.json`` (written last) holds the SHA-256 of the
    other two: the loader refuses a folder whose weights do not match its manifest, so a crash between
    the files can never pair new weights with old metadata (the pair either verifies or is refused
    with a message saying how to recover).

    Args:
        model_dir: Folder (created if needed). Existing model files in it are replaced.
        network: The trained network (any device).
        config: Its description; ``config.weights_dtype`` chooses float16 or float32 storage.

    Returns:
        ``model_dir`` as a Path.

    Raises:
        SoftsegError: Writing failed (e.g. the disk is full); the previous files are left as they were.
    """
    import torch
    from safetensors.torch import save

    model_dir = Path(model_dir)
    store = torch.float16 if config.weights_dtype == "float16" else torch.float32
    tensors = {
        key: (value.to(store) if value.is_floating_point() else value).detach().contiguous().cpu()
        for key, value in network.state_dict().items()
    }
    weights = save(tensors, metadata={"json": json.dumps({"format": FORMAT_NAME, "format_version": FORMAT_VERSION})})
    config_bytes = (json.dumps(config.to_dict(), indent=2) + "\n").encode()
    _write_model_files(model_dir, {WEIGHTS_FILE: weights, CONFIG_FILE: config_bytes})
    return model_dir


def save_config(model_dir: str | os.PathLike, config: ModelConfig) -> Path:
    """Atomically (re)write ``MODEL_DIR/config.json`` alone (e.g. a new temperature) and its manifest entry.

    Raises:
        SoftsegError: Writing failed; the previous file is left as it was.
    """
    model_dir = Path(model_dir)
    _write_model_files(model_dir, {CONFIG_FILE: (json.dumps(config.to_dict(), indent=2) + "\n").encode()})
    return model_dir


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_model_files(model_dir: Path, contents: dict[str, bytes]) -> None:
    """Replace some model files atomically, then the manifest that binds them (written last)."""
    sums = {}
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            if name in contents:
                sums[name] = hashlib.sha256(contents[name]).hexdigest()
            elif (model_dir / name).is_file():
                sums[name] = sha256_file(model_dir / name)
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            if name in contents:
                atomic_write_bytes(model_dir / name, contents[name])
                crash_point(f"model-after-{name}")
        manifest = {"format": FORMAT_NAME, "files": sums}
        atomic_write_bytes(model_dir / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
    except SoftsegError as exc:
        raise SoftsegError(f"could not write the model: {exc.message}", model_dir) from None
    except OSError as exc:
        raise SoftsegError(f"could not write the model: {exc.strerror or exc}", model_dir) from None


def verify_manifest(model_dir: str | os.PathLike) -> None:
    """Check ``model.safetensors`` and ``config.json`` against ``manifest.json`` (when there is one).

    Folders without a manifest (models written by napari-softseg before it had one) are accepted.

    Raises:
        SoftsegError: A file differs from its checksum: the folder was interrupted while being
            rewritten (or changed by hand).
    """

    model_dir = Path(model_dir)
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        return
    manifest = read_json_object(path, "model manifest", max_bytes=2**20)
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise SoftsegError("model manifest has no valid \"files\" checksums", path)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        want = files.get(name)
        if want is None:
            continue
        try:
            have = sha256_file(model_dir / name)
        except OSError as exc:
            raise SoftsegError(f"cannot read: {exc.strerror or exc}", model_dir / name) from None
        if have != want:
            raise SoftsegError(
                f"does not match {MANIFEST_FILE} (the model folder was interrupted while being written, or the "
                "file was changed afterwards); continue an interrupted training with --resume, or retrain",
                model_dir / name,
            )


def read_config(model_dir: str | os.PathLike) -> ModelConfig:
    """Read and check ``MODEL_DIR/config.json`` (see :func:`load_model` for what is refused)."""
    model_dir = _model_dir(Path(model_dir))

    path = model_dir / CONFIG_FILE
    data = read_json_object(path, "model config", max_bytes=4 * 2**20)
    return ModelConfig.from_dict(data, path)


def _model_dir(path: Path) -> Path:
    """Resolve what the user gave (model folder, its config or weights file) to the model folder."""
    if not path.exists():
        raise SoftsegError("model not found", path)
    if path.is_file():
        if path.name in (WEIGHTS_FILE, CONFIG_FILE):
            path = path.parent
        elif path.suffix.lower() in PICKLE_SUFFIXES or _looks_like_pickle(path):
            _refuse_foreign(path)
        else:
            raise SoftsegError(f"not a napari-softseg model (expected a folder with {WEIGHTS_FILE} + {CONFIG_FILE})", path)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (path / name).is_file()]
    if missing:
        foreign = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        hint = f"; found {', '.join(foreign)}, which napari-softseg does not open (pickles can run code)" if foreign else ""
        raise SoftsegError(f"not a napari-softseg model folder: {' and '.join(missing)} missing{hint}", path)
    return path


def load_model(model_dir: str | os.PathLike) -> LoadedModel:
    """Load a model for inference without unpickling anything.

    Args:
        model_dir: The model folder (or its ``config.json`` / ``model.safetensors``).

    Returns:
        The network in evaluation mode on the CPU (float32) with its config.

    Raises:
        SoftsegError: Missing files, a foreign/pickle checkpoint, invalid safetensors, an unsupported
            format version or architecture, or weights that do not fit the architecture.
    """
    import torch

    model_dir = _model_dir(Path(model_dir))
    config = read_config(model_dir)
    weights_path = model_dir / WEIGHTS_FILE
    tensors, _ = load_tensors(weights_path)
    network = new_network(config)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            details.append(f"{len(wrong)} of wrong shape (e.g. {k}: {tuple(tensors[k].shape)} vs {tuple(expected[k].shape)})")
        raise SoftsegError(
            f"weights do not match the architecture in {CONFIG_FILE} ({'; '.join(details)})", weights_path
        )
    check_weights(tensors, expected, weights_path)
    verify_manifest(model_dir)  # last: a damaged file is named for what is wrong with it first
    state = {k: (v.to(torch.float32) if v.is_floating_point() else v) for k, v in tensors.items()}
    network.load_state_dict(state, strict=True)
    network.eval()
    return LoadedModel(network=network, config=config, path=model_dir)


def check_weights(tensors: dict, expected: dict, path: str | os.PathLike | None = None) -> None:
    """Refuse weights that would give a silently wrong map.

    Every tensor the network holds as floating point must be stored as floating point (float16,
    bfloat16, float32 or float64), finite, and smaller in magnitude than :data:`MAX_WEIGHT_MAGNITUDE`;
    integer buffers must be integers.

    Raises:
        SoftsegError: Naming the file, the first offending tensor and what is wrong with it.
    """
    import torch

    for key, want in expected.items():
        have = tensors[key]
        if want.is_floating_point():
            if not have.is_floating_point():
                raise SoftsegError(f"weight {key} is stored as {str(have.dtype).replace('torch.', '')}; expected "
                                   "floating-point values", path)
            values = have.to(torch.float64) if have.dtype != torch.float64 else have
            if not bool(torch.isfinite(values).all()):
                bad = int((~torch.isfinite(values)).sum())
                raise SoftsegError(f"weight {key} holds {bad} NaN or infinite value(s)", path)
            top = float(values.abs().max()) if values.numel() else 0.0
            if top > MAX_WEIGHT_MAGNITUDE:
                raise SoftsegError(f"weight {key} holds values up to {top:.3g}; trained weights stay far below "
                                   f"{MAX_WEIGHT_MAGNITUDE:g} (damaged file?)", path)
        elif have.is_floating_point() or have.dtype == torch.bool:
            raise SoftsegError(f"buffer {key} is stored as {str(have.dtype).replace('torch.', '')}; expected "
                               f"{str(want.dtype).replace('torch.', '')}", path)
