"""What the probes cannot express: the allow-list's matching rules one by one, the producer refusing
before anything is queued, git never reading a URL as an option, the export refusing links out of
the checkout, the YAML loader's limits, and folder sources whose links point out of the repository."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MIRRORS, RUN_DIR, git, head_commit, publish

from mediaconduit_worker.errors import (
    ConfigurationError,
    ManifestError,
    ProviderNotAllowedError,
    ProviderSourceError,
    ServiceError,
)
from mediaconduit_worker.manifest import load_provider_manifest, load_service_manifest, requirement
from mediaconduit_worker.services.spec import load_spec
from mediaconduit_worker.settings import get_settings
from mediaconduit_worker.sources import Checkout, Source, SourceCache, check_allowed, extract_tree, parse_source


@pytest.fixture
def allow(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Set ``MEDIACONDUIT_PROVIDER_ALLOW`` in this process for one test (settings are cached per process)."""

    def set_allow(value: str) -> None:
        monkeypatch.setenv("MEDIACONDUIT_PROVIDER_ALLOW", value)
        get_settings.cache_clear()

    yield set_allow
    monkeypatch.delenv("MEDIACONDUIT_PROVIDER_ALLOW", raising=False)
    get_settings.cache_clear()


GH = "https://github.com/MediaConduit"
ALLOW_TABLE = [
    # (allow-list, URL, admitted)
    (GH, f"{GH}/echo-provider", True),
    (GH + "/", f"{GH}/echo-provider@v1.2", True),
    (GH, f"git+{GH}/echo-provider", True),
    (GH, "https://GitHub.com:443/MediaConduit/echo-provider.git", True),
    (GH, "https://token@github.com/MediaConduit/echo-provider", True),
    (GH, "https://github.com/MediaConduitEvil/x", False),  # whole segments, not string prefixes
    (GH, "https://github.com/MediaConduit", False),  # an organisation, not a repository
    (GH, "https://github.com/", False),
    (GH, "https://github.com:8443/MediaConduit/x", False),  # port
    (GH, "http://github.com/MediaConduit/x", False),  # scheme
    (GH, "ssh://git@github.com/MediaConduit/x", False),
    (GH, "https://github.com@evil.example/MediaConduit/x", False),  # host is evil.example
    (GH, "https://github.com.evil.example/MediaConduit/x", False),
    (GH, f"{GH}/../evil/repo.git", False),
    (GH, f"{GH}/%2e%2e/evil/repo", False),
    (GH, f"{GH}/x%2f..%2f..%2fevil", False),
    (GH, f"{GH}/%252e%252e/evil", False),
    (GH, f"{GH}/./x", False),
    (GH, f"{GH}/x?upload=1", False),
    (GH, "git+ext::sh -c true", False),
    (GH, "--upload-pack=true", False),
    (GH, f"{GH}/echo-provider@--upload-pack=true", False),
    ("git@github.com:MediaConduit/", "ssh://git@github.com/MediaConduit/x", True),
    ("git@github.com:MediaConduit/", "git@github.com:MediaConduit/x.git", True),
    ("git@github.com:MediaConduit/", "git@github.com:MediaConduitEvil/x.git", False),
    ("https://git.example:8443/team", "https://git.example:8443/team/p", True),
    ("https://git.example:8443/team", "https://git.example/team/p", False),
    ("https://git.example/org/repo.git", "https://git.example/org/repo", True),
    ("/srv/providers", "/srv/providers/a", True),
    ("/srv/providers", "/srv/providers/../secrets", False),
    ("/srv/providers", "/srv/providers-evil/a", False),
    ("/srv/providers", "file:///srv/providers/a", True),
    ("/srv/providers", "file:///srv/providers/a.git", True),
    ("/srv/providers", "git+file:///srv/providers/a.git", True),
    ("file:///srv/providers/", "/srv/providers/a", True),
    ("file:///srv/providers/", "file:///srv/providers/%2e%2e/x", False),
    ("/srv/providers", "https://github.com/srv/providers/a", False),
    ("pypi:Foo_Bar", "pypi:foo-bar==1.0", True),
    ("pypi:foo", "pypi:foo[extra]>=1", True),
    ("pypi:foo", "pypi:foobar", False),
    ("pypi:foo", "pypi:foo @ https://evil.example/foo.whl", False),
    ("pypi:foo", "https://github.com/pypi/foo", False),
    (f"{GH}, pypi:foo , /srv/p", "/srv/p/x", True),
]


@pytest.mark.parametrize("allow_list, url, admitted", ALLOW_TABLE, ids=[f"{u}-{a}" for _, u, a in ALLOW_TABLE])
def test_allow_list_matching(allow, allow_list: str, url: str, admitted: bool) -> None:
    allow(allow_list)
    if admitted:
        check_allowed(url)
    else:
        with pytest.raises(ProviderNotAllowedError, match="MEDIACONDUIT_PROVIDER_ALLOW") as err:
            check_allowed(url)
        assert repr(url) in str(err.value)


def test_allow_list_matches_folders_by_resolved_path(allow, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "p").mkdir(parents=True)
    (allowed / "escape").symlink_to(tmp_path)
    allow(str(allowed))
    check_allowed(str(allowed / "p"))
    with pytest.raises(ProviderNotAllowedError):
        check_allowed(str(allowed / "escape" / "other"))  # a link inside leads out


def test_unset_allow_list_allows_all_and_a_malformed_entry_is_named(allow) -> None:
    check_allowed("https://anywhere.example/x")
    allow("ftp://example.invalid/x")
    with pytest.raises(ConfigurationError, match="entry 'ftp://example.invalid/x'"):
        check_allowed(f"{GH}/x")


