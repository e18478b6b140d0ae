"""The WebDataset loader of the pre-training harness: fixed length per rank, coverage, determinism,
exact resume, safe decoding (DESIGN.md §9), and the synthetic build folders of ``train_data``."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from train_data import make_samples, write_dataset  # noqa: E402

from als_datasets.errors import InputError  # noqa: E402
from als_datasets.train.info import DatasetInfo  # noqa: E402
from als_datasets.train.loader import (  # noqa: E402
    batches_per_rank,
    decode_npy,
    decode_sample,
    iter_raw,
    iter_samples,
    loader_for,
    make_loader,
    pad_collate,
    worker_batch_counts,
)


def keys_collate(samples, rng):
    """Batch = the sample keys plus one draw of the batch rng (checks the rng seeding too)."""
    return {"keys": [s["__key__"] for s in samples], "r": int(rng.integers(1 << 30))}


def _ds(tmp_path, name="ds", kind="als", n_train=25, shard_size=(7, 5, 9, 3, 1), **kw) -> DatasetInfo:
    kw.setdefault("n_points", 150)
    kw.setdefault("patch_size_px", 8)
    root = write_dataset(tmp_path / name, kind, n_train=n_train, n_val=kw.pop("n_val", 4),
                         shard_size=list(shard_size) if not isinstance(shard_size, int) else shard_size, **kw)
    return DatasetInfo.from_folder(root)


def _epoch(info, bs, world, nw, seed=3, epoch=0, buf=8):
    """All ranks' batches of one epoch: {rank: [batch, ...]}."""
    return {r: list(make_loader(info, "train", bs, keys_collate, seed=seed, epoch=epoch, rank=r, world_size=world,
                                num_workers=nw, shuffle_buffer=buf))
            for r in range(world)}


# --------------------------------------------------------------------------------------------
# bookkeeping
# --------------------------------------------------------------------------------------------
def test_batch_counts_pure():
    assert batches_per_rank(25, 3, 1) == 8
    assert batches_per_rank(25, 3, 4) == 2
    assert batches_per_rank(3, 4, 4) == 1  # fewer samples than one global batch: still one batch
    assert batches_per_rank(0, 4, 2) == 0
    counts = worker_batch_counts(7, 3)
    assert counts == [(0, 3), (0, 2), (0, 2)]
    assert worker_batch_counts(7, 3, start_batch=4) == [(2, 1), (1, 1), (1, 1)]
    assert sum(t for _, t in worker_batch_counts(7, 3, 5)) == 2


# --------------------------------------------------------------------------------------------
# fixed length per rank, coverage
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_len_equal_per_rank_uneven_shards(tmp_path, world):
    info = _ds(tmp_path)  # 25 samples in 5 uneven shards
    bs = 3
    for nw in (0, 1, 2):
        per_rank = _epoch(info, bs, world, nw)
        expect = 25 // (world * bs)
        for r, batches in per_rank.items():
            loader = make_loader(info, "train", bs, keys_collate, seed=3, rank=r, world_size=world, num_workers=nw)
            assert len(loader) == expect
            assert len(batches) == expect, (world, nw, r)
            assert all(len(b["keys"]) == bs for b in batches)


