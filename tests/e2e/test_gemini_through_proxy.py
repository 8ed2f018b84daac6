"""The real Gemini CLI 0.61.0 end to end: gemini -p → the proxy (gunicorn + gevent) → the fake DeepSeek in thinking
mode (it refuses a tool-call turn replayed without its reasoning, as DeepSeek does). Every run sits behind a
refusing HTTPS proxy: nothing but loopback may be contacted."""

from __future__ import annotations

import time
from collections import deque

import pytest

from tests.e2e.gemini_cli import make_gemini_home, run_gemini_print
from tests.e2e.scripted_messages import RefusingProxy
from tests.fakes.fake_deepseek import Reply

pytestmark = pytest.mark.e2e  # drives a real client binary from tests/e2e/node_modules

ROUTER_JSON = '{"complexity_reasoning": "a small task", "complexity_score": 10}'
NEXT_SPEAKER_JSON = '{"reasoning": "the model finished", "next_speaker": "user"}'


class MainLoop:
    """The fake's reply source: Gemini CLI's JSON side calls (router, next-speaker) get their canned answers; the
    main loop's requests get `replies` in order."""

    def __init__(self, *replies: Reply):
        self.replies = deque(replies)
        self.arrivals: list[float] = []  # monotonic time of each main-loop request

    def __call__(self, body: dict) -> Reply:
        if body.get("response_format"):
            schema_text = body["messages"][-1]["content"]
            return Reply.text(ROUTER_JSON if "complexity_score" in schema_text else NEXT_SPEAKER_JSON, reasoning=None)
        self.arrivals.append(time.monotonic())
        return self.replies.popleft() if self.replies else Reply.text("(nothing more scripted)")


def main_requests(fake) -> list[dict]:
    return [r.body for r in fake.chat_requests if r.body and not r.body.get("response_format")]


@pytest.fixture()
def gemini(upstream, proxy, tmp_path):
    """(run, fake): run(prompt, *replies, model=...) → CompletedProcess, behind a refusing HTTPS proxy."""
    home = make_gemini_home(tmp_path)
    refusals: list[str] = []

    def run(prompt: str, *replies: Reply, model: str | None = "deepseek-v4-pro", timeout: float = 150,
            extra_args: list[str] | None = None):
        upstream.default_reply = MainLoop(*replies)
        with RefusingProxy() as refusing:
            result = run_gemini_print(home, prompt, base_url=proxy.base_url, model=model, https_proxy=refusing.url,
                                      timeout=timeout, extra_args=extra_args)
        refusals.extend(refusing.targets)
        return result

    run.home = home  # type: ignore[attr-defined]
    yield run, upstream
    upstream.default_reply = Reply.text("ok")
    assert refusals == [], f"Gemini CLI tried to reach beyond the proxy: {refusals}"


def test_tool_loop_replays_reasoning_on_every_request(gemini):
    run, fake = gemini
    target = run.home.workdir / "hello.txt"
    result = run("Create hello.txt saying hi, then show it.",
                 Reply.tool_calls([("write_file", {"file_path": str(target), "content": "hi from deepseek\n"})],
                                  reasoning="First I write the file."),
                 Reply.tool_calls([("run_shell_command", {"command": "cat hello.txt", "description": "show it"})],
                                  reasoning="Now I show it."),
                 Reply.text("The file says hi.", reasoning="Done."))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "The file says hi." in result.stdout
    assert target.read_text() == "hi from deepseek\n"
    sent = main_requests(fake)
    assert len(sent) == 3 and fake.rejections == []
    assert all(b["model"] == "deepseek-v4-pro" and b["thinking"] == {"type": "enabled"} for b in sent)
    assert [m["reasoning_content"] for m in sent[1]["messages"] if m["role"] == "assistant"] == \
        ["First I write the file."]
    assert [m["reasoning_content"] for m in sent[2]["messages"] if m["role"] == "assistant"] == \
        ["First I write the file.", "Now I show it."]
    tool_outputs = [m["content"] for m in sent[2]["messages"] if m["role"] == "tool"]
    assert "hi from deepseek" in tool_outputs[-1]
    # turn N's upstream prompt is a prefix of turn N+1's (DeepSeek's prefix cache keeps hitting)
    assert sent[1]["messages"][:len(sent[1]["messages"])] == sent[2]["messages"][:len(sent[1]["messages"])]


def test_parallel_calls(gemini):
    run, fake = gemini
    result = run("Run two commands.",
                 Reply.tool_calls([("run_shell_command", {"command": "echo one"}),
                                   ("run_shell_command", {"command": "echo two"})], reasoning="Both at once."),
                 Reply.text("Both ran.", reasoning="Done."))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Both ran." in result.stdout
    second = main_requests(fake)[1]
    assistant = next(m for m in second["messages"] if m["role"] == "assistant")
    assert assistant["reasoning_content"] == "Both at once." and len(assistant["tool_calls"]) == 2
    tools = [m for m in second["messages"] if m["role"] == "tool"]
    assert [t["tool_call_id"] for t in tools] == [c["id"] for c in assistant["tool_calls"]]
    assert "one" in tools[0]["content"] and "two" in tools[1]["content"]
    assert fake.rejections == []


