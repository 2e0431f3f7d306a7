"""The resumable hashes agree with hashlib whatever the split of the data and however often
their state is saved and restored in between."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from releases.hashstate import ResumableHash


@pytest.mark.parametrize("name", ["md5", "sha256"])
def test_it_gives_hashlibs_digest_of_nothing(name):
    assert ResumableHash(name).hexdigest() == hashlib.new(name).hexdigest()


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(["md5", "sha256"]),
    pieces=st.lists(st.binary(max_size=300), max_size=12),
)
def test_a_saved_and_restored_state_hashes_like_one_hashlib_pass(name, pieces):
    whole = hashlib.new(name)
    resumed = ResumableHash(name)
    for piece in pieces:
        resumed = ResumableHash.from_state(name, resumed.state())
        resumed.update(piece)
        whole.update(piece)
        assert resumed.hexdigest() == whole.hexdigest()  # a digest does not end the hash


def test_it_hashes_megabytes_across_restores_like_hashlib():
    data = bytes(range(256)) * 40_000  # 10 MB, chunks not multiples of the block size
    state = {"md5": ResumableHash("md5").state(), "sha256": ResumableHash("sha256").state()}
    for start in range(0, len(data), 1_000_003):
        for name in state:
            h = ResumableHash.from_state(name, state[name])
            h.update(data[start : start + 1_000_003])
            state[name] = h.state()
    for name, saved in state.items():
        assert (
            ResumableHash.from_state(name, saved).hexdigest() == hashlib.new(name, data).hexdigest()
        )


def test_a_state_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="saved md5 state"):
        ResumableHash.from_state("md5", b"\0" * 10)
