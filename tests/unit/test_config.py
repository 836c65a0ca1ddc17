"""Loading the YAML config: the contract's example loads; every problem is reported, located."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from consumer.cli import main
from consumer.config import ConfigError, load_config

CONTRACT_EXAMPLE = """\
kafka: {bootstrap_servers: "127.0.0.1:9092", group_id: webhook-consumer,
        topic: user-threshold-events, dead_letter_topic: webhook-dead-letters}
attributes: {backend: sqlite, url: "sqlite:///./attributes.db"}   # sqlite | redis
allowed_networks: ["127.0.0.0/8"]
retry: {quick_attempts: 3, schedule_seconds: [5, 300, 1800, 7200, 18000, 36000, 36000]}
channels:
  - name: coupon-system                 # sent as payload "name"
    url: https://coupons.example.com/hooks/gio
    query: {source: gio}                # extra query parameters added to the URL
    secret_env: COUPON_WEBHOOK_SECRET   # or secret_file; no secret configured = ""
    basic_auth: {username: gio, password_env: COUPON_BASIC_PASSWORD}   # optional
    template_params: {campaignType: string, campaignDate: string, discount: string, quota: integer}
    user_attributes: [hobby, birthday]
    rate_limit: {per_second: 50, burst: 50}
    max_concurrency: 16
    timeout_seconds: 10
    batch: {max_users: 1, linger_ms: 0}  # >1 packs several users into one userAttr array
campaigns:
  - id: double11-coupon
    channels: [coupon-system]
    template_params: {campaignType: "双十一", campaignDate: "2020-04-29", discount: "20%", quota: 3}
"""
ENV = {"COUPON_WEBHOOK_SECRET": "the-webhook-secret", "COUPON_BASIC_PASSWORD": "the-password"}

Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture
def config_file(tmp_path: Path) -> Callable[..., Path]:
    """The contract's example, changed by `mutate`, written to a file."""

    def write(mutate: Mutation | None = None, text: str | None = None) -> Path:
        if text is None:
            data = yaml.safe_load(CONTRACT_EXAMPLE)
            if mutate is not None:
                mutate(data)
            text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
        path = tmp_path / "webhook-consumer.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def rejected(path: Path, environ: dict[str, str] = ENV) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ)
    return caught.value


def test_contract_example_loads(config_file: Callable[..., Path]) -> None:
    config = load_config(config_file(), environ=ENV)
    (channel,) = config.channels
    assert channel.name == "coupon-system"
    assert channel.query == {"source": "gio"}
    assert list(channel.template_params) == ["campaignType", "campaignDate", "discount", "quota"]
    assert channel.rate_limit is not None
    assert channel.rate_limit.capacity == 50
    assert config.campaigns[0].template_params["quota"] == 3
    assert config.retry.quick_attempts == 3
    assert config.kafka.dead_letter_topic == "webhook-dead-letters"
    assert channel.ordering == "none"  # per_user is asked for, never assumed
    assert config.kafka.order_topic == "webhook-consumer.order"  # derived from the group


def test_per_user_order_loads_and_the_order_topic_follows_the_group(
    config_file: Callable[..., Path],
) -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["kafka"]["group_id"] = "hooks-eu"
        data["channels"][0]["ordering"] = "per_user"

    config = load_config(config_file(mutate), environ=ENV)
    assert config.channels[0].ordering == "per_user"
    assert config.kafka.order_topic == "hooks-eu.order"


def _campaign(data: dict[str, Any]) -> dict[str, Any]:
    return data["campaigns"][0]  # type: ignore[no-any-return]


def _set_url(url: str) -> Mutation:
    return lambda data: data["channels"][0].update(url=url)


def _set_quota(value: object) -> Mutation:
    return lambda data: _campaign(data)["template_params"].update(quota=value)


