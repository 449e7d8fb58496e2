"""The triage page and the node's worklist on screen (`chestaid serve`): app (the page), worklist_view, auth
(users file, API tokens, SSO header), security (the guard: logins, same origin, headers, upload checks),
uploads (the private upload folder), inputs (age/sex/view, plain text), server (uvicorn, TLS, refusals)."""

from chestaid.apps.page.server import ServeOptions, serve

__all__ = ["ServeOptions", "serve"]
