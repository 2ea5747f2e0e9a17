"""The free-space check uses the real file system's numbers and says what is missing in human units."""

from __future__ import annotations

import os

import pytest

from vcbproxy import errors
from vcbproxy.staging.space import check_free_space, free_bytes, human_size


def test_human_size():
    assert human_size(0) == "0 B"
    assert human_size(1023) == "1023 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(int(1.2 * (1 << 30))) == "1.2 GiB"
    assert human_size(3 << 40) == "3.0 TiB"


def test_free_bytes_matches_statvfs(tmp_path):
    st = os.statvfs(tmp_path)
    assert abs(free_bytes(tmp_path) - st.f_bavail * st.f_frsize) < (
        64 << 20
    )  # others may write meanwhile
    # A directory not created yet is measured where it will be created.
    assert abs(free_bytes(tmp_path / "not" / "yet") - free_bytes(tmp_path)) < (64 << 20)


def test_enough_space_passes(tmp_path):
    assert check_free_space(tmp_path, 1 << 20) > 0


def test_too_little_space_is_refused_with_sizes(tmp_path):
    free = free_bytes(tmp_path)
    needed = free * 4 + (1 << 40)
    with pytest.raises(errors.StagingError) as info:
        check_free_space(tmp_path, needed)
    message = str(info.value)
    assert message.startswith(f"not enough space in staging {tmp_path}: ")
    assert f"the export needs up to {human_size(int(needed * 1.05))}" in message
    assert info.value.exit_code == errors.STAGING


def test_margin_counts(tmp_path):
    free = free_bytes(tmp_path)
    check_free_space(tmp_path, free // 2, margin=0.0)
    with pytest.raises(errors.StagingError):
        check_free_space(tmp_path, free // 2, margin=2.0)
