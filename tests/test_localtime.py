"""caisey.localtime, the wire's ``time_zone`` fields and the agent's zone (issue 14 item 1)."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.core import AgentCore
from agent.localzone import local_zone_name
from agent.store import Store
from caisey import wire
from caisey.errors import ProtocolError
from caisey.localtime import MAX_ZONE_CHARS, day_label, local_moment, resolve, weekday_of_day, zone_problem


@pytest.mark.parametrize(
    "name", ["UTC", "Europe/Berlin", "America/Argentina/ComodRivadavia", "Etc/GMT+5", "America/Port-au-Prince"]
)
def test_iana_names_are_well_formed(name: str) -> None:
    assert zone_problem(name) is None
    assert resolve(name).note is None and resolve(name).effective == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../etc/passwd",
        "/Europe/Berlin",
        "Europe/Berlin/",
        "Europe Berlin",
        "Europe/Berlin\n",
        "x" * 65,
        5,
        None,
        "Europe/\u0000",
        "Ünïcode/Zone",
    ],
)
def test_other_names_are_refused_by_shape(name: object) -> None:
    assert zone_problem(name) is not None


def test_a_well_formed_unknown_zone_reads_as_utc_with_a_note_and_never_raises() -> None:
    zone = resolve("Mars/Olympus_Mons")
    assert zone.name == "Mars/Olympus_Mons" and zone.effective == "UTC" and "unknown" in (zone.note or "")
    assert local_moment(0, zone).hour == 0
    assert resolve(None).effective == "UTC" and resolve(None).note


def test_local_moment_follows_the_zone_and_its_daylight_saving() -> None:
    berlin = resolve("Europe/Berlin")
    winter = int(datetime(2026, 1, 5, 11, 30, tzinfo=ZoneInfo("UTC")).timestamp() * 1000)  # a Monday
    summer = int(datetime(2026, 7, 6, 11, 30, tzinfo=ZoneInfo("UTC")).timestamp() * 1000)  # a Monday
    assert (local_moment(winter, berlin).hour, local_moment(summer, berlin).hour) == (12, 13)
    assert local_moment(winter, berlin).weekday == 0 == weekday_of_day(local_moment(winter, berlin).day)
    late = int(datetime(2026, 1, 4, 23, 30, tzinfo=ZoneInfo("UTC")).timestamp() * 1000)  # Sunday UTC
    assert local_moment(late, berlin).weekday == 0  # already Monday in Berlin
    assert day_label(local_moment(late, berlin).day) == "2026-01-05"
    assert local_moment(late, resolve("America/New_York")).weekday == 6


def test_hello_and_heartbeat_carry_an_optional_zone_and_refuse_a_malformed_one() -> None:
    hello = wire.Hello("h1", "ep", "1.0", 5, time_zone="Europe/Berlin")
    assert wire.decode(wire.encode(hello)) == hello
    old = wire.Hello("h1", "ep", "1.0", 5)
    assert "time_zone" not in wire.encode(old) and wire.decode(wire.encode(old)) == old
    beat = wire.Heartbeat("b1", 5, "d", time_zone="Asia/Tokyo")
    assert wire.decode(wire.encode(beat)) == beat
    for bad in ('"../x"', '"' + "A" * (MAX_ZONE_CHARS + 1) + '"', "5", "true"):
        raw = '{"v":1,"type":"heartbeat","id":"b1","sent_at_ms":5,"digest":"d","time_zone":' + bad + "}"
        with pytest.raises(ProtocolError) as exc:
            wire.decode(raw)
        assert exc.value.code in ("invalid_field", "missing_field", "invalid_type"), exc.value.code


def test_local_zone_name_from_the_environment_and_etc(tmp_path: Path) -> None:
    nothing = tmp_path / "none"
    assert local_zone_name({"CAISEY_TIME_ZONE": "Asia/Tokyo", "TZ": "UTC"}, nothing, nothing) == "Asia/Tokyo"
    assert local_zone_name({"TZ": ":Europe/Paris"}, nothing, nothing) == "Europe/Paris"
    (tmp_path / "timezone").write_text("Europe/Oslo\n")
    assert local_zone_name({"TZ": "EST5EDT,M3.2.0,M11.1.0"}, tmp_path / "timezone", nothing) == "Europe/Oslo"
    link = tmp_path / "localtime"
    link.symlink_to("/usr/share/zoneinfo/America/Chicago")
    assert local_zone_name({}, nothing, link) == "America/Chicago"
    (tmp_path / "garbage").write_text("not a zone at all\n")
    assert local_zone_name({}, tmp_path / "garbage", nothing) is None


def test_the_agent_names_its_zone_in_hello_and_a_change_in_its_next_heartbeat(tmp_path: Path) -> None:
    zone = ["Europe/Berlin"]
    core = AgentCore(Store.open(tmp_path), "ep-1", rng=random.Random(1), time_zone=lambda: zone[0])
    now = 1_800_000_000_000
    core.start(now)
    (hello,) = [wire.decode(f) for f in core.on_connected(now).send]
    assert isinstance(hello, wire.Hello) and hello.time_zone == "Europe/Berlin"
    core.on_frame(wire.encode(wire.HelloOk("B-ok", hello.id, now, now, 15_000)), now)

    def next_heartbeat() -> wire.Heartbeat:
        nonlocal now
        while True:
            deadline = core.next_deadline_ms()
            assert deadline is not None
            now = max(now, deadline)
            beats = [m for m in map(wire.decode, core.tick(now).send) if isinstance(m, wire.Heartbeat)]
            if beats:
                core.on_frame(wire.encode(wire.Ack("B-" + str(now), beats[0].id, now, now)), now)
                return beats[0]

    assert next_heartbeat().time_zone is None  # unchanged: the hello said it
    zone[0] = "Asia/Tokyo"
    assert next_heartbeat().time_zone == "Asia/Tokyo"
    zone[0] = "not a zone!"  # a name the wire would refuse is not sent
    assert next_heartbeat().time_zone is None