CASES = {
    "unknown HTTP client": (
        lambda d: d.update(http={"client": "curl"}),
        "http.client",
        ["'lean' or 'aiohttp'", "'curl'"],
    ),
    "unknown channel": (
        lambda d: _campaign(d).update(channels=["coupon-sytem"]),
        "campaigns[0].channels[0]",
        ["unknown channel 'coupon-sytem'", "coupon-system"],
    ),
    "missing template param": (
        lambda d: _campaign(d)["template_params"].pop("quota"),
        "campaigns[0].template_params.quota",
        ["missing", "an integer"],
    ),
    "string for integer": (
        _set_quota("3"),
        "campaigns[0].template_params.quota",
        ["expected an integer", "'3'"],
    ),
    "boolean for integer": (
        _set_quota(True),
        "campaigns[0].template_params.quota",
        ["expected an integer", "True"],
    ),
    "float for integer": (
        _set_quota(3.5),
        "campaigns[0].template_params.quota",
        ["expected an integer", "3.5"],
    ),
    "ftp url": (_set_url("ftp://x"), "channels[0].url", ["http", "'ftp://x'"]),
    "not a url": (_set_url("not a url"), "channels[0].url", ["http", "'not a url'"]),
    "url without host": (_set_url("https:///hooks"), "channels[0].url", ["http"]),
    "unknown channel field": (
        lambda d: d["channels"][0].update(sekret="inline"),
        "channels[0].sekret",
        ["unknown field; did you mean secret?"],
    ),
    "secret inline": (
        lambda d: d["channels"][0].update(secret="inline"),
        "channels[0].secret",
        ['expected ""', "not shown"],
    ),
    "unknown top-level field": (lambda d: d.update(kafak={}), "kafak", ["unknown field"]),
    "missing channel url": (
        lambda d: d["channels"][0].pop("url"),
        "channels[0].url",
        ["required"],
    ),
    "unknown template type": (
        lambda d: d["channels"][0]["template_params"].update(quota="int"),
        "channels[0].template_params.quota",
        ["'int'"],
    ),
    "template param no channel declares": (
        lambda d: _campaign(d)["template_params"].update(discont="5%"),
        "campaigns[0].template_params.discont",
        ["not declared by any of its channels (coupon-system)"],
    ),
    "not a network": (
        lambda d: d.update(allowed_networks=["127.0.0.0/8", "10.0.0.0/33"]),
        "allowed_networks[1]",
        ["expected an IPv4 or IPv6 network like 10.0.0.0/8, got '10.0.0.0/33'"],
    ),
    "network with host bits": (
        lambda d: d.update(allowed_networks=["10.1.2.3/8"]),
        "allowed_networks[0]",
        ["got '10.1.2.3/8' (host bits set; the network is 10.0.0.0/8)"],
    ),
    "number for a network": (
        lambda d: d.update(allowed_networks=[5]),
        "allowed_networks[0]",
        ["expected an IPv4 or IPv6 network", "got 5"],
    ),
    "topic with a space": (
        lambda d: d["kafka"].update(topic="user events"),
        "kafka.topic",
        ["expected a Kafka topic name", "'user events'"],
    ),
    "unknown ordering": (
        lambda d: d["channels"][0].update(ordering="per_event"),
        "channels[0].ordering",
        ["'none' or 'per_user'", "'per_event'"],
    ),
    "per-user order of a batched channel": (
        lambda d: d["channels"][0].update(ordering="per_user", batch={"max_users": 20}),
        "channels[0].ordering",
        ["per_user needs batch.max_users 1", "got batch.max_users 20"],
    ),
}
KAFKA_NAMES = [
    "bootstrap_servers",
    "group_id",
    "topic",
    "dead_letter_topic",
    "retry_topic_prefix",
    "order_topic",
    "client_id",
]


@pytest.mark.parametrize(("mutate", "field", "expected"), CASES.values(), ids=list(CASES))
def test_problem_names_file_field_and_expectation(
    config_file: Callable[..., Path], mutate: Mutation, field: str, expected: list[str]
) -> None:
    path = config_file(mutate)
    error = rejected(path)
    (line,) = [line for line in str(error).splitlines() if f": {field}:" in line]
    assert line.startswith(f"{path}: {field}: ")
    for words in expected:
        assert words in line


@pytest.mark.parametrize("name", KAFKA_NAMES)
def test_every_kafka_name_must_be_non_empty(config_file: Callable[..., Path], name: str) -> None:
    path = config_file(lambda d: d["kafka"].update({name: ""}))
    assert str(rejected(path)) == f"{path}: kafka.{name}: expected a non-empty string, got ''"


