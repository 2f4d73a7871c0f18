"""Provider URL forms: monorepo subdirectories (pip's ``#subdirectory=``, GitHub's ``/tree/REF/PATH``),
relative service URLs, and git's error line worth quoting."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from mediaconduit_worker.errors import ProviderSourceError
from mediaconduit_worker.sources import Checkout, Source, SourceCache, git_error_detail, parse_source

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("url, location, ref, subdirectory", [
    ("git+https://git.example.com/org/repo@v1.2#subdirectory=providers/cowsay-provider",
     "https://git.example.com/org/repo", "v1.2", "providers/cowsay-provider"),
    ("git+file:///srv/mono.git#subdirectory=providers/echo-provider/", "file:///srv/mono.git", None,
     "providers/echo-provider"),
    ("git+ssh://git@host/org/repo.git@main#subdirectory=./a//b", "ssh://git@host/org/repo.git", "main", "a/b"),
    ("https://github.com/org/repo#subdirectory=providers/x", "https://github.com/org/repo", None, "providers/x"),
    ("git@github.com:org/repo.git#subdirectory=providers/x", "git@github.com:org/repo.git", None, "providers/x"),
    ("file:///srv/mono.git@main#subdirectory=services/s", "file:///srv/mono.git", "main", "services/s"),
    ("https://github.com/org/repo/tree/main/providers/cowsay-provider", "https://github.com/org/repo", "main",
     "providers/cowsay-provider"),
    (f"https://github.com/org/repo/tree/{SHA}/providers/x/", "https://github.com/org/repo", SHA, "providers/x"),
    ("https://github.com/org/repo/tree/v2", "https://github.com/org/repo", "v2", None),
    ("https://github.com/org/repo@main", "https://github.com/org/repo", "main", None),
    ("git+https://github.com/org/repo/tree/main/providers/x", "https://github.com/org/repo", "main", "providers/x"),
])
def test_monorepo_url_forms(url, location, ref, subdirectory):
    source = parse_source(url)
    assert (source.kind, source.location, source.ref, source.subdirectory) == ("git", location, ref, subdirectory)


@pytest.mark.parametrize("url, message", [
    ("git+file:///srv/mono.git#subdirectory=../etc", "without '..'"),
    ("git+file:///srv/mono.git#subdirectory=providers/../../etc", "without '..'"),
    ("git+file:///srv/mono.git#subdirectory=/etc", "must be a path inside the repository"),
    ("git+file:///srv/mono.git#subdirectory=", "must be a path inside the repository"),
    ("https://github.com/org/repo/tree/main/../../x", "without '..'"),
    ("git+https://host/org/repo#egg=x", "expected #subdirectory=PATH"),
    ("file:///srv/folder#subdirectory=x", "is for git repositories"),
    ("https://github.com/org/repo/blob/main/README.md", "malformed GitHub provider URL"),
    ("https://github.com/only-org", "malformed GitHub provider URL"),
])
def test_bad_subdirectories_are_refused_by_name(url, message):
    with pytest.raises(ProviderSourceError, match=message):
        parse_source(url)


def test_a_relative_service_url_stays_in_the_repository_at_the_same_commit(tmp_path):
    source = parse_source("https://github.com/org/mono/tree/main/providers/cowsay-provider")
    checkout = Checkout(source, tmp_path, SHA)
    assert checkout.resolve("../../services/cowsay-service") == (
        f"https://github.com/org/mono@{SHA}#subdirectory=services/cowsay-service")
    pip_form = Checkout(parse_source("git+file:///srv/mono.git@main#subdirectory=providers/p"), tmp_path, SHA)
    assert pip_form.resolve("..") == f"git+file:///srv/mono.git@{SHA}#subdirectory=providers"
    assert pip_form.resolve("../..") == f"git+file:///srv/mono.git@{SHA}"
    assert parse_source(pip_form.resolve("../../services/s")).ref == SHA
    with pytest.raises(ProviderSourceError, match="points outside the repository"):
        pip_form.resolve("../../../elsewhere")
    for absolute in ("https://github.com/org/other-service", "/srv/services/x", "pypi:x"):
        assert pip_form.resolve(absolute) == absolute


def test_a_relative_service_url_of_a_folder_provider_resolves_against_the_folder():
    folder = REPO / "providers" / "cowsay-provider"
    checkout = SourceCache().materialise(parse_source(str(folder)))
    assert checkout.resolve("../../services/cowsay-service") == str(REPO / "services" / "cowsay-service")


def test_describe_names_the_subdirectory(tmp_path):
    source = Source("git+file:///m.git#subdirectory=p", "git", "file:///m.git", None, "p")
    assert Checkout(source, tmp_path, SHA).describe()["subdirectory"] == "p"


def test_a_missing_folder_names_the_path_and_the_host(tmp_path):
    with pytest.raises(ProviderSourceError, match=r"provider folder .*nope.* does not exist on host"):
        SourceCache().materialise(parse_source(str(tmp_path / "nope")))


@pytest.mark.parametrize("stderr, detail", [
    ("Cloning into bare repository '/tmp/x'...\nfatal: '/srv/nope' does not appear to be a git repository\n"
     "fatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\n"
     "and the repository exists.\n", "'/srv/nope' does not appear to be a git repository"),
    # GitHub's answer for a repository that does not exist (or is private), as git prints it.
    ("remote: Repository not found.\nfatal: repository 'https://github.com/org/nope/' not found\n",
     "Repository not found."),
    ("fatal: unable to access 'https://git.invalid/x/': Could not resolve host: git.invalid\n",
     "unable to access 'https://git.invalid/x/': Could not resolve host: git.invalid"),
    ("fatal: not a git repository (or any of the parent directories): .git\n",
     "not a git repository (or any of the parent directories): .git"),
    ("warning: something\nfatal: the real cause\nhint: advice\n", "the real cause"),
    ("", "exit code 128"),
])
def test_git_errors_quote_the_line_that_names_the_cause(stderr, detail):
    assert git_error_detail(stderr, 128) == detail


def test_a_missing_repository_is_reported_as_missing(tmp_path: Path):
    with pytest.raises(ProviderSourceError) as err:
        SourceCache().materialise(parse_source(f"git+file://{tmp_path}/nope.git#subdirectory=providers/x"))
    assert "does not appear to be a git repository" in str(err.value)
    assert "the repository exists" not in str(err.value)


def test_the_allow_list_compares_the_repository_so_its_folders_and_services_pass(monkeypatch, tmp_path):
    from mediaconduit_worker.errors import ProviderNotAllowedError
    from mediaconduit_worker.settings import get_settings
    from mediaconduit_worker.sources import check_allowed

    monkeypatch.setenv("MEDIACONDUIT_PROVIDER_ALLOW", "https://github.com/org/mono")
    get_settings.cache_clear()
    try:
        provider = "https://github.com/org/mono/tree/main/providers/cowsay-provider"
        service = Checkout(parse_source(provider), tmp_path, SHA).resolve("../../services/cowsay-service")
        for url in (provider, service, "git+https://github.com/org/mono@v1#subdirectory=providers/echo-provider"):
            check_allowed(url)
        with pytest.raises(ProviderNotAllowedError):
            check_allowed("https://github.com/org/other/tree/main/providers/x")
    finally:
        get_settings.cache_clear()
