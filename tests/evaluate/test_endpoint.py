"""almr's one HTTP client for OpenAI-compatible endpoints, against real servers on 127.0.0.1: what is
retried and how long it waits, what is not, the one-line errors (the server's own message, the URL,
the attempts, what to check), and the served model from GET /models."""

import pytest
from scripted_server import Reply, ScriptedServer, chat_reply, closed_port_url, models, openai_error

from almr.errors import AlmrError
from almr.evaluate.endpoint import Endpoint, EndpointError, api_base, error_detail


def endpoint(url: str, retries: int = 3, timeout_s: float = 5.0) -> tuple[Endpoint, list[float]]:
    waits: list[float] = []
    return Endpoint(url, timeout_s=timeout_s, retries=retries, backoff_s=0.5, sleep=waits.append), waits


def test_error_bodies_of_openai_vllm_and_fastapi_read_as_one_line() -> None:
    assert error_detail(b'{"error": {"message": "The model `x` does not exist.", "type": "NotFoundError"}}') == (
        "NotFoundError: The model `x` does not exist."
    )
    vllm = b'{"object": "error", "message": "max_tokens is too large:\\n 9000 > 8192", "type": "BadRequestError"}'
    assert error_detail(vllm) == "BadRequestError: max_tokens is too large: 9000 > 8192"
    assert error_detail(b'{"detail": "Not Found"}') == "Not Found"
    assert error_detail(b'{"error": "upstream\\ntimed out"}') == "upstream timed out"
    assert error_detail(b"<html>\n<b>502 Bad Gateway</b>\n</html>") == "<html> <b>502 Bad Gateway</b> </html>"
    assert error_detail(b"") == ""
    assert (
        api_base("http://h:8000/v1/chat/completions/") == api_base("http://h:8000/v1/completions") == "http://h:8000/v1"
    )


def test_server_errors_are_retried_with_doubling_waits_then_succeed() -> None:
    script = [openai_error(500, "InternalServerError", "boom"), Reply(503, b"busy"), chat_reply("好的")]
    with ScriptedServer({("POST", "/v1/chat/completions"): script}) as server:
        client, waits = endpoint(server.url)
        assert client.chat([{"role": "user", "content": "你好"}], "tiny", temperature=0) == "好的"
    assert waits == [0.5, 1.0]
    assert server.posts("/v1/chat/completions")[0] == {
        "model": "tiny", "messages": [{"role": "user", "content": "你好"}], "temperature": 0
    }  # fmt: skip


def test_the_last_failure_names_the_url_the_servers_message_and_the_attempts() -> None:
    failing = openai_error(500, "InternalServerError", "CUDA out of\nmemory")
    with ScriptedServer({("POST", "/v1/completions"): [failing]}) as server:
        client, waits = endpoint(server.url, retries=2)
        with pytest.raises(EndpointError) as err:
            client.post("/completions", {"prompt": "x"})
    assert str(err.value) == (
        f"POST {server.url}/completions: HTTP 500 (InternalServerError: CUDA out of memory) after 3 attempts; "
        "the server failed; its log says why"
    )
    assert waits == [0.5, 1.0] and len(server.requests) == 3
    assert isinstance(err.value, AlmrError) and err.value.status == 500 and not err.value.fatal


def test_a_404_is_not_retried_and_says_what_to_check() -> None:
    vllm_404 = Reply(404, {"object": "error", "message": "The model `model` does not exist.", "type": "NotFoundError",
                           "param": None, "code": 404})  # fmt: skip
    with ScriptedServer({("POST", "/v1/chat/completions"): [vllm_404]}) as server:
        client, waits = endpoint(server.url)
        with pytest.raises(EndpointError) as err:
            client.chat([{"role": "user", "content": "hi"}], "model")
    assert str(err.value) == (
        f"POST {server.url}/chat/completions: HTTP 404 (NotFoundError: The model `model` does not exist.); check "
        "that the URL is the API base (…/v1) and that the server has /chat/completions and serves the model asked "
        "for (--endpoint-model; GET …/v1/models lists them)"
    )
    assert waits == [] and len(server.requests) == 1 and err.value.fatal


def test_a_refused_connection_is_retried_then_named() -> None:
    url = closed_port_url()
    client, waits = endpoint(url, retries=3)
    with pytest.raises(EndpointError) as err:
        client.models()
    assert str(err.value) == (
        f"GET {url}/models: cannot connect (Connection refused) after 4 attempts; is the server running and "
        "reachable at this address?"
    )
    assert waits == [0.5, 1.0, 2.0] and err.value.fatal


def test_retry_after_is_honoured_and_a_timeout_is_retried() -> None:
    script = [Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "7"}), Reply(200, {"ok": 1}, delay_s=0.6),
              Reply(200, {"ok": 2})]  # fmt: skip
    with ScriptedServer({("GET", "/v1/x"): script}) as server:
        client, waits = endpoint(server.url, timeout_s=0.3)
        assert client.get("/x") == {"ok": 2}
    assert waits == [7.0, 1.0]


def test_a_reply_that_is_not_json_or_has_no_text_is_an_error() -> None:
    routes = {("GET", "/v1/models"): [Reply(200, b"<html>hello</html>")],
              ("POST", "/v1/chat/completions"): [Reply(200, {"choices": [{"message": {"content": ""}}]})]}  # fmt: skip
    with ScriptedServer(routes) as server:
        client, _ = endpoint(server.url, retries=1)
        with pytest.raises(EndpointError) as err:
            client.models()
        assert str(err.value) == (
            f"GET {server.url}/models: reply is not JSON: '<html>hello</html>' after 2 attempts; the server does "
            "not answer as the OpenAI API does"
        )
        with pytest.raises(EndpointError) as err:
            client.chat([{"role": "user", "content": "hi"}], "m")
        assert str(err.value) == (
            f"POST {server.url}/chat/completions: the reply has no text: "
            '{"choices": [{"message": {"content": ""}}]}'
        )


def test_the_served_model_comes_from_get_models() -> None:
    with ScriptedServer({("GET", "/v1/models"): [models("llama-3-8b", "other")]}) as server:
        client, _ = endpoint(server.url)
        assert client.model_name() == "llama-3-8b"
        assert client.model_name("other") == "other"
        with pytest.raises(EndpointError) as err:
            client.model_name("gpt-4")
        served = "it serves: llama-3-8b, other"
        assert str(err.value) == f"{server.url} does not serve model 'gpt-4' (--endpoint-model); {served}"
    with ScriptedServer({}) as bare:  # no /models: a name given is trusted, none is refused
        client, _ = endpoint(bare.url)
        assert client.model_name("mine") == "mine"
        with pytest.raises(EndpointError) as err:
            client.model_name(flag="--judge-model")
        assert str(err.value) == (
            f"GET {bare.url}/models: HTTP 404 (Not Found); check that the URL is the API base (…/v1) and that the "
            "server has /models and serves the model asked for (--endpoint-model; GET …/v1/models lists them); or "
            "name the served model with --judge-model NAME"
        )
    with ScriptedServer({("GET", "/v1/models"): [models()]}) as empty, pytest.raises(EndpointError) as err:
        endpoint(empty.url)[0].model_name()
    assert str(err.value) == f"GET {empty.url}/models lists no model; name the served one with --endpoint-model NAME"
