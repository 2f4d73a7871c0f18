"""``mediaconduit replay --verify``: a result's chain run again from its record alone, through real workers.

Docker chains (cowsay, textrender → tesseract) are in tests/toolkit/test_docker_toolkit.py.
"""

from __future__ import annotations

import shutil

import pytest
from conftest import REPO, head_commit, publish
from support.toolkit import prompts, replay

TEXT = "The cat sat on the mat and the dog sat on the log"


@pytest.fixture
def textops_url() -> str:
    return publish(REPO / "providers" / "textops-provider", "textops-provider")


def run_chain(*steps):
    from celery import chain

    from mediaconduit_worker import transform

    (first, *rest) = steps
    return chain(transform.s(*first), *(transform.s(*s) for s in rest)).delay().get(timeout=120)


def test_rot13_then_wordcount_reproduces_byte_for_byte(text_worker, textops_url, tmp_path):
    result = run_chain((TEXT, textops_url, "rot13", {"api_key": "sk-secret-0123456789"}),
                       (textops_url, "wordcount", {"top": 3}))
    assert result["asset"]["content"] == "13 words\ngur 4\nba 2\nfng 2"

    code, report, output = replay(result, tmp_path, "--verify")
    assert code == 0, output
    assert [r["same"] for r in report["steps"]] == [True, True]
    commit = head_commit("textops-provider")
    assert all(r["provider_url"] == f"{textops_url}@{commit}" for r in report["steps"])
    assert report["result"]["asset"]["content"] == result["asset"]["content"]
    # The redacted key was not sent again as "[REDACTED]": the replayed record shows it redacted, nothing more.
    first = prompts(report["result"])[0]
    assert first["options"] == {} and first["input"] == TEXT


def test_a_replay_by_task_id(text_worker, textops_url):
    from support.toolkit import run_cli

    from mediaconduit_worker import transform

    async_result = transform.delay(TEXT, textops_url, "rot13", {})
    async_result.get(timeout=60)
    code, report, output = run_cli("replay", async_result.id, "--verify", "--json", "--yes")
    assert code == 0, output
    assert report["same"] is True


def test_a_changed_provider_commit_is_reported_different(text_worker, tmp_path):
    """The record pins each step's commit: a new push changes nothing; a record naming another commit differs."""
    folder = tmp_path / "textops"
    shutil.copytree(REPO / "providers" / "textops-provider", folder)
    url = publish(folder, "textops-changing", org="tests")
    old = head_commit("textops-changing", org="tests")
    result = run_chain((TEXT, url, "rot13", {}), (url, "wordcount", {}))

    code_file = folder / "src" / "textops_provider" / "__init__.py"
    code_file.write_text(code_file.read_text().replace('f"{len(words)} words"', 'f"{len(words)} word(s)"'))
    publish(folder, "textops-changing", org="tests")
    new = head_commit("textops-changing", org="tests")
    assert new != old

    code, report, output = replay(result, tmp_path, "--verify")
    assert code == 0 and report["same"], output  # still at the recorded commit

    moved = _with_commit(result, step=2, commit=new)
    code, report, output = replay(moved, tmp_path, "--verify")
    assert code == 1
    assert [r["same"] for r in report["steps"]] == [True, False]

    code, _, output = replay(moved, tmp_path, "--verify")  # the table names the step
    assert code == 1

    gone = _with_commit(result, step=1, commit="0" * 40)
    code, _, output = replay(gone, tmp_path, "--verify")
    assert code == 1 and f"commit {'0' * 40} is on no branch or tag" in output


def test_the_table_names_the_step_that_differed(text_worker, tmp_path):
    """A non-deterministic step (a provider whose output changes each run) is named."""
    from support.toolkit import run_cli

    folder = tmp_path / "clock"
    folder.mkdir()
    (folder / "MediaConduit.provider.yml").write_text(
        "id: clock\nname: Clock\ncapabilities: [text-to-text]\nmodels: [{id: now, capabilities: [text-to-text]}]\n"
        "main: provider.py\n")
    (folder / "provider.py").write_text(
        "import time, uuid\nfrom mediaconduit_worker import *\n\n"
        "class M(TextToTextModel):\n    def transform(self, input, options=None):\n"
        "        started = time.perf_counter()\n"
        "        return Text.from_string(input_text(input) + ' ' + uuid.uuid4().hex,\n"
        "            metadata={'generation_prompt': self.generation_prompt(input, options, started)})\n\n"
        "class P(MediaProvider):\n    model_classes = {MediaCapability.TEXT_TO_TEXT: M}\n")
    clock = publish(folder, "clock-provider", org="tests")
    textops = publish(REPO / "providers" / "textops-provider", "textops-provider")
    result = run_chain((TEXT, textops, "rot13", {}), (clock, "now", {}))
    path = tmp_path / "r.json"
    import json

    path.write_text(json.dumps(result))
    code, _, output = run_cli("replay", str(path), "--verify", "--yes")
    assert code == 1
    assert "different: step 2 (now)" in output and "same" in output


