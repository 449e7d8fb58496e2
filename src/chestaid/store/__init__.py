"""The node's store (chestaid.store.database): received instances on disk and the SQLite worklist, outbox, reviews
and audit trail that the node, the page, the API and `worklist`/`audit` share."""

from chestaid.store.database import DB_NAME, STATES, Instance, Store, durable_write
from chestaid.store.records import NO_RESULT_OBJECTS, Decision, FindingScore, State
from chestaid.store.reviews import AUDIT_ACTIONS, PRIORITY, PRIORITY_VERDICTS, VERDICTS

__all__ = ["AUDIT_ACTIONS", "DB_NAME", "NO_RESULT_OBJECTS", "Decision", "FindingScore", "Instance", "State", "PRIORITY", "PRIORITY_VERDICTS", "STATES", "Store", "VERDICTS",
           "durable_write"]
