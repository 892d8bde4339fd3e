"""Partners that do not send UTF-8 JSON: legacy ERPs and Brazilian platforms post Latin-1
(and say so in the Content-Type), Windows tools put a byte order mark first, Java clients
label UTF-8 bytes `charset=ISO-8859-1`. Every case goes through a trigger over HTTP."""

from __future__ import annotations

import gzip
import json
from typing import Any

from gateway.formats.bodies import FORM
from tests.support import auth
from tests.triggers_support import Client, bearer, create_trigger, upload_mapping

ERP_VEHICLE = """
name: erp-vehicle
direction: inbound
entity_type: vehicle
key: [plate]
fields:
  plate: {from: placa, transforms: [plate]}
  attributes.city: cidade
  attributes.operator: operador
"""
PAYLOAD = {"placa": "ABC-1D23", "cidade": "São João da Boa Vista", "operador": "Conceição"}


async def _post(
    client: Client, trigger: dict[str, Any], data: bytes, content_type: str
) -> tuple[int, Any]:
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=data,
        headers={**bearer(trigger), "Content-Type": content_type},
    )
    return response.status, await response.json()


async def _attributes(client: Client) -> dict[str, Any]:
    response = await client.get("/api/v1/entities/vehicle/ABC1D23", headers=auth("acme"))
    assert response.status == 200, await response.text()
    return dict((await response.json())["attributes"])


async def _erp_trigger(client: Client, **spec: Any) -> dict[str, Any]:
    await upload_mapping(client, ERP_VEHICLE)
    return await create_trigger(client, mapping="erp-vehicle", **spec)


async def test_a_latin_1_json_body_that_names_its_charset_is_read_in_it(client: Client) -> None:
    trigger = await _erp_trigger(client)
    body = json.dumps(PAYLOAD, ensure_ascii=False).encode("latin-1")
    status, answer = await _post(client, trigger, body, "application/json; charset=ISO-8859-1")
    assert status == 201, answer
    assert await _attributes(client) == {
        "city": "São João da Boa Vista",
        "operator": "Conceição",
    }


async def test_utf_8_json_labelled_latin_1_is_read_as_utf_8_not_garbled(client: Client) -> None:
    trigger = await _erp_trigger(client)
    body = json.dumps(PAYLOAD, ensure_ascii=False).encode()
    status, answer = await _post(client, trigger, body, "application/json;charset=iso-8859-1")
    assert status == 201, answer
    assert (await _attributes(client))["city"] == "São João da Boa Vista"


async def test_a_json_body_with_a_byte_order_mark_is_read(client: Client) -> None:
    trigger = await _erp_trigger(client)
    body = b"\xef\xbb\xbf" + json.dumps(PAYLOAD, ensure_ascii=False).encode()
    status, answer = await _post(client, trigger, body, "application/json; charset=utf-8")
    assert status == 201, answer
    assert (await _attributes(client))["operator"] == "Conceição"


async def test_latin_1_json_without_a_charset_is_a_400_that_says_to_name_it(
    client: Client,
) -> None:
    trigger = await _erp_trigger(client)
    body = json.dumps(PAYLOAD, ensure_ascii=False).encode("latin-1")
    status, problem = await _post(client, trigger, body, "application/json")
    assert status == 400
    assert problem["detail"] == (
        "malformed JSON: the body is not valid UTF-8 (byte 34); a partner that sends another "
        "encoding names it: Content-Type: application/json; charset=ISO-8859-1"
    )


async def test_bytes_that_are_not_of_the_named_charset_are_a_400_naming_it(
    client: Client,
) -> None:
    trigger = await _erp_trigger(client)
    body = b'{"placa": "ABC1D23", "cidade": "\x81"}'  # 0x81: no character in windows-1250
    status, problem = await _post(client, trigger, body, "application/json; charset=windows-1250")
    assert status == 400
    assert problem["detail"] == "malformed JSON: the body is not valid windows-1250 (byte 32)"
    status, problem = await _post(client, trigger, body, "application/json; charset=klingon")
    assert (status, problem["detail"]) == (400, "malformed JSON: unknown charset 'klingon'")


