"""The appliance's TOML configuration: defaults, overrides, and refusals of what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import ApplianceConfig, ConfigError, load_config, parse_listen

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    return path


def test_the_shipped_example_loads() -> None:
    config = load_config(ROOT / "systemd" / "appliance.toml.example")
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 3180)
    assert config.gps.pps_device == "/dev/pps0"
    assert len(config.ntp.servers) == 3
    assert config.clock.quorum == 2 and config.clock.max_error_s == 1.0


def test_defaults_listen_on_loopback_3180() -> None:
    config = load_config(None)
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 3180)
    assert not config.simulate


def test_values_and_overrides(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            '[appliance]\nlisten = "[::1]:4000"\n[gps]\ndevice = "/dev/ttyAMA0"\n'
            'latency_s = 0.2\n[ntp]\nservers = ["a", "b:1123"]\npoll_interval_s = 32\n',
        )
    )
    assert (config.listen_host, config.listen_port) == ("::1", 4000)
    assert config.gps.latency_s == 0.2 and config.ntp.poll_interval_s == 32.0
    over = config.with_overrides(simulate=True, data_dir=tmp_path, listen="0.0.0.0:9")
    assert over.simulate and over.data_dir == tmp_path and over.listen_port == 9
    assert over.path("keys/tsa.key") == tmp_path / "keys" / "tsa.key"
    assert over.path("/etc/x.pem") == Path("/etc/x.pem")
    assert config.tsa.workers == 0  # the main process alone, by default
    assert config.with_overrides(workers=3).tsa.workers == 3
    with pytest.raises(ConfigError, match="workers: expected 0 to 32"):
        config.with_overrides(workers=-1)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[gps]\ndevise = 1\n", "unknown key 'devise'"),
        ("[gpss]\n", "unknown section"),
        ("[appliance]\nport = 3\n", "unknown key 'port'"),
        ("[clock]\nquorum = 'two'\n", "expected int"),
        ("[ntp]\nservers = 'a'\n", "list of strings"),
        ("[appliance]\nlisten = 'nowhere'\n", "HOST:PORT"),
        ("[appliance]\nlisten = 'h:99999'\n", "out of range"),
        ("[gps\n", "not valid TOML"),
        ("[clock]\nmax_error_s = true\n", "expected float"),
        ("[tsa]\nworkers = 99\n", "workers: expected 0 to 32"),
        ("[tsa]\nworkers = 'two'\n", "expected int"),
    ],
)
def test_mistakes_are_refused_with_the_reason(tmp_path: Path, text: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        load_config(write(tmp_path, text))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:3180") == ("127.0.0.1", 3180)
    assert parse_listen("[::1]:3190") == ("::1", 3190)
    with pytest.raises(ConfigError):
        parse_listen(":80")
    assert ApplianceConfig().listen_port == 3180


def test_policy_takes_the_clock_section_and_the_leap_second_list(tmp_path: Path) -> None:
    from appliance.runtime.driver_threads import policy_for

    leaps = tmp_path / "leap-seconds.list"
    # NTP seconds, TAI-UTC: 2017-01-01 brought TAI-UTC from 36 to 37.
    leaps.write_text("#$ 3676924800\n3644697600 36\n3692217600 37\n")
    config = load_config(
        write(tmp_path, f'[clock]\nquorum = 3\nhidden_faults = 0\nleap_seconds_file = "{leaps}"\n')
    )
    policy = policy_for(config)
    assert policy.quorum == 3 and policy.hidden_faults == 0
    assert [leap.at_posix_s for leap in policy.leap_seconds] == [1483228800]


def test_an_unreadable_leap_second_list_is_not_fatal(tmp_path: Path) -> None:
    from appliance.runtime.driver_threads import policy_for

    config = load_config(write(tmp_path, '[clock]\nleap_seconds_file = "/nonexistent/list"\n'))
    assert policy_for(config).leap_seconds == ()


def test_ntp_server_addresses_with_and_without_a_port() -> None:
    from appliance.config import parse_host_port

    assert parse_host_port("pool.example", default_port=123) == ("pool.example", 123)
    assert parse_host_port("10.0.0.1:1123", default_port=123) == ("10.0.0.1", 1123)
    assert parse_host_port("2001:db8::1", default_port=123) == ("2001:db8::1", 123)
    assert parse_host_port("::1", default_port=123) == ("::1", 123)
    assert parse_host_port("[::1]:1123", default_port=123) == ("::1", 1123)
    with pytest.raises(ConfigError):
        parse_host_port("host:port", default_port=123)
