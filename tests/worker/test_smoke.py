"""The shortest real path: a job through Redis to a worker process and back."""


def test_echo_through_queue(text_worker, echo_url):
    from mediaconduit_worker import transform

    result = transform.delay("hello", echo_url, "echo", {"prefix": "> "}).get(timeout=60)
    assert result["asset"] == {"type": "text", "content": "> hello", "language": "auto", "metadata": {}}
    prompt = result["metadata"]["generation_prompt"]
    assert prompt["provider_url"] == echo_url and prompt["record_version"] == "2"
    assert len(prompt["source"]["commit"]) == 40