@pytest.mark.parametrize("url, culprit", [
    (f"{GH}/../evil", "segment '..'"),
    (f"{GH}/%2E%2e/evil", "segment '%2E%2e'"),
    ("--upload-pack=true", "starts with '-'"),
    ("git+--upload-pack=true", "unsupported git URL"),
    ("git+ext::sh -c true", "unsupported git URL"),
    (f"{GH}/x@-b", "'-b' is not a branch"),
    ("https://-oProxyCommand=true/x/y", "no valid host"),
    ("file://relative/x.git", "absolute path"),
    ("pypi:--index-url=http://evil.example", "malformed pypi provider URL"),
])
def test_urls_that_could_escape_are_refused_without_an_allow_list(url: str, culprit: str) -> None:
    with pytest.raises(ProviderSourceError, match=culprit):
        parse_source(url)


# -- the producer -----------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"capability": "text-to-text"}])
def test_the_producer_refuses_before_anything_is_queued(allow, options: dict) -> None:
    from mediaconduit_worker import transform
    from mediaconduit_worker.celery_app import app

    allow("https://github.com/MediaConduit/")
    queues = list(app.amqp.queues.values())
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        before = {q.name: client.llen(q.name) for q in queues}
        for url in ("https://github.com/MediaConduitEvil/x", "https://github.com/MediaConduit/../evil/x"):
            with pytest.raises(ProviderNotAllowedError, match="MEDIACONDUIT_PROVIDER_ALLOW"):
                transform.delay("x", url, "m", options)
        after = {q.name: client.llen(q.name) for q in queues}
    assert after == before


def test_other_unknown_capabilities_still_use_the_default_queue(allow) -> None:
    from mediaconduit_worker.worker.routes import capability_for

    assert capability_for("ftp://example.invalid/x", "m", {}) is None  # no allow-list: the worker says why
    allow("https://github.com/tests/")
    assert capability_for("https://github.com/tests/does-not-exist", "m", {}) is None


def test_workers_check_before_any_fetch(allow, tmp_path: Path) -> None:
    from mediaconduit_worker.services.registry import ServiceRegistry
    from mediaconduit_worker.worker.loader import ProviderRegistry

    allow("https://github.com/tests/")
    cache = SourceCache(tmp_path / "cache")
    url = "https://github.com/MediaConduit/echo-provider"
    with pytest.raises(ProviderNotAllowedError):
        ProviderRegistry(cache).get(url)
    with pytest.raises(ProviderNotAllowedError):
        ProviderRegistry(cache).manifest(url)
    with pytest.raises(ProviderNotAllowedError):
        ServiceRegistry(client=None, cache=cache).spec_for("https://github.com/MediaConduit/cowsay-service")
    assert not (tmp_path / "cache").exists()


# -- git ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("location", ["--upload-pack=touch {hit}", "ext::sh -c touch% {hit}"])
def test_git_never_reads_a_url_as_an_option_or_runs_a_command_transport(tmp_path: Path, location: str) -> None:
    """Even a Source that bypassed parse_source: git gets ``--`` before it and no ``ext::`` transport."""
    hit = tmp_path / "hit"
    location = location.format(hit=hit)
    with pytest.raises(ProviderSourceError, match="cannot fetch"):
        SourceCache(tmp_path / "cache").materialise(Source(location, "git", location))
    assert not hit.exists()


def _repo_with_links(links: dict[str, str], files: dict[str, str] | None = None) -> str:
    """A repository behind https://github.com/tests/… whose tree holds ``links`` as symbolic links
    (``*.sh`` files are committed executable)."""
    name = f"links-{uuid.uuid4().hex[:6]}"
    folder = RUN_DIR / "link-repos" / name
    folder.mkdir(parents=True)
    for rel, text in (files or {"README.md": "hi\n"}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
        (folder / rel).chmod(0o755 if rel.endswith(".sh") else 0o644)
    for rel, target in links.items():
        (folder / rel).symlink_to(target)
    return publish(folder, name, org="tests")


@pytest.mark.parametrize("links, member", [
    ({"passwd": "/etc/passwd"}, "passwd"),
    ({"up": "../../.."}, "up"),
    ({"d": ".", "up": "d/d/../.."}, "up"),  # inside by its text, outside once 'd' is followed
    ({"a": "z/z/../..", "z": "."}, "a"),  # the same, the escaping link exported before the one it uses
])
def test_export_refuses_links_leaving_the_checkout(tmp_path: Path, links: dict[str, str], member: str) -> None:
    url = _repo_with_links(links)
    cache = SourceCache(tmp_path / "cache")
    with pytest.raises(ProviderSourceError, match=f"member '{member}'") as err:
        cache.materialise(parse_source(url))
    assert repr(url) in str(err.value)
    assert not any((tmp_path / "cache" / "checkouts").rglob("README.md"))  # nothing half-exported stays


def test_export_keeps_links_inside_the_checkout(tmp_path: Path) -> None:
    url = _repo_with_links({"docs": "src", "readme": "src/README.md"}, {"src/README.md": "inside\n", "run.sh": "#!/bin/sh\n"})
    root = SourceCache(tmp_path / "cache").materialise(parse_source(url)).root
    assert (root / "readme").read_text() == "inside\n" and (root / "docs").is_symlink()
    assert (root / "run.sh").stat().st_mode & 0o111 and not (root / "src" / "README.md").stat().st_mode & 0o111


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("members, culprit", [
    ([(_info("../evil"), b"x")], "member '../evil'"),
    ([(_info("/etc/evil"), b"x")], "member '/etc/evil'"),
    ([(_info(".git/config"), b"x")], "member '.git/config'"),
    ([(_info("hard", tarfile.LNKTYPE, "/etc/passwd"), b"")], "member 'hard'"),
    ([(_info("dev", tarfile.CHRTYPE), b"")], "member 'dev'"),
    ([(_info("d", tarfile.SYMTYPE, "."), b""), (_info("d/x"), b"x")], "member 'd/x'"),
])
def test_extract_refuses_crafted_members(tmp_path: Path, members: list, culprit: str) -> None:
    with pytest.raises(ProviderSourceError, match=culprit):
        extract_tree(_tar(*members), tmp_path, "https://github.com/tests/crafted")


def test_extract_turns_a_broken_archive_into_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderSourceError, match="cannot export 'https://github.com/tests/crafted'"):
        extract_tree(b"not a tar archive" * 100, tmp_path, "https://github.com/tests/crafted")


