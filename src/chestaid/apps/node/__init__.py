"""The DICOM node (`chestaid node`, `chestaid worklist`): receive by C-STORE, score on arrival into a persistent
worklist, send the results back as DICOM objects. Only chestaid.apps.cli imports this package."""

from chestaid.store import Store

__all__ = ["Store"]