def test_a_bad_network_is_one_plain_line(config_file: Callable[..., Path]) -> None:
    path = config_file(lambda d: d.update(allowed_networks=["banana"]))
    assert str(rejected(path)) == (
        f"{path}: allowed_networks[0]: expected an IPv4 or IPv6 network like 10.0.0.0/8, "
        "got 'banana'"
    )


def test_unset_secret_env_is_reported(config_file: Callable[..., Path]) -> None:
    path = config_file()
    error = rejected(path, environ={"COUPON_BASIC_PASSWORD": "x"})
    assert str(error) == (
        f"{path}: channels[0].secret_env: environment variable COUPON_WEBHOOK_SECRET is not set;"
        " expected it to hold the secret"
    )


def test_every_problem_is_reported_at_once(config_file: Callable[..., Path]) -> None:
    def break_everything(data: dict[str, Any]) -> None:
        data["channels"][0]["url"] = "ftp://x"
        _campaign(data)["channels"] = ["coupon-system", "nope"]
        _campaign(data)["template_params"]["quota"] = "3"

    path = config_file(break_everything)
    error = rejected(path, environ={"COUPON_BASIC_PASSWORD": "the-password"})
    assert len(error.problems) >= 4
    text = str(error)
    for field in (
        "channels[0].url",
        "campaigns[0].channels[1]",
        "campaigns[0].template_params.quota",
        "channels[0].secret_env",
    ):
        assert f"{path}: {field}: " in text
    assert "the-password" not in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "expected a mapping at the top level, got nothing (empty file)"),
        ("# only a comment\n", "expected a mapping at the top level, got nothing (empty file)"),
        ("- a\n- b\n", "expected a mapping at the top level, got list"),
        ("just text\n", "expected a mapping at the top level, got str"),
        ("channels: [\n", "line 2, column 1: not valid YAML: expected the node content"),
        ("kafka:\n  topic: x\n   bad: [\n", "line 3, column 7: not valid YAML: mapping values"),
        (
            "a: [1, 2\nb: 3\n",
            "line 2, column 2: not valid YAML: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence at line 1, column 4)",
        ),
        ('a: 1\nb: "\x01"\n', "line 2, column 5: not valid YAML: special characters are not"),
    ],
)
def test_unusable_file(config_file: Callable[..., Path], text: str, expected: str) -> None:
    path = config_file(text=text)
    error = rejected(path)
    assert str(error).startswith(f"{path}: {expected}")
    assert len(str(error).splitlines()) == 1


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert str(rejected(path)).startswith(f"{path}: cannot read the file")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("COLUMNS", raising=False)  # output piped, as in CI
    yield
    structlog.reset_defaults()  # check-config configures logging onto the captured stderr


@pytest.mark.usefixtures("cli_env")
def test_check_config_ok(
    config_file: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file()
    assert main(["check-config", "--config", str(path)]) == 0
    assert f"{path}: ok" in capsys.readouterr().out


def _break_three_ways(data: dict[str, Any]) -> None:
    data["channels"][0]["url"] = "not a url"
    _campaign(data)["channels"] = ["nope"]
    data["channels"][0]["secret_env"] = "WEBHOOK_CONSUMER_TEST_UNSET_VAR"


@pytest.mark.usefixtures("cli_env")
def test_check_config_lists_every_problem_and_exits_2(
    config_file: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(_break_three_ways)
    problems = rejected(path, environ=ENV).problems
    assert len(problems) == 3

    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    flat = "".join(err.split())
    for problem in problems:
        assert "".join(f"{path}: {problem}".split()) in flat


@pytest.mark.usefixtures("cli_env")
def test_check_config_prints_each_problem_on_one_line(
    config_file: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(_break_three_ways)
    problems = rejected(path, environ=ENV).problems
    assert main(["check-config", "--config", str(path)]) == 2
    lines = [line.strip() for line in capsys.readouterr().err.splitlines()]
    for problem in problems:
        assert f"{path}: {problem}" in lines


@pytest.mark.usefixtures("cli_env")
def test_check_config_without_config_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEBHOOK_CONSUMER_CONFIG", raising=False)
    assert main(["check-config"]) == 2
    assert "--config is required" in capsys.readouterr().err
