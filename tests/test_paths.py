"""``course_lib.paths``: the data and runs folders (argument, environment, checkout, user folder)."""

from pathlib import Path

import pytest

from course_lib import paths

KINDS = [("data", "COURSE_DATA_DIR", paths.resolve_data_dir), ("runs", "COURSE_RUNS_DIR", paths.resolve_out_dir)]


@pytest.mark.parametrize("kind,env_var,resolve", KINDS)
def test_folder_is_argument_then_environment_then_checkout(monkeypatch, tmp_path, kind, env_var, resolve):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(env_var, str(tmp_path / "from-env"))
    assert resolve(tmp_path / "given") == tmp_path / "given"
    assert resolve() == tmp_path / "from-env"
    monkeypatch.setenv(env_var, "")  # set but empty counts as unset
    assert resolve("") == Path(paths.__file__).resolve().parent.parent / kind
    monkeypatch.delenv(env_var)
    checkout = Path(paths.__file__).resolve().parent.parent
    assert resolve() == checkout / kind  # not the working directory
    assert paths.repo_root() == checkout


@pytest.mark.parametrize("kind,env_var,resolve", KINDS)
def test_folder_outside_a_checkout_is_a_per_user_folder(monkeypatch, tmp_path, kind, env_var, resolve):
    monkeypatch.delenv(env_var, raising=False)
    monkeypatch.setattr(paths, "repo_root", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert resolve() == tmp_path / "cache" / "course_lib" / kind
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve() == tmp_path / "home" / ".cache" / "course_lib" / kind


def test_a_user_folder_argument_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert paths.resolve_data_dir("~/mnist") == tmp_path / "mnist"
