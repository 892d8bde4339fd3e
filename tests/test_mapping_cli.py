"""`gateway mapping validate|test` as an operator runs them: the console script's function,
in this process (`gateway_command`), and the real console script where the process itself
is what is checked (its entry point, a sample's non-ASCII text on its stdout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import gateway_command

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "mappings"
PAYLOADS = ROOT / "tests" / "data" / "partner_payloads"
BAD = """name: broken
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa, transforms: [no_such_transform]}
  not_a_vehicle_field: placa
"""


def _gateway(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return gateway_command("mapping", *map(str, args))


def _process(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real console script, `python -m gateway mapping ARGS`, in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "mapping", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_validate_passes_a_shipped_mapping() -> None:
    result = _process("validate", MAPPINGS / "osmand.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("osmand.yaml: ok")


def test_validate_lists_every_problem_with_file_line_and_pointer(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text(BAD)
    result = _gateway("validate", bad)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert any(
        line.startswith(f"{bad}:6: /fields/plate") and "no_such_transform" in line for line in lines
    ), result.stderr
    assert any(line.startswith(f"{bad}:7: /fields/not_a_vehicle_field: ") for line in lines)


def test_validate_names_the_line_an_unclosed_bracket_opened(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\ndirection: inbound\nkey: [plate\nentity_type: vehicle\n")
    result = _gateway("validate", bad)
    assert result.returncode == 1
    assert result.stderr.startswith(f"{bad}:3: /: not valid YAML: "), result.stderr
    assert "flow sequence (line 3)" in result.stderr and "on line 4" in result.stderr


@pytest.mark.parametrize(
    ("mapping", "sample"),
    [("osmand.yaml", "osmand_query.txt"), ("flespi.yaml", "flespi_stream.json")],
)
def test_test_runs_a_shipped_mapping_on_its_sample(mapping: str, sample: str) -> None:
    result = _gateway("test", MAPPINGS / mapping, PAYLOADS / sample)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["direction"] == "inbound" and output["target"] == "positions"
    assert output["results"]
    assert all(r["document"]["tracker_id"] for r in output["results"])


def test_test_of_a_payload_that_does_not_fit_names_each_field(tmp_path: Path) -> None:
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps({"lat": "-23.5", "lon": "nowhere"}))
    result = _gateway("test", MAPPINGS / "osmand.yaml", sample)
    assert result.returncode == 1
    assert "does not fit mapping 'osmand'" in result.stderr
    assert f"{sample}: /lon: " in result.stderr
    assert "(target tracker_id)" in result.stderr


def test_test_response_maps_a_partner_answer(tmp_path: Path) -> None:
    draft = tmp_path / "hr.yaml"
    draft.write_text(
        "name: hr\ndirection: outbound\nentity_type: vehicle\npath:\n"
        "  plate: entity.plate\nresponse:\n  current_driver.cpf:\n"
        "    {from: condutorAtual.cpf, transforms: [digits, {pad: 11}]}\n"
    )
    result = _gateway("test", "--response", draft, PAYLOADS / "driver_lookup_response.json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["response"]["current_driver"]["cpf"].isdigit()


def test_test_reads_a_json_sample_in_the_charset_it_is_told(tmp_path: Path) -> None:
    """An ERP's windows-1252 JSON, which a trigger reads under `charset=windows-1252`: the
    CLI had no way to name it."""
    draft = tmp_path / "erp.yaml"
    draft.write_text(
        "name: erp\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "fields:\n  plate: placa\n  model: modelo\n"
    )
    sample = tmp_path / "erp.json"
    sample.write_bytes('{"placa": "ABC1D23", "modelo": "Fiorino – Câmbio"}'.encode("cp1252"))
    refused = _gateway("test", draft, sample)
    assert refused.returncode == 1 and "charset" in refused.stderr
    result = _gateway("test", "--charset", "windows-1252", draft, sample)
    assert result.returncode == 0, result.stderr
    (item,) = json.loads(result.stdout)["results"]
    assert item["document"]["model"] == "Fiorino – Câmbio"


def test_validate_and_test_read_a_mapping_file_as_an_upload_does(tmp_path: Path) -> None:
    """A mapping saved by a Windows editor: ANSI (windows-1252) with pt-BR words, or
    "Unicode" (UTF-16 with its byte order mark). `validate` said "file is not UTF-8" to both,
    with no way to name the charset."""
    text = (
        "name: erp\ndescription: veículos — São Paulo\ndirection: inbound\n"
        "entity_type: vehicle\nkey: [plate]\nfields:\n  plate: placa\n"
        "  model: {from: modelo, transforms: [{map: {values: {Caminhão: truck}}}]}\n"
    )
    ansi, unicode = tmp_path / "ansi.yaml", tmp_path / "unicode.yaml"
    ansi.write_bytes(text.encode("cp1252"))
    unicode.write_bytes(text.encode("utf-16"))
    refused = _gateway("validate", ansi)
    assert refused.returncode == 1 and "not UTF-8" in refused.stderr, refused.stderr
    assert "--charset windows-1252" in refused.stderr
    for args in (("--charset", "windows-1252", ansi), (unicode,)):
        result = _gateway("validate", *args)
        assert result.returncode == 0, result.stderr
    sample = tmp_path / "erp.json"
    sample.write_bytes('{"placa": "ABC1D23", "modelo": "Caminhão"}'.encode("cp1252"))
    result = _gateway("test", "--charset", "windows-1252", ansi, sample)
    assert result.returncode == 0, result.stderr
    (item,) = json.loads(result.stdout)["results"]
    assert item["document"]["model"] == "truck"


def test_missing_file_or_argument_is_a_usage_error(tmp_path: Path) -> None:
    assert _gateway("validate", tmp_path / "nope.yaml").returncode == 2
    assert _gateway("test", MAPPINGS / "osmand.yaml", tmp_path / "nope.json").returncode == 2
    assert _gateway("validate").returncode == 2


def test_validate_accepts_a_tenant_kind_it_cannot_know(tmp_path: Path) -> None:
    tyres = tmp_path / "tyres.yaml"
    tyres.write_text(
        "name: tyres\ndirection: inbound\nentity_type: other\nkind: tyre\nkey: [key]\n"
        "fields:\n  key: serie\n  serial: serie\n"
    )
    result = _gateway("validate", tyres)
    assert result.returncode == 0, result.stderr


def test_test_shows_the_occurrence_id_each_item_resolves_to_and_how_events_announce(
    tmp_path: Path,
) -> None:
    """An admin checks the id a redelivery is told apart by before going live: shown per
    item when the mapping declares `occurrence_id` (null for an item that gives none, whose
    events are announced every time), not at all otherwise."""
    webhook = PAYLOADS / "samsara_v2_geofence_exit.json"
    result = _gateway("test", MAPPINGS / "samsara-geofence.yaml", webhook)
    assert result.returncode == 0, result.stderr
    (item,) = json.loads(result.stdout)["results"]
    assert item["occurrence_id"] == json.loads(webhook.read_text())["eventId"]
    assert item["events"] == ["vehicle.geofence.exited"]
    assert item["announce"] == {"vehicle.geofence.exited": "every"}  # not the default: shown

    feed = tmp_path / "alarms.yaml"
    feed.write_text(
        "name: alarms\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nitems: alarms\n"
        "occurrence_id: id\nemit: [{type: vehicle.alert, announce: every}]\n"
        "fields:\n  plate: plate\n"
    )
    alarms = tmp_path / "alarms.json"
    alarms.write_text(
        json.dumps({"alarms": [{"plate": "ABC1D23", "id": 17}, {"plate": "ABC1D23", "id": " "}]})
    )
    result = _gateway("test", feed, alarms)
    assert result.returncode == 0, result.stderr
    assert [r["occurrence_id"] for r in json.loads(result.stdout)["results"]] == ["17", None]

    result = _gateway("test", MAPPINGS / "osmand.yaml", PAYLOADS / "osmand_query.txt")
    assert all(
        "occurrence_id" not in r and "announce" not in r
        for r in json.loads(result.stdout)["results"]
    )


def test_test_refuses_an_integer_beyond_64_bits_at_its_source_as_the_trigger_does(
    tmp_path: Path,
) -> None:
    """The field's final value is refused when the database cannot store it, so the CLI
    names the partner's field (`/batt`) and its target, as the dry run and the trigger do,
    not the fix's own path."""
    sample = tmp_path / "query.txt"
    sample.write_text("id=1&lat=-23.5&lon=-46.6&timestamp=1795685112&batt=99999999999999999999")
    result = _gateway("test", MAPPINGS / "osmand.yaml", sample)
    assert result.returncode == 1
    assert (
        f"{sample}: /batt: 99999999999999999999 is an integer beyond 64 bits (the database "
        "holds none) (target attributes.battery_percent)"
    ) in result.stderr, result.stderr