# -- manifests --------------------------------------------------------------------------------------
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("text, culprit", [
    (BOMB, "anchors and aliases"),
    ("id: x\nname: &n x\n", "anchors and aliases"),
    ("id: x\nname: " + "[" * 100_000, "nesting deeper than 64"),
    ("id: x\nname: x\nversion: " + "9" * 5000, "not valid YAML"),
    ("id: x\nname: x\nreleased: 2024-13-45\n", "not valid YAML"),
    ("id: x\nname: !!python/name:os.system\n", "not valid YAML"),
    (b"id: x\nname: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 15)"),
    ("id: x\nname: x\n#" + "a" * (1 << 20), "larger than 1024 KiB"),
])
def test_the_yaml_loader_refuses_clearly(tmp_path: Path, text: str | bytes, culprit: str) -> None:
    path = tmp_path / "MediaConduit.provider.yml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ManifestError, match=re.escape(culprit)) as err:
        load_provider_manifest(tmp_path, "https://github.com/tests/p")
    assert str(err.value).startswith("https://github.com/tests/p: MediaConduit.provider.yml")


def test_yaml_errors_name_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "MediaConduit.provider.yml").write_text("id: x\nname: x\nother: &o 1\n")
    with pytest.raises(ManifestError, match='in "MediaConduit.provider.yml", line 3'):
        load_provider_manifest(tmp_path)


@pytest.mark.parametrize("text", ["id: ../../..\nname: x\n", "id: a/../../b\nname: x\n", "id: -rf\nname: x\n",
                                  "name: ../../../etc\n"])
def test_an_id_that_is_a_path_is_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / "MediaConduit.provider.yml").write_text(text)
    (tmp_path / "MediaConduit.service.yml").write_text(text + "docker: {image: x}\n")
    if text.startswith("id:"):
        with pytest.raises(ManifestError, match="field 'id'.*must be a name, not a path"):
            load_provider_manifest(tmp_path)
    with pytest.raises(ManifestError, match="field 'id'.*must be a name, not a path"):
        load_service_manifest(tmp_path)  # a service's id defaults to its name


def test_ids_steer_no_path_image_or_container_name(tmp_path: Path) -> None:
    """Ids with spaces (the published manifests have some) are kept, but every use of one is a slug."""
    from mediaconduit_worker.services.registry import _slug

    (tmp_path / "MediaConduit.service.yml").write_text("name: 'Whisper .. Service (offline)'\ndocker: {image: x}\n")
    spec = load_spec(Checkout(parse_source(str(tmp_path)), tmp_path, None), "s")
    assert spec.id == "Whisper .. Service (offline)"
    assert spec.built_image.startswith("mediaconduit/svc-whisper-service-offline:")
    assert _slug("_.-x..y") == "x..y"


@pytest.mark.parametrize("name, spec, expected", [
    ("cowsay", ">=6.1,<7", "cowsay<7,>=6.1"),
    ("Pillow", "10.1", "Pillow==10.1"),
    ("numpy", "", "numpy"),
    ("numpy", "*", "numpy"),
    ("requests", '>=2; python_version < "3.13"', 'requests>=2; python_version < "3.13"'),
])
def test_dependencies_that_are_requirements(name: str, spec: str, expected: str) -> None:
    assert requirement(name, spec) == expected


@pytest.mark.parametrize("name, spec", [
    ("--requirement=/etc/passwd", ""),
    ("-r", "/etc/passwd"),
    ("./evil", ""),
    ("/etc/passwd", ""),
    ("evil", "@ https://evil.example/evil.whl"),
    ("evil", ">=1 @ https://evil.example/evil.whl"),
    ("evil", "/etc/passwd"),
    ("evil", ">=1 --index-url https://evil.example"),
    ("evil", "^1.6.0"),
    ("evil[x]", ">=1"),
])
def test_dependencies_that_are_not_requirements(name: str, spec: str) -> None:
    with pytest.raises(ValueError, match=f"field 'dependencies.{name}'".replace("[", r"\[")):
        requirement(name, spec)


def test_a_bad_dependency_names_the_provider_when_installing(tmp_path: Path) -> None:
    (tmp_path / "MediaConduit.provider.yml").write_text("id: p\nname: P\ndependencies: {'--requirement=x': ''}\n")
    manifest = load_provider_manifest(tmp_path)  # loads: published manifests have npm-style entries
    with pytest.raises(ManifestError, match=r"^https://github.com/tests/p: MediaConduit.provider.yml: "
                                            r"field 'dependencies.--requirement=x'"):
        manifest.requirements("https://github.com/tests/p")


