"""``hybridcl serve``: the real openai client against 127.0.0.1, on a tiny run with per-task parts."""

import json
import shutil
import threading
import time

import httpx
import openai
import pytest

from hybridcl.config.experiment import load_config
from hybridcl.continual import learn_tasks, run_experiment
from hybridcl.inference.engine import Engine
from hybridcl.inference.load import load_run
from hybridcl.inference.server import Limits, create_app

# a tiny causal model trained hard enough that each task's parts answer in their own way
SMALL = ["preset=smoke", "model.name=tiny:llama", "data.max_train=16", "data.max_val=4", "eval.max_new_tokens=8"]
SMALL += ["train.lr=0.01", "train.epochs=3"]
PROMPT = "Return the sum of a and b."
LIMITS = Limits(max_prompt_tokens=512, max_tokens=64)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    config = load_config(overrides=[*SMALL, "strategy=hybrid_task_specific", "tasks=[python,javascript]"])
    return run_experiment(config, tmp_path_factory.mktemp("serve") / "run", progress=False)


class Server:
    """The app on a free loopback port, in a thread; stopped (and its engine) on exit."""

    def __init__(self, run_dir, *, api_key=None, limits=LIMITS, **engine):
        import uvicorn

        self.engine = Engine(run_dir, **engine).start()
        app = create_app(self.engine, api_key=api_key, limits=limits)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def client(self, api_key="none"):
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=60)

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)
        self.engine.stop(30)


@pytest.fixture(scope="module")
def served(finished):
    with Server(finished) as server:
        yield server


@pytest.fixture(scope="module")
def reference(finished):
    return load_run(finished)  # what `hybridcl generate --run RUN --task T` runs


@pytest.mark.parametrize("task", ["python", "javascript", "auto"])
def test_a_greedy_completion_is_what_hybridcl_generate_gives(served, reference, task):
    answer = served.client().completions.create(model=task, prompt=PROMPT, temperature=0)
    text, chosen = reference.generate(task, PROMPT, return_tasks=True)
    assert answer.choices[0].text == text and answer.model == chosen
    assert answer.model in ("python", "javascript") and answer.usage.completion_tokens > 0


def test_a_tag_sends_an_auto_prompt_to_its_task(served, reference):
    answer = served.client().completions.create(model="auto", prompt=f"[javascript] {PROMPT}")
    assert answer.model == "javascript" and answer.choices[0].text == reference.generate("javascript", PROMPT)


def test_several_prompts_of_several_tasks_at_once(served, reference):
    """Requests of both tasks in flight together, each answered with its own task's parts."""
    prompts = [f"{PROMPT} ({k})" for k in range(6)]
    tasks = ["python", "javascript"] * 3
    results = [None] * 6

    def ask(k):
        results[k] = served.client().completions.create(model=tasks[k], prompt=prompts[k]).choices[0].text

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [reference.generate(t, p) for t, p in zip(tasks, prompts, strict=True)]


def test_sampling_with_a_seed_repeats(served):
    client = served.client()
    a, b = (client.completions.create(model="python", prompt=PROMPT, temperature=0.9, top_p=0.9, seed=3) for _ in "ab")
    assert a.choices[0].text == b.choices[0].text


def test_streaming_sends_the_text_then_the_finish_and_done(served, reference):
    parts = list(served.client().completions.create(model="python", prompt=PROMPT, stream=True))
    assert "".join(p.choices[0].text for p in parts) == reference.generate("python", PROMPT)
    assert parts[-1].choices[0].finish_reason in ("stop", "length")


def test_stop_cuts_the_text(served, reference):
    full = reference.generate("python", PROMPT)
    stop = full[len(full) // 2 :][:2]
    answer = served.client().completions.create(model="python", prompt=PROMPT, stop=[stop])
    assert answer.choices[0].text == full[: full.find(stop)] and answer.choices[0].finish_reason == "stop"


def test_chat_uses_the_last_user_message_with_the_tasks_template(finished, reference):
    with Server(finished) as server:
        for tokenizer in (server.engine.run.tokenizer, server.engine._counter):
            tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        answer = server.client().chat.completions.create(
            model="javascript",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}],
        )
    assert answer.choices[0].message.content == reference.generate("javascript", PROMPT)
    assert answer.model == "javascript"


def test_models_and_health(served):
    assert [m.id for m in served.client().models.list()] == ["python", "javascript", "auto"]
    assert httpx.get(f"{served.url}/health").json() == {"status": "ok", "tasks": ["python", "javascript"]}