TIMES = """name: times
direction: inbound
target: positions
items: "@"
fields:
  tracker_id: {value: dev-1}
  time: {from: t, transforms: [{datetime: {parse: iso8601}}], required: true}
  lat: {value: 1.0}
  lon: {value: 1.0}
  speed_kmh: {from: sp}
"""


def test_test_on_a_batch_shows_every_items_result_and_names_the_bad_one(
    tmp_path: Path,
) -> None:
    """A batch with one item that does not fit (a date that does not exist) and one whose
    fix the append refuses (a speed sent as text): every item's result is shown, as the API's
    dry run gives it (the others' documents, the bad one's `errors`, a refused fix under
    `fix`), each problem named with its item's index and, for the fix, where the payload has
    it, as the trigger names it. Before, the first bad item stopped the run with a pointer
    that did not say which item it was, and a fix's problem was `/speed_kmh: /speed_kmh`."""
    mapping = tmp_path / "times.yaml"
    mapping.write_text(TIMES)
    batch = tmp_path / "batch.json"
    items = [
        {"t": "2026-03-08T02:30:00Z"},
        {"t": "2026-02-29T12:00:00Z"},
        {"t": "2026-12-05T20:00:00Z", "sp": "42"},
    ]
    batch.write_text(json.dumps(items))
    result = _gateway("test", mapping, batch)
    assert result.returncode == 1, result.stderr
    ok, bad, refused = json.loads(result.stdout)["results"]
    assert (ok["index"], ok["document"]["time"], ok["fix"]) == (
        0,
        "2026-03-08T02:30:00Z",
        {"errors": []},
    )
    assert bad["index"] == 1 and [e["pointer"] for e in bad["errors"]] == ["/t"], bad
    (problem,) = refused["fix"]["errors"]
    assert (problem["pointer"], problem["target"]) == ("/sp", "speed_kmh"), problem
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"{batch}: item 1: /t: cannot read") for line in lines), lines
    assert f"{batch}: item 2: /sp: speed_kmh (from sp): a number (target speed_kmh)" in lines


