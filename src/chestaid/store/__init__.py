"""The node's store (chestaid.store.database): received instances on disk and the worklist, outbox, reviews and
audit trail (SQLite, or PostgreSQL for several nodes) that the node, the page, the API and `worklist`/`audit` share."""

from chestaid.store.database import STATES, Instance, Store, durable_write
from chestaid.store.engine import DATABASE_ERRORS, DB_NAME, URL_FILE
from chestaid.store.records import NO_RESULT_OBJECTS, Decision, FindingScore, State
from chestaid.store.reviews import AUDIT_ACTIONS, PRIORITY, PRIORITY_VERDICTS, VERDICTS

__all__ = ["AUDIT_ACTIONS", "DATABASE_ERRORS", "DB_NAME", "URL_FILE", "NO_RESULT_OBJECTS", "Decision", "FindingScore", "Instance", "State", "PRIORITY", "PRIORITY_VERDICTS", "STATES", "Store", "VERDICTS",
           "durable_write"]
