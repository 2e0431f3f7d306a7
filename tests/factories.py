"""Plain factories for tests: real files and real rows, no mocks."""

import bz2
import hashlib
import io
import json
import lzma
import tarfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from releases.uploads import StagedFile

PASSWORD = "correct horse battery staple"


def english_client(**kwargs):
    """A test client whose reader picked English in the menu (the browser's language is not
    used outside the API: `portal.language`)."""
    from django.conf import settings
    from django.test import Client

    client = Client(**kwargs)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    return client


def make_user(username, *roles, superuser=False):
    user = get_user_model().objects.create_user(username=username, password=PASSWORD)
    if superuser:
        user.is_superuser = user.is_staff = True
        user.save(update_fields=["is_superuser", "is_staff"])
    for role in roles:
        # get_or_create: transactional tests flush the groups the migration made.
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def tar_bytes(files: dict[str, bytes], *, pristine: str | None = "21021", extra=None) -> bytes:
    """An uncompressed tar holding `files` under versions/pristine/<pristine>/ (or the root)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        base = f"versions/pristine/{pristine}/" if pristine else ""
        if pristine:
            for folder in ("versions", "versions/pristine", base.rstrip("/")):
                info = tarfile.TarInfo(folder)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
        for path, data in files.items():
            info = tarfile.TarInfo(base + path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra or []:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    if compression == "bz2":
        return bz2.compress(data, 1)
    if compression == "xz":
        return lzma.compress(data, preset=0)
    return lzma.compress(data, format=lzma.FORMAT_ALONE, preset=0)


DEFAULT_TREE = {
    "etc/issue": b"OLPC OS\n",
    "boot/vmlinuz": b"\x7fELF" + b"k" * 5000,
    "usr/share/doc/README": b"readme\n" * 100,
}


def write_build(
    folder: Path,
    name="py801-2",
    *,
    compression="bz2",
    tarball: bytes | None = None,
    md5_text: str | None = None,
    contents: bytes | None = None,
):
    """The three files the image builder produces, written into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    data = tarball if tarball is not None else compress(tar_bytes(DEFAULT_TREE), compression)
    tar_path = folder / f"{name}-tree.tar.{compression}"
    tar_path.write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    md5_path = folder / f"{tar_path.name}.md5"
    md5_path.write_text(md5_text if md5_text is not None else f"{md5}  {tar_path.name}\n")
    contents_path = folder / f"{name}.contents"
    contents_path.write_bytes(
        contents if contents is not None else json.dumps({"files": sorted(DEFAULT_TREE)}).encode()
    )
    return tar_path, md5_path, contents_path


def stage(path: Path, folder: Path) -> StagedFile:
    """What the upload handler would have produced for `path`."""
    folder.mkdir(parents=True, exist_ok=True)
    data = path.read_bytes()
    copy = folder / f".upload-{path.name}"
    copy.write_bytes(data)
    return StagedFile(
        path=copy,
        original_name=path.name,
        size=len(data),
        md5=hashlib.md5(data).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def tree_tar(entries: dict, *, pristine: str | None = "21021") -> bytes:
    """An uncompressed tar of `entries`, path → bytes (a 0644 file), `("dir", mode)`,
    `("file", mode, bytes)`, `("symlink", target)` or `("hardlink", path)`, under
    versions/pristine/<pristine>/ (or the root), in the order given."""
    buffer = io.BytesIO()
    base = f"versions/pristine/{pristine}/" if pristine else ""
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for folder in ("versions", "versions/pristine", base.rstrip("/")) if pristine else ():
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, spec in entries.items():
            spec = ("file", 0o644, spec) if isinstance(spec, bytes) else spec
            info = tarfile.TarInfo(base + path)
            data = None
            if spec[0] == "dir":
                info.type, info.mode = tarfile.DIRTYPE, spec[1]
            elif spec[0] == "file":
                info.mode, data = spec[1], spec[2]
                info.size = len(data)
            elif spec[0] == "symlink":
                info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, spec[1]
            else:
                info.type, info.mode, info.linkname = tarfile.LNKTYPE, 0o644, base + spec[1]
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()