def test_test_on_one_fix_the_append_refuses_names_its_source_as_the_trigger_does(
    tmp_path: Path,
) -> None:
    mapping = tmp_path / "times.yaml"
    mapping.write_text(TIMES.replace('items: "@"\n', ""))
    sample = tmp_path / "one.json"
    sample.write_text('{"t": "2026-12-05T20:00:00Z", "sp": "42"}')
    result = _gateway("test", mapping, sample)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{sample}: /sp: speed_kmh (from sp): a number (target speed_kmh)"
    ], result.stderr


FLAGS = """name: flags
direction: inbound
entity_type: vehicle
key: [plate]
params:
  authoritative: {enum: [true, false], default: false}
fields:
  plate: plate
"""


def test_a_param_problem_names_json_values_and_a_param_without_value_is_a_usage_error(
    tmp_path: Path,
) -> None:
    mapping, sample = tmp_path / "flags.yaml", tmp_path / "s.json"
    mapping.write_text(FLAGS)
    sample.write_text('{"plate": "ABC1D23"}')
    done = _gateway("test", mapping, sample, "--param", "authoritative=True")
    assert done.returncode == 1
    assert "is one of true, false" in done.stderr and "True" not in done.stderr.split(":", 1)[1]
    done = _gateway("test", mapping, sample, "--param", "authoritative")
    assert done.returncode == 2 and "expected NAME=VALUE" in done.stderr, done.stderr


def test_test_reads_an_xml_sample_in_the_encoding_its_declaration_names(tmp_path: Path) -> None:
    """Brazilian SOAP partners (Sascar, ERPs) answer in ISO-8859-1: the sample is read as the
    XML trigger and the dry run read it, not refused as "not UTF-8"."""
    shared = (
        ROOT / "tests" / "data" / "partner_payloads" / "sascar_pacote_posicoes.xml"
    ).read_text()
    latin1 = tmp_path / "sascar_latin1.xml"
    latin1.write_bytes(
        shared.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"').encode("latin-1")
    )
    done = _process("test", MAPPINGS / "sascar-pacote-posicoes.yaml", latin1)
    assert done.returncode == 0, done.stderr
    assert "São Paulo" in done.stdout
    utf8 = tmp_path / "sascar.xml"
    utf8.write_text(shared)
    assert _gateway("test", MAPPINGS / "sascar-pacote-posicoes.yaml", utf8).stdout == done.stdout


def test_a_utf16_json_or_xml_sample_is_read_as_a_trigger_reads_it(
    tmp_path: Path,
) -> None:
    """Notepad's "Unicode" and PowerShell's `>` write UTF-16 with a byte order mark, which a
    trigger reads (RFC 7159 allowed it): a JSON sample so saved is read too (never "malformed
    XML"), and so is XML."""
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "name: m1\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "fields:\n  plate: {from: placa, transforms: [plate]}\n"
    )
    sample = tmp_path / "s.json"
    sample.write_bytes(json.dumps({"placa": "ABC1D23"}).encode("utf-16"))
    done = _gateway("test", mapping, sample)
    assert done.returncode == 0 and "ABC1D23" in done.stdout, done.stderr
    for encoding in ("utf-16-le", "utf-16-be"):
        xml = tmp_path / f"s-{encoding}.xml"
        xml.write_bytes("\ufeff\n <placa>ABC1D23</placa>".encode(encoding))
        done = _gateway("test", mapping, xml)
        assert done.returncode == 0 and "ABC1D23" in done.stdout, (encoding, done.stderr)