def error(response):
    assert "Traceback" not in response.text
    return response.status_code, response.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "param", "words"),
    [
        ({"model": "cobol", "prompt": "x"}, 404, "model", "not a task of this run: choose one of python, javascript"),
        ({"model": "python", "prompt": "x", "max_tokens": "many"}, 400, "max_tokens", "valid integer"),
        ({"model": "python", "prompt": "x", "max_tokens": 65}, 400, "max_tokens", "generates at most 64"),
        ({"model": "python", "prompt": "x", "temperature": -1}, 400, "temperature", "greater than or equal to 0"),
        ({"model": "python"}, 400, "prompt", "Field required"),
        ({"model": "python", "prompt": "x", "n": 2}, 400, "n", "one choice per prompt"),
        ({"model": "python", "prompt": "x" * 600}, 400, "prompt", "is 601 tokens; this server takes at most 512"),
        ({"model": "python", "prompt": []}, 400, "prompt", "at least one prompt"),
    ],
)
def test_bad_requests_get_an_openai_error_naming_the_field(served, body, status, param, words):
    code, err = error(httpx.post(f"{served.url}/v1/completions", json=body))
    assert code == status and err["param"] == param and words in err["message"]


def test_malformed_json_is_a_400(served):
    response = httpx.post(
        f"{served.url}/v1/completions", content=b'{"model": "python",', headers={"content-type": "application/json"}
    )
    assert error(response) == (
        400,
        {"message": "the request body is not valid JSON", "type": "invalid_request_error", "param": None, "code": None},
    )


def test_an_api_key_is_required_once_given(finished):
    with Server(finished, api_key="s3cret") as server:
        with pytest.raises(openai.AuthenticationError):
            server.client("wrong").completions.create(model="python", prompt=PROMPT)
        assert server.client("s3cret").completions.create(model="python", prompt=PROMPT).choices


def test_another_address_without_a_key_is_refused(finished):
    from hybridcl.errors import ConfigError
    from hybridcl.inference.server import serve

    with pytest.raises(ConfigError, match="--host 0.0.0.0 is reachable from other machines: give --api-key"):
        serve(finished, host="0.0.0.0")


def test_a_full_queue_answers_429_with_retry_after(finished):
    with Server(finished, max_queue=1, max_batch=1) as server:
        real = server.engine.run.generate
        release = threading.Event()

        def slow(*args, **kwargs):
            release.wait(30)
            return real(*args, **kwargs)

        server.engine.run.generate = slow
        body = {"model": "python", "prompt": PROMPT}
        held = [
            threading.Thread(
                target=httpx.post, args=(f"{server.url}/v1/completions",), kwargs={"json": body, "timeout": 60}
            )
            for _ in range(2)
        ]
        for t in held:  # one generating, one waiting: the queue is full
            t.start()
            time.sleep(0.3)
        response = httpx.post(f"{server.url}/v1/completions", json=body)
        release.set()
        for t in held:
            t.join(60)
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert error(response)[1]["type"] == "rate_limit_error"


def test_a_task_the_run_learns_is_served_without_a_restart(finished, tmp_path):
    run = shutil.copytree(finished, tmp_path / "run")
    with Server(run) as server:
        client = server.client()
        before = client.completions.create(model="python", prompt=PROMPT).choices[0].text
        learn_tasks(run, ["go"], progress=False)
        deadline = time.monotonic() + 60
        while "go" not in [m.id for m in client.models.list()]:
            assert time.monotonic() < deadline, "go was not served"
            time.sleep(0.1)
        go = client.completions.create(model="go", prompt=PROMPT)
        after = client.completions.create(model="python", prompt=PROMPT).choices[0].text
    assert go.model == "go" and go.choices[0].text == load_run(run).generate("go", PROMPT)
    assert after == before  # per-task parts: learning go left python's answers as they were


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(finished):
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    import socket

    with socket.socket() as s:  # a free loopback port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "hybridcl", "serve", str(finished), "--port", str(port), "--max-batch", "1"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "serving" not in line:
            assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
            line = proc.stderr.readline()
        codes, finished = [], []
        body = {"model": "python", "prompt": PROMPT, "max_tokens": 256}

        def ask():
            r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=60)
            codes.append((r.status_code, json.loads(r.text)["choices"][0]["text"] if r.status_code == 200 else r.text))
            finished.append(time.monotonic())

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # all four accepted; one at a time (--max-batch 1), 256 tokens each
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [c for c, _ in codes] == [200] * 4
    assert len({text for _, text in codes}) == 1
    assert max(finished) > signalled  # some were still generating when SIGTERM came, and were answered


def test_a_request_that_names_its_language_goes_to_its_task(served):
    answer = served.client().completions.create(model="auto", prompt="Write a JavaScript function that adds a and b")
    assert answer.model == "javascript"
    answer = served.client().completions.create(model="auto", prompt="Write a Python function that adds a and b")
    assert answer.model == "python"