def test_records_that_cannot_be_replayed_are_refused_clearly(text_worker, textops_url, tmp_path):
    from support.toolkit import run_cli

    loose = tmp_path / "loose"  # a folder in no git repository: no commit to fetch again
    shutil.copytree(REPO / "providers" / "textops-provider", loose)
    folder_result = run_chain((TEXT, str(loose), "rot13", {}))
    code, _, output = replay(folder_result, tmp_path)
    assert code == 1 and f"provider folder {str(loose)!r} was not in a git repository when it ran" in output

    old = run_chain((TEXT, textops_url, "rot13", {}))
    del old["metadata"]["generation_prompt"]["record_version"]
    code, _, output = replay(old, tmp_path)
    assert code == 1 and "before record format 1" in output

    code, _, output = run_cli("replay", "no-such-task-id")
    assert code == 1 and "neither a file nor a task id" in output


def test_a_media_input_comes_back_by_digest_or_is_refused_when_gone(text_worker, textops_url, tmp_path):
    """The first input may be media: it is found again by its digest, and a missing blob is named."""
    from mediaconduit_worker.blobs import BlobStore
    from mediaconduit_worker.errors import ReplayError
    from mediaconduit_worker.worker.replay_plan import plan

    data = b"media bytes " + tmp_path.name.encode()
    uri, digest = BlobStore().put(data)
    record = run_chain((TEXT, textops_url, "rot13", {}))
    record["metadata"]["generation_prompt"]["input"] = {"type": "image", "uri": uri, "sha256": digest,
                                                        "size": len(data), "mime_type": "image/png", "metadata": {}}
    original, _ = plan(record)
    assert original["sha256"] == digest
    BlobStore().path_for(digest).unlink()
    with pytest.raises(ReplayError, match=f"blob sha256:{digest}.*is gone"):
        plan(record)


def test_a_folder_result_as_the_readme_makes_it_replays_from_its_repository_at_its_commit(text_worker, tmp_path):
    """A folder provider in a git work tree records that tree's commit: replay fetches the repository at that
    commit and runs the folder in it, so a later edit of the folder does not change the replay."""
    import subprocess

    repo = tmp_path / "clone"
    shutil.copytree(REPO / "providers" / "textops-provider", repo / "providers" / "textops-provider")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "textops"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                            text=True).stdout.strip()
    folder = repo / "providers" / "textops-provider"
    result = run_chain((TEXT, str(folder), "rot13", {}), (str(folder), "wordcount", {"top": 3}))
    assert prompts(result)[0]["source"] == {"kind": "path", "commit": commit}
    code_file = folder / "src" / "textops_provider" / "__init__.py"  # edited, not committed: not what ran
    code_file.write_text(code_file.read_text().replace('f"{len(words)} words"', 'f"{len(words)} word(s)"'))

    code, report, output = replay(result, tmp_path, "--verify")
    assert code == 0, output
    assert [r["same"] for r in report["steps"]] == [True, True]
    pinned = f"git+file://{repo}@{commit}#subdirectory=providers/textops-provider"
    assert [r["provider_url"] for r in report["steps"]] == [pinned, pinned]
    assert report["result"]["asset"]["content"] == result["asset"]["content"]


def _with_commit(result: dict, step: int, commit: str) -> dict:
    """A copy of ``result`` whose record says step ``step`` ran at ``commit``."""
    import copy

    edited = copy.deepcopy(result)
    prompt = edited["metadata"]["generation_prompt"]
    for _ in range(len(prompts(result)) - step):
        prompt = prompt["input"]["metadata"]["generation_prompt"]
    prompt["source"]["commit"] = commit
    return edited


def test_with_an_allow_list_replay_shows_what_it_fetches_and_needs_no_yes(text_worker, textops_url, tmp_path,
                                                                          monkeypatch):
    from mediaconduit_worker.settings import get_settings

    result = run_chain((TEXT, textops_url, "rot13", {}))
    commit = prompts(result)[0]["source"]["commit"]
    monkeypatch.setenv("MEDIACONDUIT_PROVIDER_ALLOW", "https://github.com/MediaConduit/")
    get_settings.cache_clear()
    try:
        code, report, output = replay(result, tmp_path, "--verify", yes=False)
    finally:
        monkeypatch.delenv("MEDIACONDUIT_PROVIDER_ALLOW")
        get_settings.cache_clear()
    assert code == 0 and report["same"], output
    assert report["fetched"] == [{"step": 1, "kind": "provider", "url": f"{textops_url}@{commit}"}]
    assert f"fetches step 1 provider {textops_url}@{commit}" in output
    code, _, output = replay(result, tmp_path, yes=False)  # no allow-list: not without --yes
    assert code == 1 and f"would fetch and run step 1 provider {textops_url}@{commit}; pass --yes" in output


def test_a_record_of_format_1_replays(text_worker, textops_url, tmp_path):
    """A result written before format 2 (kept as a fixture, a real chain's record) still replays step by step."""
    import json

    commit = head_commit("textops-provider")
    record = json.loads((REPO / "tests" / "fixtures" / "record-v1.json").read_text()
                        .replace("@@PROVIDER_URL@@", f"{textops_url}@main").replace("@@COMMIT@@", commit))
    code, report, output = replay(record, tmp_path, "--verify")
    assert code == 0, output
    assert [r["same"] for r in report["steps"]] == [True, True]
    assert report["result"]["metadata"]["generation_prompt"]["record_version"] == "2"