def test_no_model_flag_router_and_main_loop_mapped(gemini):
    run, fake = gemini
    result = run("Say hello.", Reply.text("Hello from the main loop.", reasoning="Greeting."), model=None)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Hello from the main loop." in result.stdout
    bodies = [r.body for r in fake.chat_requests]
    router = [b for b in bodies if b.get("response_format")]
    assert router and router[0]["model"] == "deepseek-v4-flash" and router[0]["thinking"] == {"type": "disabled"}
    main = main_requests(fake)
    assert len(main) == 1 and main[0]["model"] == "deepseek-v4-pro" and main[0]["thinking"] == {"type": "enabled"}


def test_rate_limit_retried_after_the_advertised_delay(gemini):
    """DeepSeek's 429 (here with retry-after 8) → 429 RESOURCE_EXHAUSTED with RetryInfo retryDelay "8s". Gemini CLI
    0.61 waits max(its backoff, retryDelay) plus up to 20 % jitter; its first backoff is 5 s, so without the RetryInfo
    it would retry after 5-6 s (measured: 6.0 s with a 2 s retryDelay), with it after 8-9.6 s."""
    run, fake = gemini
    result = run("Say hello.", Reply.error(429, "Rate limit reached for requests", code="rate_limit_exceeded",
                                           headers={"retry-after": "8"}),
                 Reply.text("Hello after waiting.", reasoning="ok"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Hello after waiting." in result.stdout
    arrivals = fake.default_reply.arrivals
    assert len(arrivals) == 2
    assert 7.9 <= arrivals[1] - arrivals[0] < 11, arrivals[1] - arrivals[0]


def test_insufficient_balance_ends_the_run_at_once(gemini):
    run, fake = gemini
    started = time.monotonic()
    result = run("Say hello.", Reply.error(402, "Insufficient Balance", code="invalid_request_error"),
                 Reply.text("never"))
    # With the default text output Gemini CLI 0.61 rethrows an API error: exit 1 ("An unexpected critical error
    # occurred"); only --output-format json / stream-json exit with the status mod 256 (402 → 146).
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert '"code":402' in result.stderr and "Insufficient Balance" in result.stderr
    assert len(main_requests(fake)) == 1
    assert time.monotonic() - started < 60


def test_insufficient_balance_exit_code_in_json_output(gemini):
    run, fake = gemini
    result = run("Say hello.", Reply.error(402, "Insufficient Balance", code="invalid_request_error"),
                 extra_args=["--output-format", "json"])
    assert result.returncode == 402 % 256, (result.returncode, result.stderr[-3000:])
    assert len(main_requests(fake)) == 1


def test_mid_stream_reset_never_leaves_a_cut_answer(gemini):
    """The upstream hangs up after a few words went out: the proxy ends the stream with the bare error object, the
    SDK raises it, and Gemini CLI retries (a 5xx) instead of keeping the cut text as the answer."""
    run, fake = gemini
    whole = "This answer has many words and must arrive whole or not at all."
    result = run("Answer.", Reply.hang_up_after(6, Reply.text(whole, reasoning=None)),
                 Reply.text(whole, reasoning="r"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(main_requests(fake)) == 2
    assert whole in result.stdout
    assert result.stdout.rstrip().endswith(whole)
    # The retry carries no trace of the cut reply: the history holds only the user's prompt.
    assert [m["role"] for m in main_requests(fake)[1]["messages"] if m["role"] != "system"] == ["user"]
    # What -p's text output shows: the words streamed before the cut stay on the terminal, then the whole answer
    # (measured: "This answer has many" + the whole text). Gemini CLI prints deltas as they arrive; only buffering
    # every reply to its end could hide them, which would cost every user their streaming.
    assert result.stdout.count(whole) == 1


def test_keepalive_through_a_queued_upstream(gemini, fake_deepseek, start_proxy, tmp_path):
    """DeepSeek queues a request (silence, then the answer): the proxy's keepalive objects must not stall or break
    the JS SDK's stream parser (an SSE comment would)."""
    from tests.e2e.gemini_cli import make_gemini_home

    server = start_proxy(fake_deepseek.base_url, "[server]\nkeepalive_interval = 0.3\n")
    fake_deepseek.default_reply = MainLoop(Reply.text("Answer after a queue.", reasoning="r", ttft=2.0))
    home = make_gemini_home(tmp_path / "ka")
    with RefusingProxy() as refusing:
        result = run_gemini_print(home, "Wait for it.", base_url=server.base_url, model="deepseek-v4-pro",
                                  https_proxy=refusing.url)
    assert refusing.targets == []
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Answer after a queue." in result.stdout
    assert len(main_requests(fake_deepseek)) == 1