def test_validate_and_test_warn_of_the_old_names_a_mapping_uses(tmp_path: Path) -> None:
    """As an upload answers them: a mapping writing (inbound) or reading (outbound) a renamed
    member under its old name passes, and each use is named with its new name."""
    written = tmp_path / "written.yaml"
    written.write_text(
        "name: w\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields:\n"
        "  plate: placa\n  last_position.latitude: lat\n"
    )
    read = tmp_path / "read.yaml"
    read.write_text("name: r\ndirection: outbound\nbody:\n  y: entity.last_position.latitude\n")
    result = _gateway("validate", written)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"{written}: warning: /fields/last_position.latitude: 'last_position.latitude' is a "
        "deprecated name, write 'last_position.lat'"
    ]
    context = tmp_path / "context.json"
    context.write_text('{"entity": {"last_position": {"lat": -23.5, "lon": -46.6}}}')
    result = _gateway("test", read, context)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["request"]["body"] == {"y": -23.5}
    assert result.stderr.splitlines() == [
        f"{read}: warning: /body/y: 'last_position.latitude' is a deprecated name, read "
        "'last_position.lat'"
    ]


def test_a_sample_a_trigger_refuses_is_refused_with_the_triggers_message(tmp_path: Path) -> None:
    """A double-encoded body (a JSON string holding the object: `JSON.stringify` twice) maps
    with `from_json(@)` but every POST of it is a 400: the check says so, in the trigger's
    words, instead of passing."""
    mapping = tmp_path / "double.yaml"
    mapping.write_text(
        "name: double\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "fields:\n  plate: {from: 'from_json(@).placa', transforms: [plate]}\n"
    )
    sample = tmp_path / "double.json"
    sample.write_text(json.dumps(json.dumps({"placa": "STR1A11"})))
    done = _gateway("test", mapping, sample)
    assert done.returncode == 1, done.stdout
    assert done.stderr.splitlines() == [
        f"{mapping}: a trigger refuses this body: the body must be a JSON object or an array "
        "of objects",
        f"{sample}: /: the body must be a JSON object or an array of objects",
    ]
    for value in ("42", "null"):
        sample.write_text(value)
        done = _gateway("test", mapping, sample)
        assert done.returncode == 1 and "must be a JSON object" in done.stderr, done


def test_a_json_lines_sample_is_a_batch_as_a_trigger_reads_it(tmp_path: Path) -> None:
    """flespi and log shippers post JSON Lines, which a trigger reads as a batch: so does the
    check, an item a line; a line that is not an object is refused as the trigger does."""
    mapping = tmp_path / "lines.yaml"
    mapping.write_text(
        "name: lines\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
        "fields:\n  plate: {from: placa, transforms: [plate]}\n  odometer_km: km\n"
    )
    sample = tmp_path / "batch.jsonl"
    sample.write_text('{"placa": "ABC1D23", "km": 10}\n{"placa": "XYZ9J87", "km": 20}\n')
    done = _gateway("test", mapping, sample)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert [(r["index"], r["document"]) for r in results] == [
        (0, {"plate": "ABC1D23", "odometer_km": 10}),
        (1, {"plate": "XYZ9J87", "odometer_km": 20}),
    ]
    sample.write_text('{"placa": "ABC1D23"}\n[1]\n')
    done = _gateway("test", mapping, sample)
    assert done.returncode == 1
    assert "malformed JSON" in done.stderr, done.stderr


def test_mapping_commands_and_help_start_without_the_web_app_or_the_database_driver() -> None:
    """`gateway mapping validate` imported the whole gateway (the web app, every store, the
    database driver) before reading a file: 3 s for an answer of one line. A command now
    imports what it runs; what it reaches is checked in a fresh interpreter."""
    check = (
        "import sys\n"
        "from gateway.__main__ import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = sorted(m for m in ('aiohttp', 'pymongo', 'gateway.app', 'gateway.services',"
        " 'gateway.store') if m in sys.modules)\n"
        "print(*loaded, file=sys.stderr)\n"
    )
    sample = PAYLOADS / "osmand_query.txt"
    # Without MONGODB_URI: a URI set is checked by the driver's parser at every start.
    env = {name: value for name, value in os.environ.items() if name != "MONGODB_URI"}
    for args in (
        ["mapping", "validate", str(MAPPINGS / "osmand.yaml")],
        ["mapping", "test", str(MAPPINGS / "osmand.yaml"), str(sample)],
        ["--help"],
    ):
        done = subprocess.run(
            [sys.executable, "-c", check, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env=env,
        )
        assert done.stderr.strip() == "", (args, done.stderr)
