"""The command line as an operator runs it: real processes, a real receiver."""

from __future__ import annotations

from pathlib import Path

import orjson
import yaml

from consumer.receiver import Receiver
from consumer.signing import sign

from .support import Setup, channel, write_config
from .support import run_cli as _cli


async def test_send_test_posts_one_signed_request_and_hides_the_secret(
    receiver: Receiver, tmp_path: Path
) -> None:
    setup = Setup(
        "127.0.0.1:1",
        receiver,
        [channel(receiver, "coupons")],
        {"c": ["coupons"]},
        tmp=str(tmp_path),
    )
    config = write_config(setup, tmp_path)
    users = tmp_path / "users.jsonl"
    users.write_bytes(orjson.dumps({"user_id": "u-1", "attributes": {"hobby": "跑步"}}) + b"\n")
    code, out, _ = await _cli(
        "attributes", "import", "--config", str(config), str(users), env=setup.environ
    )
    assert code == 0, out
    assert "imported 1 users" in out

    code, out, err = await _cli(
        "send-test",
        "--config",
        str(config),
        "coupons",
        "--campaign",
        "c",
        "--user",
        "u-1",
        env=setup.environ,
    )
    assert code == 0, out + err
    [request] = receiver.received
    assert request.verified
    assert request.body["templateParam"] == {"title": "hello c"}
    assert request.body["userAttr"] == [{"hobby": "跑步"}]
    assert request.headers["X-gio-signature"] in out
    assert "200" in out
    secret = setup.secrets_by_channel()["coupons"]
    assert secret not in out + err

    receiver.answer("coupons", default=500)
    code, out, _ = await _cli("send-test", "--config", str(config), "coupons", env=setup.environ)
    assert code == 1
    assert "500" in out


async def test_send_test_prints_the_body_byte_for_byte_on_one_line(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Piped, in a narrow terminal: the body line is still the exact bytes that were signed."""
    setup = Setup(
        "127.0.0.1:1",
        receiver,
        [channel(receiver, "coupons")],
        {"c": ["coupons"]},
        tmp=str(tmp_path),
    )
    config = write_config(setup, tmp_path)
    document = setup.document()
    document["campaigns"][0]["template_params"]["title"] = "双十一 " + "long title " * 20
    config.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")

    code, out, err = await _cli(
        "send-test",
        "--config",
        str(config),
        "coupons",
        "--campaign",
        "c",
        env={**setup.environ, "COLUMNS": "40"},
    )
    assert code == 0, out + err
    [request] = receiver.received
    assert request.verified
    [body] = [
        line.removeprefix("body").lstrip(" ")
        for line in out.splitlines()
        if line.startswith("body ")
    ]
    assert len(body) > 200
    assert (
        sign(body.encode(), setup.secrets_by_channel()["coupons"])
        == request.headers["X-gio-signature"]
    )


async def test_check_config_lists_every_problem_with_exit_2(
    receiver: Receiver, tmp_path: Path
) -> None:
    setup = Setup(
        "127.0.0.1:1", receiver, [channel(receiver, "a")], {"c": ["a", "ghost"]}, tmp=str(tmp_path)
    )
    document = setup.document()
    document["channels"][0]["url"] = "ftp://nowhere"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    code, _, err = await _cli("check-config", "--config", str(path), env={})
    assert code == 2
    assert f"{path}: channels[0].url:" in err
    assert f"{path}: campaigns[0].channels[1]: unknown channel 'ghost'" in err
    assert f"{path}: channels[0].secret_env: environment variable SECRET_A is not set" in err
    assert "Traceback" not in err


async def test_an_unreachable_broker_is_one_clear_line_and_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                # 0: no wait (test_kafka_startup.py waits for a broker that is not up yet).
                "kafka": {"bootstrap_servers": "127.0.0.1:1", "startup_timeout_seconds": 0},
                "admin": {"host": "127.0.0.1", "port": 0},
                "allowed_networks": ["127.0.0.0/8"],
                "channels": [{"name": "a", "url": "http://127.0.0.1:9/"}],
            }
        ),
        encoding="utf-8",
    )
    code, _, err = await _cli("run", "--config", str(path), env={})
    assert code == 1
    assert err.splitlines() == [
        "webhook-consumer: KafkaUnavailable: cannot connect to Kafka (PLAINTEXT): "
        "127.0.0.1:1: Connection refused"
    ]
