"""The demo tenant's integrations and automations: the partners the four seed scenarios talk
to (an HR system, an ERP, an SMS provider shaped like Zenvia, FCM), their actions, the
channels (e-mail to a local SMTP server, push, SMS), the templates and flows of `flows/`, and
who drives the demo's vehicles.

Every partner lives at `partners_url` (`gateway demo-partners` serves doubles of them all,
and an SMTP server that prints what it gets, at `smtp_port`; `gateway demo --partners-port
--smtp-port` name others). Seeding is idempotent: what exists already (by name) is left
alone, except the partners and the e-mail channel, moved to `partners_url` and `smtp_port`
when they name others (the demo run again with other ports).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.actions.service import ActionService
from gateway.errors import Conflict, InvalidPayload
from gateway.notify.wiring import NotifyServices

log = logging.getLogger(__name__)

DEFAULT_PARTNERS_URL = "http://127.0.0.1:8090"
DEFAULT_SMTP_PORT = 8025
FCM_PROJECT = "rabbot-demo"
# Who drives the demo's vehicles (the HR double answers the same).
ASSIGNMENTS = {"ABC1D23": "52998224725", "BRA2E19": "11144477735"}
SINCE = datetime.fromisoformat("2026-01-05T08:00:00-03:00")


@dataclass(frozen=True, slots=True)
class DemoAutomations:
    partners: int
    flows: int


async def seed_automations(
    actions: ActionService,
    notify: NotifyServices,
    tenant: str,
    flows_dir: Path,
    *,
    partners_url: str = DEFAULT_PARTNERS_URL,
    smtp_port: int = DEFAULT_SMTP_PORT,
) -> DemoAutomations:
    """Needs the shipped mappings (`seed_mappings`) and the demo's entities first."""
    partners = await _partners(actions, tenant, partners_url.rstrip("/"))
    action_ids = await _actions(actions, tenant, partners)
    await _channels(notify, tenant, partners["FCM"], action_ids["sms"], smtp_port)
    for file in sorted((flows_dir / "templates").glob("*.yaml")):
        try:
            await notify.templates.create(tenant, yaml.safe_load(file.read_text()), "demo")
        except Conflict:
            pass  # seeded before
    loaded = 0
    for file in sorted(flows_dir.glob("*.yaml")):
        try:
            await notify.flows.upload(tenant, file.read_bytes(), author="demo", filename=file.name)
            loaded += 1
        except InvalidPayload as exc:
            log.warning("demo flow %s not loaded: %s", file.name, exc.detail)
    for plate, cpf in ASSIGNMENTS.items():
        await notify.assignments.assign(tenant, plate, cpf, start=SINCE, ref="demo", author="demo")
    return DemoAutomations(len(partners), loaded)


async def _partners(actions: ActionService, tenant: str, base: str) -> dict[str, str]:
    """name → id of the demo's partners, created when missing."""
    specs: dict[str, dict[str, Any]] = {
        "HR": {"base_url": f"{base}/hr", "auth": {"type": "bearer", "token": "demo-hr-token"}},
        "ERP": {
            "base_url": f"{base}/erp",
            "auth": {"type": "none"},
            "secrets": {"erp_token": "demo-erp-token"},
        },
        "Zenvia": {
            "base_url": f"{base}/zenvia",
            "auth": {"type": "header", "name": "X-API-TOKEN", "value": "demo-zenvia-token"},
        },
        "FCM": {
            "base_url": f"{base}/fcm",
            "auth": {"type": "google_service_account", "service_account": _service_account(base)},
        },
    }
    existing = {
        p["name"]: str(p["_id"]) for p in await actions.list_partners(tenant, after=None, limit=200)
    }
    for name, spec in specs.items():
        if name not in existing:
            created = await actions.create_partner(tenant, {"name": name, **spec})
            existing[name] = str(created["_id"])
        elif (await actions.get_partner(tenant, existing[name]))["base_url"] != spec["base_url"]:
            # another address: the partner's credentials go with it (a new origin needs them)
            await actions.update_partner(tenant, existing[name], spec)
    return {name: existing[name] for name in specs}


async def _actions(actions: ActionService, tenant: str, partners: dict[str, str]) -> dict[str, str]:
    specs: list[dict[str, Any]] = [
        {
            "name": "hr-driver-lookup",
            "partner_id": partners["HR"],
            "method": "GET",
            "path": "/veiculos/{plate}/condutor-atual",
            "mode": "proxy",
            "request_mapping": "hr-driver-lookup",
            "response_mapping": "hr-driver-lookup",
        },
        {
            "name": "erp-fine-paid",
            "partner_id": partners["ERP"],
            "method": "PUT",
            "path": "/multas/{ait}/pagamento",
            "mode": "deliver",
            "request_mapping": "erp-fine-paid",
            # A fine's PUTs (its payment, then the driver or the notice's amount) replace each
            # other: a retry never lands after the one that completed it.
            "ordered": True,
        },
        {
            "name": "erp-mileage",
            "partner_id": partners["ERP"],
            "method": "POST",
            "path": "/veiculos/quilometragem",
            "mode": "deliver",
            "request_mapping": "erp-mileage",
            "ordered": True,  # the ERP never hears a vehicle's mileage go back
        },
        {
            "name": "sms",
            "partner_id": partners["Zenvia"],
            "method": "POST",
            "path": "/v2/channels/sms/messages",
            "mode": "deliver",
            "request_mapping": "sms-zenvia",
        },
    ]
    existing = {
        a["name"]: str(a["_id"])
        for a in await actions.list_actions(tenant, {}, after=None, limit=200)
    }
    for spec in specs:
        if spec["name"] not in existing:
            created = await actions.create_action(tenant, spec)
            existing[spec["name"]] = str(created["_id"])
    return existing


async def _channels(
    notify: NotifyServices, tenant: str, fcm_partner: str, sms_action: str, smtp_port: int
) -> None:
    specs: list[dict[str, Any]] = [
        {
            "name": "email",
            "type": "email",
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none"},
            "from": "Frota Demo <alertas@demo.rabbot.dev>",
        },
        {"name": "push", "type": "push", "partner_id": fcm_partner, "project_id": FCM_PROJECT},
        {"name": "sms", "type": "sms", "action_id": sms_action, "from": "RABBOT"},
    ]
    for spec in specs:
        try:
            await notify.channels.create(tenant, spec)
        except Conflict:  # seeded before; the e-mail channel follows the SMTP port asked for
            smtp = (await notify.channels.get(tenant, spec["name"])).get("smtp") or {}
            if spec["type"] == "email" and any(smtp.get(k) != v for k, v in spec["smtp"].items()):
                await notify.channels.update(tenant, spec["name"], {"smtp": spec["smtp"]})


def _service_account(base: str) -> dict[str, str]:
    """A key made for the demo: the FCM double takes any assertion signed with it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": FCM_PROJECT,
        "private_key_id": "demo",
        "private_key": pem,
        "client_email": f"gateway@{FCM_PROJECT}.iam.gserviceaccount.com",
        "token_uri": f"{base}/fcm/token",
    }
