"""One repository holding two providers and a service, loaded by subdirectory URLs through a real worker:
pip's ``git+file://…@REF#subdirectory=PATH`` from a local bare repository, GitHub's ``/tree/REF/PATH`` through
the github.com mirror, and a provider whose relative ``serviceUrl`` starts the service of the same commit."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import MIRRORS, REPO, head_commit, publish


@dataclass
class Monorepo:
    name: str
    github: str
    """``https://github.com/tests/<name>`` (served from the mirror)."""

    @property
    def bare(self) -> Path:
        return MIRRORS / "tests" / self.name

    @property
    def commit(self) -> str:
        return head_commit(self.name, "tests")


@pytest.fixture(scope="module")
def monorepo(tmp_path_factory) -> Monorepo:
    folder = tmp_path_factory.mktemp("mono")
    for part in ("providers/echo-provider", "providers/cowsay-provider", "services/cowsay-service"):
        shutil.copytree(REPO / part, folder / part, ignore=shutil.ignore_patterns("__pycache__"))
    name = f"mono-{uuid.uuid4().hex[:6]}"
    return Monorepo(name, publish(folder, name, org="tests"))


def test_pip_subdirectory_url_from_a_local_bare_repository(text_worker, monorepo):
    from mediaconduit_worker import transform

    url = f"git+file://{monorepo.bare}@main#subdirectory=providers/echo-provider"
    result = transform.delay("hello mono", url, "upper").get(timeout=60)
    assert result["asset"]["content"] == "HELLO MONO"
    prompt = result["metadata"]["generation_prompt"]
    assert prompt["capability"] == "text-to-text" and prompt["provider_url"] == url
    assert prompt["source"] == {"kind": "git", "ref": "main", "commit": monorepo.commit,
                                "subdirectory": "providers/echo-provider"}


def test_github_tree_url_through_the_mirror(text_worker, monorepo):
    from mediaconduit_worker import transform

    url = f"{monorepo.github}/tree/main/providers/echo-provider"
    result = transform.delay("abc", url, "reverse").get(timeout=60)
    assert result["asset"]["content"] == "cba"
    source = result["metadata"]["generation_prompt"]["source"]
    assert (source["commit"], source["subdirectory"], source["ref"]) == (monorepo.commit, "providers/echo-provider",
                                                                         "main")


def test_the_second_provider_of_the_repository_is_routed_by_its_own_manifest(monorepo):
    from mediaconduit_worker.worker.routes import resolve_capability

    url = f"git+{monorepo.github}#subdirectory=providers/cowsay-provider"
    assert resolve_capability(url, "cowsay-default", {}).value == "text-to-text"


@pytest.mark.parametrize("suffix, culprit", [
    ("#subdirectory=providers/../../x", "without '..'"),
    ("#subdirectory=providers/no-such-provider", "no folder 'providers/no-such-provider' in the repository at commit"),
])
def test_a_bad_subdirectory_fails_the_job_by_name(text_worker, monorepo, suffix, culprit):
    from mediaconduit_worker import transform

    r = transform.apply_async(("x", f"git+file://{monorepo.bare}{suffix}", "upper"), queue="text-to-text")
    with pytest.raises(Exception, match=culprit):
        r.get(timeout=60)


@pytest.mark.docker
@pytest.mark.parametrize("form", ["pip", "tree"])
def test_a_relative_service_url_starts_the_service_of_the_same_commit(docker_engine, text_worker, monorepo, form):
    from mediaconduit_worker import transform
    from mediaconduit_worker.services.labels import SCOPE, SOURCE, scope

    if form == "pip":
        url = f"git+file://{monorepo.bare}#subdirectory=providers/cowsay-provider"
        service = f"git+file://{monorepo.bare}@{monorepo.commit}#subdirectory=services/cowsay-service"
    else:
        url = f"{monorepo.github}/tree/main/providers/cowsay-provider"
        service = f"{monorepo.github}@{monorepo.commit}#subdirectory=services/cowsay-service"
    result = transform.delay("moo from the monorepo", url, "cowsay-default").get(timeout=300)
    assert "moo from the monorepo" in result["asset"]["content"]
    assert result["metadata"]["generation_prompt"]["source"]["commit"] == monorepo.commit
    assert result["metadata"]["generation_prompt"]["service"]["commit"] == monorepo.commit
    running = docker_engine.containers.list(filters={"label": [f"{SOURCE}={service}", f"{SCOPE}={scope()}"]})
    assert len(running) == 1