@pytest.mark.parametrize("world,nw,shards", [(1, 0, 8), (2, 0, 8), (2, 2, 8), (4, 0, 8), (2, 2, 2), (4, 0, 1)])
def test_union_covers_split_without_duplicates(tmp_path, world, nw, shards):
    n = 48
    info = _ds(tmp_path, n_train=n, shard_size=n // shards)
    bs = 4 if n % (world * max(1, nw) * 4) == 0 else 2
    per_rank = _epoch(info, bs, world, nw)
    seen = [k for batches in per_rank.values() for b in batches for k in b["keys"]]
    stored = [s["__key__"] for s in iter_samples(info, "train")]
    assert len(seen) == n and sorted(seen) == sorted(stored)


def test_fewer_shards_than_workers(tmp_path):
    info = _ds(tmp_path, n_train=20, shard_size=20)  # one shard, 2 ranks × 2 workers
    per_rank = _epoch(info, 5, 2, 2)
    assert [len(v) for v in per_rank.values()] == [2, 2]
    seen = Counter(k for v in per_rank.values() for b in v for k in b["keys"])
    assert len(seen) == 20 and set(seen.values()) == {1}


def test_fewer_samples_than_global_workers_still_yields(tmp_path):
    info = _ds(tmp_path, n_train=3, shard_size=3)
    per_rank = _epoch(info, 1, 4, 0)
    assert [len(v) for v in per_rank.values()] == [1, 1, 1, 1]
    per_rank = _epoch(info, 2, 2, 2)  # wraps around inside the worker to fill the batch
    assert all(len(v) == 1 and len(v[0]["keys"]) == 2 for v in per_rank.values())


# --------------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------------
def test_order_depends_on_seed_and_epoch_only(tmp_path):
    info = _ds(tmp_path, n_train=40, shard_size=5)

    def order(seed, epoch, nw=0):
        return [k for b in make_loader(info, "train", 4, keys_collate, seed=seed, epoch=epoch, num_workers=nw,
                                       shuffle_buffer=16) for k in b["keys"]]

    a = order(0, 0)
    assert a == order(0, 0)
    assert a == order(0, 0, nw=0)
    assert a != order(0, 1)
    assert a != order(1, 0)
    assert sorted(a) == sorted(order(0, 1))  # 40 samples, one worker: a permutation of the split
    assert order(5, 2, nw=2) == order(5, 2, nw=2)


def test_batch_rng_differs_per_rank_and_batch(tmp_path):
    info = _ds(tmp_path, n_train=32, shard_size=8)
    per_rank = _epoch(info, 4, 2, 1)
    draws = [b["r"] for v in per_rank.values() for b in v]
    assert len(set(draws)) == len(draws)


def test_eval_mode_keeps_stored_order(tmp_path):
    info = _ds(tmp_path, n_train=24, shard_size=[10, 8, 6])
    stored = [s["__key__"] for s in iter_samples(info, "train")]
    got = [k for b in make_loader(info, "train", 4, keys_collate, seed=0, train=False) for k in b["keys"]]
    assert got == stored


# --------------------------------------------------------------------------------------------
# exact resume
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nw", [0, 1, 2])
def test_resume_equals_tail_of_uninterrupted_run(tmp_path, nw):
    info = _ds(tmp_path, n_train=38, shard_size=[9, 9, 9, 9, 2])
    full = list(make_loader(info, "train", 3, keys_collate, seed=7, epoch=2, num_workers=nw, shuffle_buffer=5))
    assert len(full) == 12
    for k in (1, 4, 5, 11, 12):
        loader = make_loader(info, "train", 3, keys_collate, seed=7, epoch=2, num_workers=nw, shuffle_buffer=5,
                             start_batch=k)
        assert len(loader) == 12 and loader.remaining == 12 - k
        assert list(loader) == full[k:], k


def test_resume_does_not_collate_skipped_batches(tmp_path):
    info = _ds(tmp_path, n_train=30, shard_size=6)
    calls = []

    def counting(samples, rng):
        calls.append(1)
        return keys_collate(samples, rng)

    full = list(make_loader(info, "train", 2, counting, seed=1, world_size=2, rank=1))
    calls.clear()
    tail = list(make_loader(info, "train", 2, counting, seed=1, world_size=2, rank=1, start_batch=5))
    assert tail == full[5:] and len(calls) == len(full) - 5
    with pytest.raises(ValueError):
        make_loader(info, "train", 2, counting, seed=1, start_batch=99)


def test_at_moves_the_position(tmp_path):
    info = _ds(tmp_path, n_train=20, shard_size=5)
    loader = make_loader(info, "train", 2, keys_collate, seed=4)
    assert list(loader.at(1, 3)) == list(make_loader(info, "train", 2, keys_collate, seed=4, epoch=1))[3:]


# --------------------------------------------------------------------------------------------
# safe decoding
# --------------------------------------------------------------------------------------------
def _npy(arr, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _bad_folder(tmp_path, members: list[tuple[str, bytes]], corrupt=None, first=False) -> tuple[DatasetInfo, Path]:
    """A valid one-shard folder plus a shard holding ``members`` (or ``corrupt`` bytes), listed
    last (or ``first``) in ``_info.json``."""
    info = _ds(tmp_path, n_train=4, shard_size=4, n_val=0)
    root = Path(info.root)
    bad = root / "webdataset/train/shard-000001.tar"
    if corrupt is not None:
        bad.write_bytes(corrupt)
    else:
        with tarfile.open(bad, "w") as tar:
            for name, data in members:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
    meta = json.loads((root / "_info.json").read_text())
    sp = meta["splits"]["train"]
    at = 0 if first else len(sp["filenames"])
    sp["filenames"].insert(at, "webdataset/train/shard-000001.tar")
    sp["shard_lengths"].insert(at, 1)
    sp["num_samples"] += 1
    (root / "_info.json").write_text(json.dumps(meta))
    return DatasetInfo.from_folder(root), bad


GOOD = [("k1.json", b'{"a": 1}'), ("k1.xyz.npy", _npy(np.zeros((3, 3), np.float32)))]


@pytest.mark.parametrize("name,data,needle", [
    ("k1.pickle", b"\x80\x04N.", ".pickle members are refused"),
    ("k1.pkl", b"\x80\x04N.", ".pkl members are refused"),
    ("k1.pth", b"PK\x03\x04", ".pth members are refused"),
    ("k1.model.pt", b"PK\x03\x04", ".pt members are refused"),
    ("k1.cls", b"3", ".cls members are refused"),
    ("k1", b"x", "no extension"),
    ("k1.obj.npy", _npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), "cannot decode"),
    ("k1.zip.npy", b"PK\x03\x04" + b"\0" * 40, "cannot decode"),
    ("k1.json", b"{not json", "cannot decode"),
])
@pytest.mark.parametrize("nw", [0, 1])
def test_forbidden_members_refused_naming_the_shard(tmp_path, name, data, needle, nw):
    members = [m for m in GOOD if not (name.endswith(".json") and m[0].endswith(".json"))] + [(name, data)]
    info, bad = _bad_folder(tmp_path, members)
    with pytest.raises(InputError) as ei:
        list(make_loader(info, "train", 1, keys_collate, seed=0, num_workers=nw, train=False))
    msg = str(ei.value)
    assert "\n" not in msg and ei.value.path == str(bad) and needle in msg, msg
    with pytest.raises(InputError):
        list(iter_samples(info, "train"))


def test_forbidden_member_refused_even_when_skipped(tmp_path):
    info, bad = _bad_folder(tmp_path, GOOD + [("k1.pth", b"x")], first=True)  # sample 0 is bad
    with pytest.raises(InputError, match="pth members are refused"):
        list(make_loader(info, "train", 1, keys_collate, seed=0, start_batch=2, train=False))


@pytest.mark.parametrize("kind", ["garbage", "truncated", "missing"])
def test_corrupt_tar_refused(tmp_path, kind):
    src = tmp_path / "src.tar"
    with tarfile.open(src, "w") as tar:
        for name, data in GOOD + [("k2.big.npy", _npy(np.arange(5000, dtype=np.float64)))]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    raw = src.read_bytes()
    corrupt = {"garbage": b"this is not a tar" * 100, "truncated": raw[: len(raw) // 2], "missing": b""}[kind]
    info, bad = _bad_folder(tmp_path, [], corrupt=corrupt)
    if kind == "missing":
        bad.unlink()
    for nw in (0, 1):
        with pytest.raises(InputError) as ei:
            list(make_loader(info, "train", 1, keys_collate, seed=0, num_workers=nw))
        assert ei.value.path == str(bad) and "\n" not in str(ei.value)


# --------------------------------------------------------------------------------------------
# .npy decoding without a second copy
# --------------------------------------------------------------------------------------------
def _npy_cases():
    rng = np.random.default_rng(0)
    yield np.arange(12, dtype=np.float32).reshape(3, 4)
    for dt in ("<i1", "<u2", "<i4", ">i4", "<u8", ">f8", "<f2", "|b1", "<c8", ">c16", "<M8[ns]", "<m8[s]",
               "<U5", "|S3", "|V4"):
        yield rng.integers(0, 100, (4, 3)).astype(dt)
    yield np.float64(2.5) * np.ones(())  # 0-d
    yield np.array(7, dtype=np.uint16)  # 0-d integer
    yield np.zeros((0, 3), np.float32)  # empty
    yield np.zeros((5, 0), ">i2")
    yield np.zeros(0, np.uint8)
    yield np.asfortranarray(rng.normal(size=(5, 7)).astype(np.float32))  # fortran_order
    yield np.asfortranarray(rng.normal(size=(2, 3, 4)))
    yield rng.normal(size=(2, 3, 4, 5)).astype(np.float32).transpose(2, 0, 3, 1)  # neither: written C order
    yield np.arange(10 ** 5, dtype=np.int64).reshape(10, -1)  # large first axis digits
    yield np.zeros(3, dtype=[("a", "<f4"), ("b", "u1", (2,))])  # structured: numpy's header reader
    yield np.zeros((2, 2), dtype=[("x", ">i8")])


@pytest.mark.parametrize("version", [None, (1, 0), (2, 0), (3, 0)])
def test_decode_npy_equals_np_load(version):
    for arr in _npy_cases():
        buf = io.BytesIO()
        np.lib.format.write_array(buf, arr, version=version, allow_pickle=False)
        raw = buf.getvalue()
        ref = np.load(io.BytesIO(raw), allow_pickle=False)
        for data in (bytearray(raw), raw):  # bytes: read-only, so copied once
            got = decode_npy(data)
            assert got.dtype == ref.dtype and got.shape == ref.shape, (arr.dtype, arr.shape)
            assert np.array_equal(got, ref) if ref.dtype.kind != "V" else got.tobytes() == ref.tobytes()
            assert got.flags.c_contiguous == ref.flags.c_contiguous
            assert got.flags.f_contiguous == ref.flags.f_contiguous
            assert got.flags.writeable and got.flags.aligned


def test_decode_npy_builds_on_the_buffer_without_copy():
    raw = bytearray(_npy(np.arange(1000, dtype=np.float32).reshape(100, 10)))
    arr = decode_npy(raw)
    assert np.shares_memory(arr, np.frombuffer(raw, np.uint8))
    arr[0, 0] = 42.0  # writable, in place
    assert np.load(io.BytesIO(bytes(raw)))[0, 0] == 42.0
    # an odd header length leaves the data unaligned: then it is copied once (aligned, writable)
    a = np.arange(6, dtype=np.float64)
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (6,), }" + b" " * 6 + b"\n"
    odd = bytearray(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + a.tobytes())
    assert (10 + len(header)) % 8 and np.array_equal(decode_npy(odd), a) and decode_npy(odd).flags.aligned
    # trailing bytes after the data are ignored, like numpy
    assert np.array_equal(decode_npy(bytearray(_npy(a) + b"xyz")), a)


@pytest.mark.parametrize("arr", [np.array([{"a": 1}, None], dtype=object),
                                 np.zeros(2, dtype=[("a", "<f4"), ("b", object)]),
                                 np.zeros((2, 2), dtype=object)])
def test_decode_npy_refuses_object_arrays(arr):
    raw = _npy(arr, allow_pickle=True)
    with pytest.raises(ValueError, match="Object arrays cannot be loaded when allow_pickle=False"):
        np.load(io.BytesIO(raw), allow_pickle=False)
    with pytest.raises(ValueError, match="Object arrays cannot be loaded when allow_pickle=False"):
        decode_npy(bytearray(raw))
    with pytest.raises(InputError, match="cannot decode"):
        decode_sample("s.tar", "k", {"o.npy": bytearray(raw)})


def test_decode_npy_refuses_short_and_bad_data():
    raw = _npy(np.arange(100, dtype=np.int32))
    with pytest.raises(ValueError, match="EOF"):
        decode_npy(bytearray(raw[:-4]))
    # a header claiming a huge shape fails on the length check, without allocating it
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }\n"
    with pytest.raises(ValueError, match="EOF"):
        decode_npy(bytearray(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 8))
    for bad in (b"PK\x03\x04" + b"\0" * 40, b"\x93NUMPY\x09\x00" + b"\0" * 40, b"",
                b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8'}"):
        with pytest.raises(ValueError):
            decode_npy(bytearray(bad))


def _tar_bytes(members, fmt=tarfile.PAX_FORMAT, dirs=(), links=()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            tar.addfile(ti)
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.uid = len(data), 1_700_000_000, 1000
            tar.addfile(ti, io.BytesIO(data))
        for name in links:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = tarfile.SYMTYPE, "x"
            tar.addfile(ti)
    return buf.getvalue()


def _tarfile_raw(path):
    """Reference: the samples as plain tarfile reads them (the loader's former reader), and
    whether it ended in an error."""
    out, key, fields = [], None, {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if m.isdir():
                    continue
                if not m.isfile():
                    return out, "not a regular file"
                k, field = m.name.rsplit("/", 1)[0] + "/" + m.name.rsplit("/", 1)[1].split(".", 1)[0], \
                    m.name.rsplit("/", 1)[1].split(".", 1)[1]
                data = tar.extractfile(m).read()
                if k != key:
                    if key is not None:
                        out.append((key, fields))
                    key, fields = k, {}
                fields[field] = data
    except (tarfile.TarError, OSError, EOFError):
        return out, "error"
    if key is not None:
        out.append((key, fields))
    return out, None


def _raw(path):
    out = []
    try:
        for key, fields in iter_raw(path):
            out.append((key, {f: bytes(v) for f, v in fields.items()}))
    except InputError as exc:
        assert exc.path == str(path) and "\n" not in str(exc)
        return out, "not a regular file" if "not a regular file" in exc.reason else "error"
    return out, None


def test_iter_raw_reads_what_tarfile_reads(tmp_path):
    """The direct ustar header parser hands anything unusual to tarfile: same samples, same errors."""
    long = "d/" + "x" * 60 + "/" + "y" * 60 + "/k3"  # > 100 characters: ustar prefix, pax or GNU record
    members = [("d/k1.json", b'{"a": 1}'), ("d/k1.xyz.npy", _npy(np.arange(300, dtype=np.float32))),
               ("d/k2.json", b"{}"), ("d/k2.e.npy", _npy(np.zeros(0, np.uint8))), (long + ".json", b"[1]"),
               ("d/k4.json", b"{}")]
    cases = {f"fmt{fmt}": _tar_bytes(members, fmt) for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT,
                                                                 tarfile.USTAR_FORMAT)}
    cases["dirs"] = _tar_bytes(members, dirs=["d", "d/e/"])
    cases["link"] = _tar_bytes(members[:2], links=["d/k9.json"])
    cases["utf8"] = _tar_bytes([("d/kü.json", b"{}"), ("d/kü.a.npy", _npy(np.ones(3)))])
    base = cases[f"fmt{tarfile.PAX_FORMAT}"]
    for cut in sorted({*range(0, len(base), 211), 512, 1024, len(base) - 1024, len(base) - 1}):
        cases[f"cut{cut}"] = base[:cut]
    bad = bytearray(base)
    bad[2048 + 148] ^= 1  # a checksum digit of a later header
    cases["badsum"] = bytes(bad)
    bad = bytearray(base)
    bad[1536 + 130] = ord("9")  # a non-octal size digit
    cases["badsize"] = bytes(bad)
    cases["garbage"] = b"not a tar" * 300
    for name, data in cases.items():
        p = tmp_path / f"{name}.tar"
        p.write_bytes(data)
        ref = _tarfile_raw(p)
        assert _raw(p) == ref, name
    assert len(_tarfile_raw(tmp_path / f"fmt{tarfile.USTAR_FORMAT}.tar")[0]) == 4


def test_iter_raw_reads_plain_and_compressed_tars(tmp_path):
    members = GOOD + [("k2.big.npy", _npy(np.arange(5000, dtype=np.float64))), ("k2.json", b"{}")]
    for mode, name in (("w", "a.tar"), ("w:gz", "a.tar.gz")):
        with tarfile.open(tmp_path / name, mode) as tar:
            for n, data in members:
                ti = tarfile.TarInfo(n)
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
        raw = list(iter_raw(tmp_path / name))
        assert [k for k, _ in raw] == ["k1", "k2"]
        assert all(isinstance(v, bytearray) for _, f in raw for v in f.values())
        assert raw[1][1]["big.npy"] == members[2][1]
        s = decode_sample(name, *raw[1])
        assert np.array_equal(s["big.npy"], np.arange(5000.0)) and s["json"] == {}


# --------------------------------------------------------------------------------------------
# persistent workers
# --------------------------------------------------------------------------------------------
def pid_collate(samples, rng):
    import os

    return {**keys_collate(samples, rng), "pid": os.getpid()}


def test_persistent_workers_give_the_batches_of_a_fresh_loader(tmp_path):
    info = _ds(tmp_path, n_train=38, shard_size=[9, 9, 9, 9, 2])
    kw = {"seed": 7, "num_workers": 2, "shuffle_buffer": 5}
    loader = make_loader(info, "train", 3, pid_collate, persistent_workers=True, **kw)
    pids = set()

    def strip(batches):
        pids.update(b.pop("pid") for b in batches)
        return batches

    for epoch, start in [(0, 0), (1, 0), (2, 4), (1, 11), (3, 12), (0, 0)]:
        fresh = strip(list(make_loader(info, "train", 3, pid_collate, epoch=epoch, start_batch=start, **kw)))
        pids.clear()
        assert strip(list(loader.at(epoch, start))) == fresh, (epoch, start)
        assert len(pids) <= 2
        if epoch == 0 and start == 0:
            first_pids = set(pids)
        assert pids <= first_pids  # the same two processes every epoch
    it = iter(loader.at(5))  # an epoch abandoned mid-way does not leak into the next one
    next(it)
    del it
    loader.set_epoch(6, 2)
    assert strip(list(loader)) == strip(list(make_loader(info, "train", 3, pid_collate, epoch=6, start_batch=2,
                                                         **kw)))
    loader.close()
    assert strip(list(loader.at(1))) == strip(list(make_loader(info, "train", 3, pid_collate, epoch=1, **kw)))
    loader.close()
    with pytest.raises(ValueError):
        loader.set_epoch(0, 99)


def test_persistent_workers_report_bad_members(tmp_path):
    info, bad = _bad_folder(tmp_path, GOOD + [("k1.pkl", b"x")])
    loader = make_loader(info, "train", 1, keys_collate, seed=0, num_workers=1, train=False, persistent_workers=True)
    for epoch in (0, 1):  # the pool survives a failed epoch
        with pytest.raises(InputError, match="pkl members are refused") as ei:
            list(loader.at(epoch))
        assert ei.value.path == str(bad)
    loader.close()


# --------------------------------------------------------------------------------------------
# decoding, collate helpers, model binding
# --------------------------------------------------------------------------------------------
def test_iter_samples_decodes_every_member(tmp_path):
    info = _ds(tmp_path, n_train=6, shard_size=4, n_val=2)
    samples = list(iter_samples(info, "train"))
    assert len(samples) == 6 and len(list(iter_samples(info, "validation"))) == 2
    s = samples[0]
    assert set(s) == {"__key__", "json", "xyz.npy", "intensity.npy", "return_number.npy",
                      "number_of_returns.npy", "classification.npy"}
    assert s["xyz.npy"].dtype == np.float32 and s["xyz.npy"].shape[1] == 3
    assert s["intensity.npy"].dtype == np.uint16 and s["json"]["tile_id"] == s["__key__"]
    ref = make_samples("als", 6, 0, "train", n_points=150)
    assert [r["__key__"] for r in ref] == [x["__key__"] for x in samples]
    assert np.array_equal(ref[2]["xyz.npy"], samples[2]["xyz.npy"])


def test_pad_collate_pads_with_lengths(tmp_path):
    info = _ds(tmp_path, n_train=8, shard_size=8)
    b = next(iter(make_loader(info, "train", 4, pad_collate, seed=0, num_workers=1)))
    n = b["xyz.npy.lengths"]
    assert b["xyz.npy"].shape == (4, int(n.max()), 3) and b["xyz.npy"].dtype == torch.float32
    i = int(n.argmin())
    assert torch.all(b["xyz.npy"][i, int(n[i]):] == 0)
    sat = _ds(tmp_path, "sat", "satellite", n_train=6, shard_size=6)
    b = next(iter(make_loader(sat, "train", 3, pad_collate, seed=0, train=False)))
    assert b["pixels.npy"].dtype == torch.uint16  # S2 (13 bands) and L8 (7 bands) mixed → padded
    assert b["pixels.npy"].shape[1:] == (13, 8, 8) and b["pixels.npy.lengths"].tolist() == [13, 13, 7]


class _FakeModel:
    KIND = "als"

    @staticmethod
    def collate(samples, rng, config, info, train=True):
        return {"n": torch.tensor(len(samples)), "train": torch.tensor(train), "k": config["k"],
                "kind": info.kind}


def test_loader_for_binds_model_collate(tmp_path):
    info = _ds(tmp_path, n_train=12, shard_size=4)
    loader = loader_for(info, "train", _FakeModel, {"batch_size": 4, "k": 9}, seed=0)
    batches = list(loader)
    assert len(loader) == 3 and len(batches) == 3
    assert batches[0]["n"].item() == 4 and batches[0]["k"] == 9 and batches[0]["train"].item()
    ev = list(loader_for(info, "train", _FakeModel, {"batch_size": 4, "k": 1}, batch_size=6, train=False))
    assert len(ev) == 2 and not ev[0]["train"].item()


# --------------------------------------------------------------------------------------------
# the synthetic build folders themselves
# --------------------------------------------------------------------------------------------
def test_train_data_is_deterministic_and_valid(tmp_path):
    from als_datasets.dataset.layout import validate

    for kind in ("als", "satellite", "dem"):
        a = write_dataset(tmp_path / f"{kind}-a", kind, n_train=10, n_val=3, shard_size=4, n_points=200,
                          patch_size_px=16)
        b = write_dataset(tmp_path / f"{kind}-b", kind, n_train=10, n_val=3, shard_size=4, n_points=200,
                          patch_size_px=16)
        assert validate(a) == []
        ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
        assert [s["sha256"] for s in ma["shards"]] == [s["sha256"] for s in mb["shards"]]
        info = DatasetInfo.from_folder(a)
        assert info.kind == kind and info.num_samples("train") == 10 and info.num_samples("validation") == 3
        keys = [s["__key__"] for sp in ("train", "validation") for s in iter_samples(info, sp)]
        assert len(set(keys)) == 13 and all("." not in k for k in keys)


def test_train_data_labels_are_learnable():
    als = make_samples("als", 45, seed=1, n_points=400)
    multi = {lc: [] for lc in ("developed", "forest", "other")}
    roofs = {lc: [] for lc in multi}
    for s in als:
        lc = s["json"]["landcover"]
        multi[lc].append(float(np.mean(s["number_of_returns.npy"] > 1)))
        roofs[lc].append(float(np.mean(s["classification.npy"] == 6)))
    assert min(multi["forest"]) > 0.9 and max(multi["developed"] + multi["other"]) == 0
    assert min(roofs["developed"]) > 0.3 and max(roofs["forest"] + roofs["other"]) == 0
    assert {s["json"]["stratum"] for s in als} == {f"{a}/{b}" for a in multi for b in ("flat", "sloped", "steep")}

    sat = make_samples("satellite", 24, seed=0, patch_size_px=16)
    assert {s["json"]["sensor"] for s in sat} == {"sentinel-2-l2a", "landsat-8-oli"}
    for s in sat:
        assert s["pixels.npy"].dtype == np.uint16 and len(s["json"]["bands"]) == len(s["pixels.npy"])
        assert len(s["json"]["common_bands"]) == len(s["json"]["bands"])
    red_nir = {}
    for s in sat:
        cb = s["json"]["common_bands"]
        px = s["pixels.npy"].astype(float)
        nir = px[cb.index("nir08")].mean()
        red_nir.setdefault(s["json"]["biome"], []).append(nir / max(px[cb.index("red")].mean(), 1))
    assert min(red_nir["Temperate Broadleaf & Mixed Forests"]) > 2 > max(red_nir["Tundra"])

    dem = make_samples("dem", 24, seed=0, patch_size_px=16)
    assert all(s["pixels.npy"].dtype == np.float32 and s["pixels.npy"].shape == (1, 16, 16) for s in dem)
    assert any(np.isnan(s["pixels.npy"]).any() for s in dem)