# -- folder sources whose links lead out --------------------------------------------------------------
def _folder(tmp_path: Path, files: dict[str, str], links: dict[str, Path | str]) -> Checkout:
    root = tmp_path / "repo"
    root.mkdir(parents=True)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for rel, target in links.items():
        (root / rel).symlink_to(target)
    return Checkout(parse_source(str(root)), root, None)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("FROM docker.example/secret\nid: leaked\nname: leaked\n")
    return secret


def test_a_linked_provider_manifest_or_main_outside_is_refused(tmp_path: Path, outside: Path) -> None:
    from mediaconduit_worker.worker.loader import main_file

    checkout = _folder(tmp_path, {}, {"MediaConduit.provider.yml": outside})
    with pytest.raises(ManifestError, match="link to a file outside the repository"):
        load_provider_manifest(checkout.root)
    (checkout.root / "MediaConduit.provider.yml").unlink()
    (checkout.root / "MediaConduit.provider.yml").write_text("id: p\nname: p\nmain: pkg\n")
    (checkout.root / "pkg").mkdir()
    (checkout.root / "pkg" / "__init__.py").symlink_to(outside)
    with pytest.raises(ManifestError, match="field 'main' 'pkg' points outside"):
        main_file(load_provider_manifest(checkout.root), checkout.root, "p")


@pytest.mark.parametrize("files, links, culprit", [
    ({"MediaConduit.service.yml": "id: s\nname: s\ndocker: {composeFile: c.yml}\n"}, {"c.yml": "OUT"},
     "docker.composeFile 'c.yml' points outside"),
    ({"MediaConduit.service.yml": "id: s\nname: s\ndocker: {}\n"}, {"docker-compose.yml": "OUT"},
     "compose file 'docker-compose.yml' points outside"),
    ({"MediaConduit.service.yml": "id: s\nname: s\ndocker: {ports: [80]}\n"}, {"Dockerfile": "OUT"},
     "the Dockerfile 'Dockerfile' points outside"),
    ({"MediaConduit.service.yml": "id: s\nname: s\ndocker: {build: {context: ., dockerfile: D}}\n"}, {"D": "OUT"},
     "docker.build.dockerfile 'D' points outside"),
    ({"MediaConduit.service.yml": "id: s\nname: s\ndocker: {build: ctx}\n"}, {"ctx": "OUTDIR"},
     "docker.build.context 'ctx' points outside"),
    ({"MediaConduit.service.yml": "id: s\nname: s\ndocker: {}\n",
      "docker-compose.yml": "services: {s: {build: {context: ., dockerfile: D}}}\n"}, {"D": "OUT"},
     "build 'dockerfile' 'D' points outside"),
    ({"MediaConduit.service.yml": "id: s\nname: s\ndocker: {}\n",
      "docker-compose.yml": "services: {s: {build: {context: ., dockerfile: /etc/passwd}}}\n"}, {},
     "build 'dockerfile' '/etc/passwd' points outside"),
])
def test_service_files_must_resolve_inside_the_repository(tmp_path: Path, outside: Path, files: dict,
                                                           links: dict, culprit: str) -> None:
    targets = {"OUT": outside, "OUTDIR": outside.parent}
    checkout = _folder(tmp_path, files, {k: targets[v] for k, v in links.items()})
    with pytest.raises(ServiceError, match=culprit):
        load_spec(checkout, "service 'https://github.com/tests/s'")


def test_folder_revision_hashes_links_without_following_them(tmp_path: Path, outside: Path) -> None:
    from mediaconduit_worker.services.spec import folder_revision

    checkout = _folder(tmp_path, {"a": "x"}, {"secret": outside})
    before = folder_revision(checkout.root)
    outside.write_text("changed")
    assert folder_revision(checkout.root) == before


def test_named_volumes_are_the_service_urls_own(tmp_path: Path) -> None:
    """``volumes: [redis-data:/data]`` never mounts a volume of that name from the host's engine."""
    from mediaconduit_worker.services.registry import ServiceRegistry

    specs = []
    for name in ("a", "b"):
        checkout = _folder(tmp_path / name, {
            "MediaConduit.service.yml": "id: s\nname: s\ndocker: {}\n",
            "docker-compose.yml": "services: {s: {image: x, volumes: ['redis-data:/data']}}\nvolumes: {redis-data: {}}\n",
        }, {})
        specs.append(load_spec(checkout, name))
    names = {ServiceRegistry.volume_name(spec, "redis-data") for spec in specs}
    assert len(names) == 2 and all(n.startswith("mediaconduit-redis-data-") for n in names)


def test_a_provider_that_cannot_be_read_is_tried_once_per_window(allow, monkeypatch, caplog) -> None:
    """A batch of jobs for an unreachable provider makes one fetch attempt, not one per job; credentials
    in its URL stay out of the warning."""
    from mediaconduit_worker.worker import routes as routing
    from mediaconduit_worker.worker.loader import get_registry

    allow("https://github.com/tests/")
    url = f"https://user:s3cret-token@github.com/tests/missing-{uuid.uuid4().hex[:6]}"
    reads = []
    real = type(get_registry())._read
    monkeypatch.setattr(type(get_registry()), "_read", lambda self, u, src: reads.append(u) or real(self, u, src))
    with caplog.at_level("WARNING", logger=routing.__name__):
        assert [routing.capability_for(url, "m", {}) for _ in range(5)] == [None] * 5
    assert len(reads) == 1
    warnings = [r.getMessage() for r in caplog.records if "cannot tell its capability" in r.getMessage()]
    assert len(warnings) == 1 and "s3cret-token" not in warnings[0] and "github.com/tests/missing-" in warnings[0]
    assert routing.capability_for(url, "m", {"capability": "text-to-image"}).value == "text-to-image"
    monkeypatch.setattr(routing, "UNRESOLVED_FOR", 0.0)  # the window over: tried again
    routing._unresolved.clear()
    assert routing.capability_for(url, "m", {}) is None and len(reads) == 2


