"""An uploaded mapping file is read by one function (`mapping.loader.file_text`), through the
admin API and the admin UI alike: its byte order mark's encoding (Notepad's "Unicode" is
UTF-16), else UTF-8, else the charset its part's Content-Type names; a file of none of these
is refused in the same words, saying how to fix it."""

from __future__ import annotations

import html
import re
from typing import Any

import aiohttp

from gateway.services import Services
from tests.support import auth
from tests.ui_support import Client, csrf, log_in, make_user


def _mapping(name: str) -> str:
    return (
        f"name: {name}\ndescription: veículos de São Paulo\ndirection: inbound\n"
        "entity_type: vehicle\nkey: [plate]\nfields:\n  plate: placa\n"
    )


# (how the file was saved, its bytes from a text, the part's Content-Type)
FILES: list[tuple[str, Any, str | None]] = [
    ("utf-16 with its bom", lambda text: text.encode("utf-16"), None),
    ("latin-1 named", lambda text: text.encode("latin-1"), "application/yaml; charset=latin-1"),
]


def _part(name: str, body: bytes, content_type: str | None) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", body, filename=f"{name}.yaml", content_type=content_type)
    return form


async def _via_api(client: Client, body: bytes, content_type: str | None) -> Any:
    answer = await client.post(
        "/api/v1/mappings", data=_part("m", body, content_type), headers=auth()
    )
    return answer.status, await answer.json()


async def _via_ui(client: Client, body: bytes, content_type: str | None) -> Any:
    form = _part("m", body, content_type)
    form.add_field("csrf", await csrf(client, "/admin/mappings"))
    form.add_field("activate", "on")
    answer = await client.post("/admin/mappings", data=form, allow_redirects=False)
    return answer.status, await answer.text()


async def test_a_mapping_file_is_read_alike_through_the_api_and_the_admin_ui(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    for saved, encode, content_type in FILES:
        api, ui = f"api-{saved[:5]}", f"ui-{saved[:5]}"
        status, _ = await _via_api(client, encode(_mapping(api)), content_type)
        assert status == 201, saved
        status, page = await _via_ui(client, encode(_mapping(ui)), content_type)
        assert status == 303, (saved, page)
        for name in (api, ui):
            shown = await client.get(f"/api/v1/mappings/{name}", headers=auth())
            doc = await shown.json()
            assert shown.status == 200 and doc["source"] == _mapping(name), (saved, doc)


async def test_a_mapping_file_of_no_readable_encoding_is_refused_in_the_same_words(
    client: Client, services: Services
) -> None:
    """A windows-1252 file that names no charset; one naming a charset nobody knows."""
    await make_user(services)
    await log_in(client)
    text = _mapping("acentos")
    for body, content_type in (
        (text.encode("cp1252"), None),
        (text.encode("cp1252"), "application/yaml; charset=no-such-charset"),
    ):
        status, problem = await _via_api(client, body, content_type)
        assert status == 422, problem
        [said] = [e["message"] for e in problem["errors"]]
        status, page = await _via_ui(client, body, content_type)
        assert status == 422, page
        block = re.search(r'data-testid="upload-problems">(.*?)</ul>', page, re.S)
        assert block is not None, page
        shown = html.unescape(re.sub(r"<[^>]+>", " ", block.group(1)))
        assert said in " ".join(shown.split()), (said, shown)
        assert "Formato inválido" in shown
