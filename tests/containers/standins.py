"""Stand-ins for the compose file's base images, made from Debian's archive.

No image registry is reachable from our machines, so `python:3.11-slim` and
`eclipse-mosquitto:2` cannot be pulled. This module makes them: `debootstrap --variant=minbase
bookworm` from the apt mirror this machine uses, `podman import` of that tree, then the small
Containerfiles beside this module, tagged with the official names. docker-compose.yml and the
Dockerfile then run unchanged.

Everything is cached in podman's own storage: the imported Debian tree, and each stand-in with
a label holding the hash of what it was built from, so a changed Containerfile (or CA bundle)
rebuilds it. A real image of the official name (one a developer pulled) is used as it is.

`python -m tests.containers.standins` builds them ahead of a test run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
CONTAINERS_CONF = HERE / "containers.conf"
"""What podman needs on these machines (ulimits, runc, cgroupfs): given through CONTAINERS_CONF."""
DEBIAN = "localhost/gatemesh-standin/debian:bookworm"
LABEL = "org.gatemesh.standin"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
"""pip in a build must trust what the host trusts (its registry traffic passes a TLS proxy here)."""
APT_SOURCES = [Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d")]
FALLBACK_MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class StandIn:
    image: str
    containerfile: str


STANDINS = [
    StandIn("docker.io/library/python:3.11-slim", "python.Containerfile"),
    StandIn("docker.io/library/eclipse-mosquitto:2", "mosquitto.Containerfile"),
]


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, timeout: float = 300, check: bool = True, stdin: bytes | None = None) -> str:
    """Run podman with the test's settings; its stdout, or an error with its stderr."""
    done = subprocess.run(
        ["podman", *args], input=stdin, capture_output=True, timeout=timeout, env=podman_env(), check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr.decode()[-3000:]}")
    return done.stdout.decode()


def image_label(image: str) -> str | None:
    """The stand-in label of a local image: None if there is no such image, "" if it has none."""
    if subprocess.run(["podman", "image", "exists", image], env=podman_env(), check=False).returncode != 0:
        return None
    return podman("image", "inspect", "--format", f'{{{{index .Labels "{LABEL}"}}}}', image).strip()


def debian_mirror(sources: Sequence[Path] = APT_SOURCES) -> str:
    """The Debian mirror this machine's apt uses (one-line or deb822 sources), for debootstrap."""
    files: list[Path] = []
    for source in sources:
        files += sorted(source.glob("*")) if source.is_dir() else [source] if source.exists() else []
    for file in files:
        if file.suffix == ".list" or file.name == "sources.list":
            for line in file.read_text().splitlines():
                words = [w for w in line.split("#", 1)[0].split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm":
                    return words[1]
        elif file.suffix == ".sources":
            for stanza in file.read_text().split("\n\n"):
                fields = dict(
                    (key.strip().lower(), value.strip())
                    for key, _, value in (line.partition(":") for line in stanza.splitlines())
                    if not key.startswith("#") and value
                )
                if (
                    "deb" in fields.get("types", "").split()
                    and "bookworm" in fields.get("suites", "").split()
                    and fields.get("enabled", "yes") != "no"
                ):
                    return fields["uris"].split()[0]
    return FALLBACK_MIRROR


def pip_index() -> str | None:
    """An http(s) package index that pip on this host is told to use, if any (a build must use it too)."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True,
            text=True,
            check=False,
        )
        url = done.stdout.strip() if done.returncode == 0 else None
    return url if url and url.startswith(("http://", "https://")) else None


def build_debian(log: list[str]) -> None:
    """debootstrap a minimal bookworm and import it as DEBIAN (about 30 s and 120 MB)."""
    mirror = debian_mirror()
    with tempfile.TemporaryDirectory(prefix="gatemesh-debootstrap-") as work:
        root = Path(work) / "root"
        try:
            done = subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(root), mirror],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"debootstrap from {mirror} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
            unmount_under(root)
            # apt's lists and caches: each Containerfile fetches fresh lists, and the image is 50 MB smaller
            shutil.rmtree(root / "var/lib/apt/lists")
            (root / "var/lib/apt/lists/partial").mkdir(parents=True)
            for cache in [*(root / "var/cache/apt").glob("*.bin"), *(root / "var/cache/apt/archives").glob("*.deb")]:
                cache.unlink()
            tar = ["tar", "--numeric-owner", "--one-file-system", "-C", str(root), "-c", "."]
            tree = subprocess.run(tar, capture_output=True, timeout=300, check=True).stdout
            podman("import", "--change", 'CMD ["/bin/bash"]', "-", DEBIAN, stdin=tree)
        finally:
            unmount_under(root)  # before the temporary directory is deleted: never delete through a mount
    log.append(f"{DEBIAN}: debootstrap from {mirror}")


def unmount_under(root: Path) -> None:
    """Unmount whatever is mounted inside `root`, deepest first: debootstrap sometimes leaves its /proc."""
    inside = str(root) + "/"
    points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((p for p in points if p.startswith(inside)), reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


def recipe(standin: StandIn, base_id: str, index: str | None) -> tuple[str, str]:
    """The Containerfile to build (with the host's index, if it has one) and a hash of all it is built from."""
    text = (HERE / standin.containerfile).read_text()
    if index is not None:
        text += f"ENV PIP_INDEX_URL={index}\n"
    digest = hashlib.sha256()
    for part in (text.encode(), base_id.encode(), HOST_CA.read_bytes()):
        digest.update(hashlib.sha256(part).digest())
    return text, digest.hexdigest()[:16]


def ensure_standins() -> list[str]:
    """Make sure both stand-ins (or the real images) are here; what was built, for the test's log."""
    log: list[str] = []
    if image_label(DEBIAN) is None:
        build_debian(log)
    base_id = podman("image", "inspect", "--format", "{{.Id}}", DEBIAN).strip()
    index = pip_index()
    for standin in STANDINS:
        text, digest = recipe(standin, base_id, index)
        label = image_label(standin.image)
        if label == "":
            log.append(f"{standin.image}: a real image, used as it is")
            continue
        if label == digest:
            continue
        stale = podman("image", "inspect", "--format", "{{.Id}}", standin.image).strip() if label else None
        with tempfile.TemporaryDirectory(prefix="gatemesh-standin-") as context:
            (Path(context) / "Containerfile").write_text(text)
            shutil.copy(HOST_CA, Path(context) / "host-ca.crt")
            podman("build", "--layers=false", "--label", f"{LABEL}={digest}", "-t", standin.image, context, timeout=900)
        if stale is not None:  # an earlier stand-in, now untagged
            podman("rmi", stale, check=False)
        log.append(f"{standin.image}: built from {standin.containerfile}")
    return log


if __name__ == "__main__":
    print("\n".join(ensure_standins()) or "the stand-ins are up to date")
