"""Where the files are (``implicitlab.data.paths``): the data root, an argument or a default, never
the environment; the cache folder from its argument, ``$IMPLICITLAB_CACHE`` or ``$XDG_CACHE_HOME``."""

from pathlib import Path

import numpy as np
import pytest

from implicitlab.data import DataError, load_cifar10, resolve_cache_dir, resolve_data_root

from fake_data import write_pickle_dir


def test_data_root_resolution(tmp_path, monkeypatch):
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("IMPLICITLAB_DATA", str(tmp_path / "env"))  # read by the CLI's option only, not here
    assert resolve_data_root() == Path("data")
    with pytest.raises(DataError, match=r"^data: no such file or folder"):
        load_cifar10(split="test", cache=False)  # the default root, named in the error
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert resolve_data_root() == Path("..") / "shared" / "data"
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_root("~/x") == Path.home() / "x"
    with pytest.raises(DataError, match=r"explicit: no such file or folder"):
        load_cifar10(tmp_path / "explicit", split="test", cache=False)  # the argument, named in the error


def test_data_root_argument_reaches_the_loader(tmp_path, data, monkeypatch):
    write_pickle_dir(tmp_path / "d", data)
    monkeypatch.chdir(tmp_path)  # no ./data, no ../shared/data next to it
    images, labels = load_cifar10(str(tmp_path / "d"), "test", cache=False)
    np.testing.assert_array_equal(images, data["test"][0])
    np.testing.assert_array_equal(labels, data["test"][1])


def test_cache_dir_from_environment(tmp_path, data, monkeypatch):
    write_pickle_dir(tmp_path / "d", data)
    monkeypatch.setenv("IMPLICITLAB_CACHE", str(tmp_path / "envcache"))
    assert resolve_cache_dir() == tmp_path / "envcache"
    assert resolve_cache_dir(tmp_path / "x") == tmp_path / "x"
    load_cifar10(tmp_path / "d", "test")
    assert len(list((tmp_path / "envcache").glob("*.npz"))) == 1
    monkeypatch.delenv("IMPLICITLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir() == tmp_path / "xdg" / "implicitlab"
