"""Triggers ("webhook como gatilho"): inbound webhooks through which partners write and read
one entity type of one tenant.

    service.TriggerService     admins: create, list, get, update, enable/disable, delete,
                               rotate and revoke credentials
    receiver.HookReceiver      partners: POST/GET /hooks/{id} (admission, idempotency, reads)
    compiled.TriggerConfigs    a trigger's configuration compiled once per version
    ingest.Ingestor            a payload, one item or a batch → the pipeline → the answer
    pipeline.Pipeline          one item: validate → map → locate → upsert (shared with replays)
    rejected.RejectedKeeper    422'd payloads kept, bounded, with their reason
    replay.RejectedPayloads    the kept payloads: list, get, replay one or all
"""

from gateway.triggers.ingest import Ingestor
from gateway.triggers.model import BodyReader, HookAnswer, HookCall
from gateway.triggers.receiver import HookReceiver
from gateway.triggers.replay import RejectedPayloads
from gateway.triggers.service import IssuedTrigger, TriggerService

__all__ = [
    "BodyReader",
    "HookAnswer",
    "HookCall",
    "HookReceiver",
    "Ingestor",
    "IssuedTrigger",
    "RejectedPayloads",
    "TriggerService",
]