# -- only published code: branches and tags, never refs/pull/* ---------------------------------------
SAYING_PROVIDER = """from mediaconduit_worker import MediaCapability, MediaProvider, Text, TextToTextModel, input_text


class Say(TextToTextModel):
    def transform(self, input, options=None):
        return Text.from_string({said!r} + input_text(input))


class P(MediaProvider):
    model_classes = {{MediaCapability.TEXT_TO_TEXT: Say}}
"""
SAYING_MANIFEST = "id: saying\nname: Saying\nmain: provider.py\nexportName: P\nmodels: [{id: say, capabilities: [text-to-text]}]\n"


def _push_pull_request(url: str, files: dict[str, str]) -> str:
    """Push a commit the way GitHub publishes anyone's pull request: at ``refs/pull/1/head`` of the
    repository behind ``url``, on top of its main branch, on no branch or tag. Returns its SHA."""
    bare = MIRRORS / "tests" / url.rsplit("/", 1)[1]
    work = RUN_DIR / "work" / f"pr-{uuid.uuid4().hex[:6]}"
    git("clone", "-q", str(bare), str(work), cwd=RUN_DIR)
    for rel, text in files.items():
        (work / rel).write_text(text)
    git("commit", "-q", "-am", "an outsider's pull request", cwd=work)
    git("push", "-q", "origin", "HEAD:refs/pull/1/head", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


@pytest.fixture(scope="module")
def saying_repo(publish_repo) -> dict[str, str]:
    """A provider repository with two commits on main (v1, then v2) and a pull request commit (unmerged)."""
    files = {"MediaConduit.provider.yml": SAYING_MANIFEST, "provider.py": SAYING_PROVIDER.format(said="v1 ")}
    url = publish_repo("saying-provider", files)
    name = url.rsplit("/", 1)[1]
    first = head_commit(name, "tests")
    publish(_written(files | {"provider.py": SAYING_PROVIDER.format(said="v2 ")}), name, org="tests")
    pull = _push_pull_request(url, {"provider.py": SAYING_PROVIDER.format(said="UNMERGED ")})
    return {"url": url, "first": first, "head": head_commit(name, "tests"), "pull": pull}


def _written(files: dict[str, str]) -> Path:
    folder = RUN_DIR / "content" / uuid.uuid4().hex[:8]
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


class GitCalls:
    """Real git, behind a ``git`` on PATH that writes down every command it runs."""

    def __init__(self, bin_dir: Path) -> None:
        self.log = bin_dir / "git.log"
        bin_dir.mkdir(parents=True, exist_ok=True)
        wrapper = bin_dir / "git"
        wrapper.write_text(f'#!/bin/sh\necho "$1" >> "{self.log}"\nexec {shutil.which("git")} "$@"\n')
        wrapper.chmod(0o755)

    def count(self, command: str) -> int:
        return self.log.read_text().split().count(command) if self.log.exists() else 0


@pytest.fixture
def git_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitCalls:
    calls = GitCalls(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{calls.log.parent}{os.pathsep}{os.environ['PATH']}")
    return calls


@pytest.mark.parametrize("form", ["{url}@{sha}", "{url}/tree/{sha}/", "git+{url}@{sha}"])
def test_a_pull_request_commit_is_refused_by_sha_and_by_tree(tmp_path: Path, saying_repo: dict, form: str) -> None:
    url = form.format(url=saying_repo["url"], sha=saying_repo["pull"])
    with pytest.raises(ProviderSourceError) as err:
        SourceCache(tmp_path / "cache").materialise(parse_source(url))
    message = str(err.value)
    assert saying_repo["pull"] in message and saying_repo["url"] in message and "no branch or tag" in message
    assert not (tmp_path / "cache" / "checkouts").exists() or not any((tmp_path / "cache" / "checkouts").rglob(
        saying_repo["pull"]))


def test_mirrors_hold_only_branches_and_tags(tmp_path: Path, saying_repo: dict) -> None:
    cache = SourceCache(tmp_path / "cache")
    assert cache.materialise(parse_source(saying_repo["url"])).commit == saying_repo["head"]
    (mirror,) = (tmp_path / "cache" / "git").iterdir()
    refs = git("for-each-ref", "--format=%(refname)", cwd=mirror).split()
    assert refs and all(r.startswith(("refs/heads/", "refs/tags/", "refs/mediaconduit/")) for r in refs), refs
    assert subprocess.run(["git", "cat-file", "-e", saying_repo["pull"]], cwd=mirror).returncode != 0


def test_a_branch_commit_by_sha_still_loads(tmp_path: Path, saying_repo: dict) -> None:
    cache = SourceCache(tmp_path / "cache")
    for sha, said in ((saying_repo["first"], "v1 "), (saying_repo["head"], "v2 ")):
        checkout = cache.materialise(parse_source(f"{saying_repo['url']}@{sha}"))
        assert checkout.commit == sha
        assert repr(said) in (checkout.root / "provider.py").read_text()


def test_a_worker_refuses_a_pull_request_commit_and_serves_the_next_job(attacked_worker, saying_repo: dict,
                                                                        echo_url: str) -> None:
    url, pull = saying_repo["url"], saying_repo["pull"]
    for provider in (f"{url}@{pull}", f"{url}/tree/{pull}/"):
        with pytest.raises(Exception) as err:
            attacked_worker.run("x", provider, "say")
        assert pull in str(err.value) and url in str(err.value), str(err.value)
        assert "UNMERGED" not in str(err.value)
    old = attacked_worker.run("x", f"{url}@{saying_repo['first']}", "say")
    assert old["asset"]["content"] == "v1 x"
    assert attacked_worker.run("still serving", echo_url, "upper")["asset"]["content"] == "STILL SERVING"


def test_a_service_pinned_at_a_pull_request_commit_is_refused(tmp_path: Path, publish_repo) -> None:
    from mediaconduit_worker.services.registry import ServiceRegistry

    url = publish_repo("pinned-service", {"MediaConduit.service.yml": "id: pinned\nname: pinned\ndocker:\n"
                                          "  composeFile: docker-compose.yml\n",
                                          "docker-compose.yml": "services:\n  s:\n    image: busybox\n"})
    pull = _push_pull_request(url, {"docker-compose.yml": "services:\n  s:\n    image: busybox\n"
                                                          "    environment: {LEAK: $MEDIACONDUIT_CANARY_TOKEN}\n"})
    registry = ServiceRegistry(client=None, cache=SourceCache(tmp_path / "cache"))
    assert registry.spec_for(url).id == "pinned"
    with pytest.raises(ProviderSourceError, match=f"commit {pull} is on no branch or tag"):
        registry.spec_for(f"git+{url}@{pull}")


def test_spellings_of_one_url_share_one_mirror(tmp_path: Path, saying_repo: dict, monkeypatch, git_calls) -> None:
    name = saying_repo["url"].rsplit("/", 1)[1]
    spellings = [saying_repo["url"], f"https://GitHub.com:443/tests/{name}.git", f"https://someone@github.com/tests/{name}",
                 f"git+https://github.com/tests/{name}/", f"https://github.com:443/tests/{name}@main"]
    for i, base in enumerate(["https://GitHub.com:443/", "https://someone@github.com/", "https://github.com:443/"]):
        monkeypatch.setenv(f"GIT_CONFIG_KEY_{i}", f"url.file://{MIRRORS}/.insteadOf")
        monkeypatch.setenv(f"GIT_CONFIG_VALUE_{i}", base)
    monkeypatch.setenv("GIT_CONFIG_COUNT", "3")
    dot_git = MIRRORS / "tests" / f"{name}.git"  # github.com answers …/REPO.git as …/REPO: so does the test mirror
    if not dot_git.exists():
        dot_git.symlink_to(MIRRORS / "tests" / name)
    monkeypatch.setenv("MEDIACONDUIT_SOURCE_FETCH_INTERVAL", "0")  # each spelling fetches: each reaches the repository
    get_settings.cache_clear()
    try:
        cache = SourceCache(tmp_path / "cache")
        commits = {cache.materialise(parse_source(url)).commit for url in spellings}
    finally:
        monkeypatch.delenv("MEDIACONDUIT_SOURCE_FETCH_INTERVAL")
        get_settings.cache_clear()
    assert commits == {saying_repo["head"]}
    assert git_calls.count("fetch") == len(spellings)
    assert [p.name for p in (tmp_path / "cache" / "git").iterdir()] == [f"{parse_source(spellings[0]).key}.git"]
    assert len(list((tmp_path / "cache" / "checkouts").iterdir())) == 1


def test_an_unknown_sha_is_fetched_once_per_interval(tmp_path: Path, saying_repo: dict, git_calls) -> None:
    cache = SourceCache(tmp_path / "cache")
    cache.materialise(parse_source(saying_repo["url"]))
    assert git_calls.count("fetch") == 1
    (mirror,) = (tmp_path / "cache" / "git").iterdir()

    def refused(ref: str, culprit: str) -> None:
        with pytest.raises(ProviderSourceError, match=re.escape(culprit)) as err:
            cache.materialise(parse_source(f"{saying_repo['url']}@{ref}"))
        assert saying_repo["url"] in str(err.value)

    randoms = [uuid.uuid4().hex + uuid.uuid4().hex[:8] for _ in range(3)]
    for sha in randoms + randoms:
        refused(sha, f"commit {sha} is on no branch or tag")
    refused(randoms[2], "again after MEDIACONDUIT_SOURCE_FETCH_INTERVAL=60s")  # says why it did not look
    refused("no-such-branch", "no branch or tag 'no-such-branch'")
    assert git_calls.count("fetch") == 2  # the first miss looked (a commit pushed since would be found), no other
    (mirror / "mediaconduit-missed-at").write_text("0")  # the interval is over: one more look
    refused(randoms[0], f"commit {randoms[0]} is on no branch or tag")
    refused(randoms[1], f"commit {randoms[1]} is on no branch or tag")
    assert git_calls.count("fetch") == 3
    # a commit it already holds needs no fetch at all, however stale the mirror
    (mirror / "mediaconduit-fetched-at").write_text("0")
    assert cache.materialise(parse_source(f"{saying_repo['url']}@{saying_repo['first']}")).commit == saying_repo["first"]
    assert git_calls.count("fetch") == 3


# -- routing never runs code: a pypi: provider's manifest comes out of its wheel ----------------------
def _wheel(folder: Path, dist: str, files: dict[str, str], entry: str | None) -> Path:
    """A wheel of ``dist`` 1.0 holding ``files``, with a ``mediaconduit.providers`` entry point ``entry``."""
    import zipfile

    module = dist.replace("-", "_")
    info = f"{module}-1.0.dist-info"
    members = {**files, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n",
               f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    if entry:
        members[f"{info}/entry_points.txt"] = f"[mediaconduit.providers]\nx = {entry}\n"
    members[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in members) + f"{info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{module}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return wheel


@pytest.fixture
def package_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local find-links folder as pip's only index (pip runs in a subprocess: it reads the environment)."""
    index = tmp_path / "index"
    index.mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return index


def test_routing_reads_a_pypi_providers_manifest_from_its_wheel_without_installing(package_index: Path,
                                                                                  tmp_path: Path) -> None:
    import sys

    from mediaconduit_worker.worker.loader import get_registry
    from mediaconduit_worker.worker.routes import capability_for

    dist = f"mc-routed-{uuid.uuid4().hex[:6]}"
    module, ran = dist.replace("-", "_"), tmp_path / "imported"
    _wheel(package_index, dist, {
        f"{module}/__init__.py": f"open({str(ran)!r}, 'w').write('the package ran')\n",
        f"{module}/MediaConduit.provider.yml": "id: routed\nname: Routed\n"
                                               "models: [{id: paint, capabilities: [text-to-image]}]\n",
    }, f"{module}:Provider")
    url = f"pypi:{dist}==1.0"
    assert capability_for(url, "paint", {}).value == "text-to-image"
    manifest, checkout = get_registry().manifest(url)
    assert manifest.id == "routed" and checkout.version == f"{dist}==1.0"
    assert not ran.exists() and module not in sys.modules
    assert not (get_registry().cache.root / "pypi").exists() or not any(
        module in p.name for p in (get_registry().cache.root / "pypi").rglob("*"))


@pytest.mark.parametrize("kind", ["no manifest", "sdist only", "plain module"])
def test_a_pypi_provider_whose_wheel_cannot_tell_goes_to_the_default_queue_unrun(
        kind: str, package_index: Path, tmp_path: Path, caplog) -> None:
    from mediaconduit_worker.worker.routes import capability_for

    dist = f"mc-unrouted-{uuid.uuid4().hex[:6]}"
    module, ran = dist.replace("-", "_"), tmp_path / "imported"
    side_effect = f"open({str(ran)!r}, 'w').write('the package ran')\n"
    if kind == "no manifest":
        _wheel(package_index, dist, {f"{module}/__init__.py": side_effect}, f"{module}:Provider")
        culprit = "ships no MediaConduit.provider.yml"
    elif kind == "plain module":  # a module file's folder is the wheel's root: the manifest must be there
        _wheel(package_index, dist, {f"{module}.py": side_effect, f"{module}/MediaConduit.provider.yml": "id: x\n"},
               f"{module}:Provider")
        culprit = "ships no MediaConduit.provider.yml"
    else:  # building an sdist runs its setup.py: never done
        sdist = package_index / f"{module}-1.0.tar.gz"
        with tarfile.open(sdist, "w:gz") as tar:
            for name, text in {"setup.py": side_effect + "from setuptools import setup\nsetup()\n",
                               "PKG-INFO": f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n"}.items():
                data = text.encode()
                member = tarfile.TarInfo(f"{module}-1.0/{name}")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        culprit = "downloading the wheel"
    with caplog.at_level("WARNING"):
        assert capability_for(f"pypi:{dist}==1.0", "m", {}) is None
    assert any(culprit in r.getMessage() and dist in r.getMessage() for r in caplog.records), caplog.text
    assert not ran.exists()


# -- replay of a record from elsewhere: shown, checked against the allow-list, run only when told -----
def _crafted_record(recorder_url: str) -> dict:
    """A RESULT.json as anyone can write one: step 1 a git provider and service on a loopback host, step 2
    a PyPI package; each pinned, as replay requires."""
    first = {"record_version": "1", "provider_url": f"git+{recorder_url}/evil-provider.git", "source_kind": "git",
             "provider_commit": "1" * 40, "model_id": "m", "input": {"type": "text", "content": "x"}, "options": {},
             "output_digest": "0" * 64, "service": {"url": f"git+{recorder_url}/evil-service.git", "commit": "2" * 40}}
    second = {"record_version": "1", "provider_url": "pypi:mc-evil-replayed", "source_kind": "pypi",
              "provider_version": "mc-evil-replayed==6.6.6", "model_id": "m", "options": {}, "output_digest": "0" * 64,
              "input": {"type": "text", "content": "y", "metadata": {"generation_prompt": first}}}
    return {"asset": {"type": "text", "content": "z"}, "metadata": {"generation_prompt": second}}


@pytest.mark.parametrize("allow_list, args, culprit", [
    (None, [], "no MEDIACONDUIT_PROVIDER_ALLOW is set and replay would fetch and run "
               "step 1 provider git+{r}/evil-provider.git@{c1}; step 1 service git+{r}/evil-service.git@{c2}; "
               "step 2 provider pypi:mc-evil-replayed==6.6.6; pass --yes to run it"),
    ("https://github.com/tests/", [], "step 1 provider git+{r}/evil-provider.git@{c1} is refused"),
    ("https://github.com/tests/", ["--yes"], "step 1 provider git+{r}/evil-provider.git@{c1} is refused"),
    ("{r}/evil-provider.git", ["--yes"], "step 1 service git+{r}/evil-service.git@{c2} is refused"),
    ("{r}/", ["--yes"], "step 2 provider pypi:mc-evil-replayed==6.6.6 is refused"),
])
def test_a_crafted_record_is_shown_and_refused_before_anything_is_fetched(
        allow, recorder, tmp_path: Path, monkeypatch, allow_list: str | None, args: list[str], culprit: str) -> None:
    from support.toolkit import replay

    monkeypatch.setenv("PIP_INDEX_URL", f"{recorder.url}/simple")  # a pip run would show as a request
    if allow_list:
        allow(allow_list.format(r=recorder.url))
    hits = len(recorder.hits)
    code, _, output = replay(_crafted_record(recorder.url), tmp_path, *args, yes=False)
    error = [line for line in output.splitlines() if line.startswith("error: ")]
    assert code != 0 and len(error) == 1, output
    assert culprit.format(r=recorder.url, c1="1" * 40, c2="2" * 40) in error[0], error[0]
    assert recorder.hits[hits:] == []


# -- the input-URL allow-list: normalised, whole segments ---------------------------------------------
class _Site:
    """An HTTP server on 127.0.0.2 (which the tests' address check treats as public) that records paths."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.hits: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.url = f"http://127.0.0.2:{self.server.server_address[1]}"
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def input_site() -> Iterator[_Site]:
    site = _Site()
    yield site
    site.server.shutdown()


INPUT_FORMS = [
    # (path after the site, admitted: the path requested / refused: the culprit)
    ("/public/a.png", ("ok", "/public/a.png")),
    ("/public", ("ok", "/public")),
    ("/public/my%20photo.png", ("ok", "/public/my%20photo.png")),
    ("/public/a.png?size=2", ("ok", "/public/a.png?size=2")),
    ("/public-internal/x", ("refused", "not allowed by MEDIACONDUIT_INPUT_URL_ALLOW")),
    ("/publicx", ("refused", "not allowed by MEDIACONDUIT_INPUT_URL_ALLOW")),
    ("/PUBLIC/a.png", ("refused", "not allowed by MEDIACONDUIT_INPUT_URL_ALLOW")),
    ("/public/../secret", ("refused", "not allowed by MEDIACONDUIT_INPUT_URL_ALLOW")),  # httpx removes it first
    ("/public/%2e%2e/secret", ("refused", "path segment '%2e%2e' is refused")),
    ("/public/%2E%2e/secret", ("refused", "path segment '%2E%2e' is refused")),
    ("/public/..%2fsecret", ("refused", "path segment '..%2fsecret' is refused")),
    ("/public/..%2Fsecret", ("refused", "path segment '..%2Fsecret' is refused")),
    ("/public/%2e%2e%2fsecret", ("refused", "path segment '%2e%2e%2fsecret' is refused")),
    ("/public/%252e%252e/secret", ("refused", "path segment '%252e%252e' is refused")),
    ("/public/..;/secret", ("refused", "path segment '..;' is refused")),
    ("/public/..%5csecret", ("refused", "path segment '..%5csecret' is refused")),
    ("/public/%c0%ae%c0%ae/secret", ("refused", "path segment '%c0%ae%c0%ae' is refused")),
]


@pytest.mark.parametrize("entry", ["{site}/public", "{site}/public/"])
@pytest.mark.parametrize("path, outcome", INPUT_FORMS, ids=[p for p, _ in INPUT_FORMS])
def test_input_url_allow_list_matches_normalised_whole_segments(input_site: _Site, monkeypatch, tmp_path: Path,
                                                                entry: str, path: str, outcome: tuple) -> None:
    from mediaconduit_worker.blobs import BlobStore
    from mediaconduit_worker.errors import InvalidInputError
    from mediaconduit_worker.fetch import address_refusal, fetch_input

    monkeypatch.setenv("MEDIACONDUIT_INPUT_URL_ALLOW", entry.format(site=input_site.url))
    get_settings.cache_clear()
    store = BlobStore(tmp_path / "blobs")
    public_here = lambda address: None if address == "127.0.0.2" else address_refusal(address)  # noqa: E731
    hits = len(input_site.hits)
    try:
        kind, expected = outcome
        if kind == "ok":
            uri, _, size, _ = fetch_input(input_site.url + path, "input field 'uri'", store, refusal=public_here)
            assert store.get(uri) == b"ok" and input_site.hits[hits:] == [expected]
        else:
            with pytest.raises(InvalidInputError, match=re.escape(expected)) as err:
                fetch_input(input_site.url + path, "input field 'uri'", store, refusal=public_here)
            assert str(err.value).startswith("input field 'uri': ")
            assert input_site.hits[hits:] == []
    finally:
        monkeypatch.delenv("MEDIACONDUIT_INPUT_URL_ALLOW")
        get_settings.cache_clear()


@pytest.mark.parametrize("entry", ["ftp://h/x", "https://user@h/x", "https://h/x?y=1", "https://h/%2e%2e/x", "/local"])
def test_a_malformed_input_url_allow_entry_is_named(monkeypatch, entry: str) -> None:
    from mediaconduit_worker.fetch import fetch_input

    monkeypatch.setenv("MEDIACONDUIT_INPUT_URL_ALLOW", f"https://ok.example/, {entry}")
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match=re.escape(f"MEDIACONDUIT_INPUT_URL_ALLOW entry {entry!r}")):
            fetch_input("https://ok.example/a.png", "f")
    finally:
        monkeypatch.delenv("MEDIACONDUIT_INPUT_URL_ALLOW")
        get_settings.cache_clear()