async def test_a_latin_1_form_body_that_names_its_charset_is_read_in_it(client: Client) -> None:
    trigger = await _erp_trigger(client, format="form")
    form = "placa=ABC1D23&cidade=S%E3o+Jo%E3o+da+Boa+Vista&operador=Concei\xe7\xe3o"
    status, answer = await _post(
        client,
        trigger,
        form.encode("latin-1"),
        "application/x-www-form-urlencoded; charset=ISO-8859-1",
    )
    assert status == 201, answer
    assert await _attributes(client) == {
        "city": "São João da Boa Vista",
        "operator": "Conceição",
    }


async def test_a_latin_1_form_body_without_a_charset_is_a_400_that_says_to_name_it(
    client: Client,
) -> None:
    trigger = await _erp_trigger(client, format="form")
    status, problem = await _post(
        client, trigger, b"placa=ABC1D23&cidade=S%E3o+Paulo", "application/x-www-form-urlencoded"
    )
    assert status == 400
    assert (
        "names it: Content-Type: application/x-www-form-urlencoded; charset=" in (problem["detail"])
    )


async def test_a_gzip_body_is_read_and_its_inflated_size_counts_against_the_limit(
    client: Client,
) -> None:
    trigger = await _erp_trigger(client, max_body_bytes=4096)
    body = gzip.compress(json.dumps(PAYLOAD).encode())
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=body,
        headers={**bearer(trigger), "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status == 201, await response.text()
    assert (await _attributes(client))["city"] == "São João da Boa Vista"
    inflated = json.dumps({**PAYLOAD, "padding": "0" * 100_000}).encode()
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=gzip.compress(inflated),
        headers={**bearer(trigger), "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status == 413, await response.text()


async def test_a_content_coding_that_is_not_decoded_is_a_415_naming_those_that_are(
    client: Client,
) -> None:
    """RFC 9110 §15.5.16: aiohttp decodes a lone gzip or deflate and passes any other coding
    through, so `compress`, `x-gzip` or `gzip, gzip` bodies were read as if plain (a plain
    body so labelled was written)."""
    trigger = await _erp_trigger(client)
    plain = json.dumps(PAYLOAD).encode()
    for coding in ("compress", "x-foo", "x-gzip", "gzip, gzip", "identity, gzip"):
        response = await client.post(
            f"/hooks/{trigger['id']}",
            data=plain,
            headers={
                **bearer(trigger),
                "Content-Type": "application/json",
                "Content-Encoding": coding,
            },
        )
        assert response.status == 415, (coding, await response.text())
        assert response.headers["Content-Type"].startswith("application/problem+json")
        assert response.headers["Accept-Encoding"] == "gzip, deflate"
        problem = await response.json()
        assert problem["detail"] == (
            f"the body's Content-Encoding {coding!r} is not supported: send it as it is, or in "
            "one of gzip, deflate"
        )
    listed = await client.get("/api/v1/entities/vehicle", headers=auth("acme"))
    assert (await listed.json())["items"] == []
    response = await client.post(
        f"/hooks/{trigger['id']}",
        data=plain,
        headers={
            **bearer(trigger),
            "Content-Type": "application/json",
            "Content-Encoding": "identity",
        },
    )
    assert response.status == 201, await response.text()


async def test_a_content_coding_on_a_request_without_a_body_says_nothing(client: Client) -> None:
    """An OsmAnd GET writes from its query string: a stray Content-Encoding on it (some
    HTTP stacks send their defaults) has no body to apply to."""
    trigger = await create_trigger(client, format="form", auth={"token_in_query": "token"})
    response = await client.get(
        f"/hooks/{trigger['id']}?token={trigger['token']}&plate=ABC1D23",
        headers={"Content-Encoding": "x-foo"},
    )
    assert response.status == 201, await response.text()


async def test_an_admin_body_in_a_coding_that_is_not_decoded_is_a_415_too(client: Client) -> None:
    response = await client.post(
        "/api/v1/entities/vehicle",
        data=b'{"plate": "ABC1D23"}',
        headers={
            **auth("acme"),
            "Content-Type": "application/json",
            "Content-Encoding": "compress",
        },
    )
    assert response.status == 415, await response.text()
    assert response.headers["Accept-Encoding"] == "gzip, deflate"
    listed = await client.get("/api/v1/entities/vehicle", headers=auth("acme"))
    assert (await listed.json())["items"] == []


async def test_utf_16_json_from_a_dotnet_client_is_read_by_its_mark_or_its_charset(
    client: Client,
) -> None:
    """.NET's `Encoding.Unicode` writes UTF-16 (little-endian, no mark) and says so; other
    tools write a byte order mark and no charset. ASCII text in UTF-16 would pass for UTF-8
    with NULs in it: read as UTF-8, it was malformed JSON."""
    trigger = await _erp_trigger(client)
    text = json.dumps(PAYLOAD, ensure_ascii=False)
    ascii_text = json.dumps({"placa": "ABC-1D23", "operador": "Joao"})
    for body, content_type, operator in (
        (ascii_text.encode("utf-16-le"), "application/json; charset=utf-16le", "Joao"),
        (text.encode("utf-16-le"), "application/json; charset=utf-16", "Conceição"),
        (ascii_text.encode("utf-16"), "application/json", "Joao"),
        (text.encode("utf-32"), "application/json", "Conceição"),
    ):
        status, answer = await _post(client, trigger, body, content_type)
        assert status in (200, 201), (content_type, answer)
        assert (await _attributes(client))["operator"] == operator


async def test_utf_16_or_32_json_with_its_mark_is_read_whatever_its_label_or_none(
    client: Client,
) -> None:
    """A body that starts as JSON after a byte order mark is JSON whatever its Content-Type
    (docs/triggers.md): the mark was read only as UTF-8's, so UTF-16/32 under text/plain,
    octet-stream or no type was a 415 (on a form trigger too)."""
    trigger = await _erp_trigger(client)
    form = await create_trigger(client, name="form", mapping="erp-vehicle", format="form")
    text = json.dumps(PAYLOAD, ensure_ascii=False)
    for n, codec in enumerate(("utf-16", "utf-16-be", "utf-32", "utf-32-be")):
        mark = "" if codec in ("utf-16", "utf-32") else "\ufeff\r\n"  # (those write one)
        body = (mark + text.replace("Conceição", f"Conceição {n}")).encode(codec)
        for target, content_type in (
            (trigger, None),
            (trigger, "text/plain"),
            (trigger, "application/octet-stream"),
            (form, None),
        ):
            headers = {} if content_type is None else {"Content-Type": content_type}
            response = await client.post(
                f"/hooks/{target['id']}",
                data=body,
                headers={**bearer(target), **headers},
                skip_auto_headers=() if content_type else ("Content-Type",),
            )
            assert response.status in (200, 201), (codec, content_type, await response.text())
            assert (await _attributes(client))["operator"] == f"Conceição {n}"


WINDOWS_1252 = {"placa": "ABC-1D23", "cidade": "Av. São João – “Centro”", "operador": "R$ 5… €"}


async def test_windows_1252_bytes_under_a_latin_1_or_ascii_label_are_read_as_windows_1252(
    client: Client,
) -> None:
    """Delphi and Windows ERPs write windows-1252 and label it ISO-8859-1 (or us-ascii): its
    dashes, curly quotes, ellipsis and euro (0x80-0x9F) were stored as invisible C1 control
    characters (`\\x96`, `\\x93`). As the WHATWG Encoding Standard (and every browser) reads
    them, those labels mean windows-1252; its five bytes without a character (0x81, 0x8D,
    0x8F, 0x90, 0x9D) are the code points Latin-1 gives them, never a refused body. The same
    for a JSON body, a form and an XML document whose declaration names ISO-8859-1."""
    trigger = await _erp_trigger(client)
    body = json.dumps(WINDOWS_1252, ensure_ascii=False).encode("cp1252")
    for label in ("ISO-8859-1", "latin1", "us-ascii", "windows-1252", " Cp1252 "):
        status, answer = await _post(client, trigger, body, f"application/json; charset={label}")
        assert status in (200, 201), (label, answer)
        assert await _attributes(client) == {
            "city": "Av. São João – “Centro”",
            "operator": "R$ 5… €",
        }
    undefined = b'{"placa": "ABC1D23", "cidade": "\x81\x8d\x8f\x90\x9d", "operador": "\x80"}'
    status, answer = await _post(client, trigger, undefined, "application/json; charset=latin1")
    assert status == 200, answer
    assert await _attributes(client) == {"city": "\x81\x8d\x8f\x90\x9d", "operator": "€"}
    form = await create_trigger(client, name="form", mapping="erp-vehicle", format="form")
    data = "placa=ABC1D23&cidade=Av.+S%E3o+Jo%E3o+%96+%93Centro%94&operador=\x85".encode("latin-1")
    form_type = "application/x-www-form-urlencoded; charset=iso-8859-1"
    status, answer = await _post(client, form, data, form_type)
    assert status == 200, answer
    assert await _attributes(client) == {"city": "Av. São João – “Centro”", "operator": "…"}
    await upload_mapping(
        client,
        "name: erp-xml\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields:\n"
        "  plate: {from: veiculo.placa, transforms: [plate]}\n  attributes.city: veiculo.cidade\n",
    )
    xml = await create_trigger(client, name="xml", mapping="erp-xml", format="xml")
    document = (
        '<?xml version="1.0" encoding="ISO-8859-1"?>'
        "<veiculo><placa>ABC1D23</placa><cidade>São Paulo – “Sé”</cidade></veiculo>"
    ).encode("cp1252")
    status, answer = await _post(client, xml, document, "text/xml")
    assert status == 200, answer
    assert (await _attributes(client))["city"] == "São Paulo – “Sé”"


async def test_utf_8_xml_under_an_ascii_label_is_read_as_utf_8_not_garbled(
    client: Client,
) -> None:
    """Bytes past ASCII under a us-ascii label (the media type's or the declaration's) are
    UTF-8 more often than not, as JSON, forms and multipart parts read them: `São Paulo` was
    stored as `SÃ£o Paulo`. Bytes that are not UTF-8 stay windows-1252, and a Latin-1 label
    keeps its word."""
    await upload_mapping(
        client,
        "name: erp-xml\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\nfields:\n"
        "  plate: {from: veiculo.placa, transforms: [plate]}\n  attributes.city: veiculo.cidade\n",
    )
    xml = await create_trigger(client, name="xml", mapping="erp-xml", format="xml")
    element = "<veiculo><placa>ABC1D23</placa><cidade>São Paulo – “Sé”</cidade></veiculo>"
    declared = f'<?xml version="1.0" encoding="US-ASCII"?>{element}'
    for document, content_type in (
        (element.encode(), "text/xml; charset=us-ascii"),
        (declared.encode(), "text/xml"),
        (declared.encode(), "application/xml; charset=ASCII"),
    ):
        status, answer = await _post(client, xml, document, content_type)
        assert status in (200, 201), (content_type, answer)
        assert (await _attributes(client))["city"] == "São Paulo – “Sé”", content_type
    status, answer = await _post(client, xml, declared.encode("cp1252"), "text/xml")
    assert status == 200, answer
    assert (await _attributes(client))["city"] == "São Paulo – “Sé”"
    latin = element.replace("–", "-").replace("“", '"').replace("”", '"')
    status, answer = await _post(client, xml, latin.encode(), "text/xml; charset=ISO-8859-1")
    assert status == 200, answer
    assert (await _attributes(client))["city"] == 'SÃ£o Paulo - "SÃ©"'


async def test_a_form_triggers_query_string_is_read_in_the_charset_the_request_names(
    client: Client,
) -> None:
    """docs/triggers.md#encodings: Latin-1 percent-escapes are read in the charset named. The
    query string was read as UTF-8 alone: a legacy device's GET `cidade=S%E3o+Paulo` was a
    400 under `charset=ISO-8859-1` too, and so was a POST whose Latin-1 form body was read
    so while one of its fields rode in the query string."""
    trigger = await _erp_trigger(client, format="form", methods=["GET", "POST"])
    token = trigger["token"]
    latin_1 = {"Content-Type": "application/x-www-form-urlencoded; charset=ISO-8859-1"}
    response = await client.get(
        f"/hooks/{trigger['id']}?placa=ABC1D23&cidade=S%E3o+Jo%E3o&operador=%96",
        headers={**latin_1, "Authorization": f"Bearer {token}"},
    )
    assert response.status == 201, await response.text()
    assert await _attributes(client) == {"city": "São João", "operator": "–"}  # 0x96: windows-1252
    response = await client.post(
        f"/hooks/{trigger['id']}?cidade=Bras%EDlia",
        data=b"placa=ABC1D23&operador=Concei%E7%E3o",
        headers={**latin_1, "Authorization": f"Bearer {token}"},
    )
    assert response.status == 200, await response.text()  # the vehicle updated
    assert await _attributes(client) == {"city": "Brasília", "operator": "Conceição"}


async def test_a_query_string_field_that_is_not_utf_8_is_a_400_naming_it_and_the_remedy(
    client: Client,
) -> None:
    trigger = await _erp_trigger(client, format="form", methods=["GET", "POST"])
    response = await client.get(
        f"/hooks/{trigger['id']}?placa=ABC1D23&cidade=S%E3o+Paulo", headers=bearer(trigger)
    )
    problem = await response.json()
    assert response.status == 400, problem
    assert problem["detail"] == (
        "the query string field 'cidade' is not valid UTF-8 once decoded; a partner that sends "
        "another encoding names it: Content-Type: application/x-www-form-urlencoded; "
        'charset=ISO-8859-1 (or the trigger says it: "charset": "windows-1252")'
    )
    unknown = {**bearer(trigger), "Content-Type": f"{FORM}; charset=klingon"}
    response = await client.get(f"/hooks/{trigger['id']}?cidade=S%E3o", headers=unknown)
    detail = (await response.json())["detail"]
    assert (response.status, detail) == (400, "the query string: unknown charset 'klingon'")


async def test_a_triggers_charset_reads_what_a_partner_that_cannot_set_its_headers_sends(
    client: Client,
) -> None:
    """A device whose GET has no body to carry a label, a Delphi ERP posting windows-1252
    JSON under a bare `application/json`: every call was a 400, nothing kept. The trigger's
    `charset` names what they send; a request that names its own is read in that, and UTF-8
    is UTF-8 still."""
    await upload_mapping(client, ERP_VEHICLE)
    refused = await client.post(
        "/api/v1/triggers",
        json={"name": "x", "entity_type": "vehicle", "mapping": "erp-vehicle", "charset": "hex"},
        headers=auth(),
    )
    assert refused.status == 422
    assert [e["pointer"] for e in (await refused.json())["errors"]] == ["/charset"]
    trigger = await create_trigger(
        client, mapping="erp-vehicle", format="form", methods=["GET"], charset="windows-1252"
    )
    assert trigger["charset"] == "windows-1252"
    response = await client.get(
        f"/hooks/{trigger['id']}?placa=ABC1D23&cidade=S%E3o+Paulo", headers=bearer(trigger)
    )
    assert response.status == 201, await response.text()
    assert (await _attributes(client))["city"] == "São Paulo"

    erp = await create_trigger(client, name="delphi", mapping="erp-vehicle")
    body = json.dumps(PAYLOAD, ensure_ascii=False).encode("cp1252")
    status, _ = await _post(client, erp, body, "application/json")
    assert status == 400
    patched = await client.patch(
        f"/api/v1/triggers/{erp['id']}", json={"charset": "windows-1252"}, headers=auth()
    )
    assert patched.status == 200, await patched.text()
    status, answer = await _post(client, erp, body, "application/json")
    assert status == 200, answer
    assert (await _attributes(client))["operator"] == "Conceição"
    utf_8 = json.dumps({**PAYLOAD, "operador": "Conceição!"}, ensure_ascii=False).encode()
    status, answer = await _post(client, erp, utf_8, "application/json")
    assert status == 200, answer
    assert (await _attributes(client))["operator"] == "Conceição!"
    cleared = await client.patch(
        f"/api/v1/triggers/{erp['id']}", json={"charset": None}, headers=auth()
    )
    assert (await cleared.json())["charset"] is None


ERP_DRIVER_XML = """
name: erp-driver-xml
direction: inbound
entity_type: driver
key: [cpf]
fields:
  cpf: {from: SRA.RA_CIC, transforms: [cpf], required: true}
  name: {from: SRA.RA_NOME, transforms: [trim]}
"""
DRIVER_XML = "<SRA><RA_CIC>529.982.247-25</RA_CIC><RA_NOME>{name}</RA_NOME></SRA>"


async def _driver_name(client: Client) -> str:
    response = await client.get("/api/v1/entities/driver", headers=auth("acme"))
    assert response.status == 200, await response.text()
    (driver,) = (await response.json())["items"]
    return str(driver["name"])


async def test_xml_that_names_no_encoding_is_read_in_the_triggers_charset_when_not_utf_8(
    client: Client,
) -> None:
    """A Delphi ERP posting windows-1252 XML with no declaration under a bare `text/xml`: the
    trigger's `charset` was ignored for XML, and the 400 said `not well-formed (invalid
    token)`. A document that names no encoding (no byte order mark, no declaration's
    `encoding`, no charset in its media type) is read in the trigger's when it is not UTF-8;
    one that names its own is read in that, and UTF-8 stays UTF-8."""
    await upload_mapping(client, ERP_DRIVER_XML)
    spec = {"entity_type": "driver", "mapping": "erp-driver-xml", "format": "xml"}
    bare = await create_trigger(client, name="bare", **spec)
    delphi = await create_trigger(client, name="delphi", charset="windows-1252", **spec)
    latin = DRIVER_XML.format(name="JOÃO DA CONCEIÇÃO – “ERP”").encode("cp1252")

    status, answer = await _post(client, bare, latin, "text/xml")
    assert status == 400, answer
    assert answer["detail"] == (
        "malformed XML: line 1, column 48: the body is not valid UTF-8 (byte 47) and names no "
        "other encoding; a partner that sends another names it: Content-Type: text/xml; "
        'charset=ISO-8859-1, or an XML declaration <?xml version="1.0" encoding="ISO-8859-1"?> '
        '(or the trigger says it: "charset": "windows-1252")'
    )

    status, answer = await _post(client, delphi, latin, "text/xml")
    assert status == 201, answer
    assert await _driver_name(client) == "JOÃO DA CONCEIÇÃO – “ERP”"
    for name, document, content_type in (
        ("JOÃO UTF-8", DRIVER_XML.format(name="JOÃO UTF-8").encode(), "text/xml"),
        (
            "JOÃO LABEL",
            DRIVER_XML.format(name="JOÃO LABEL").encode("cp1252"),
            "text/xml; charset=iso-8859-1",
        ),
        (
            "JOÃO DECL",
            (
                '<?xml version="1.0" encoding="ISO-8859-1"?>' + DRIVER_XML.format(name="JOÃO DECL")
            ).encode("latin-1"),
            "application/xml",
        ),
        (
            "JOÃO UTF-8 DECL",
            (
                '<?xml version="1.0" encoding="UTF-8"?>' + DRIVER_XML.format(name="JOÃO UTF-8 DECL")
            ).encode(),
            "application/xml",
        ),
    ):
        status, answer = await _post(client, delphi, document, content_type)
        assert status == 200, (name, answer)
        assert await _driver_name(client) == name
    # A declaration is the document's word: UTF-8 declared, windows-1252 bytes are refused.
    declared = ('<?xml version="1.0" encoding="UTF-8"?>' + DRIVER_XML.format(name="JOÃO")).encode(
        "cp1252"
    )
    status, answer = await _post(client, delphi, declared, "text/xml")
    assert status == 400, answer
