"""`megacontext serve`: an OpenAI-compatible HTTP server whose conversations live in stores.

Endpoints: `GET /v1/models`, `POST /v1/chat/completions` (streaming over SSE or not),
`GET /v1/conversations/{id}` (stats, live focus map, latest FocusPlans) and `GET /viewer/{id}`
(the focus viewer page). Each conversation is one store under `--stores DIR`, chosen by the
`X-MegaContext-Conversation` header or a `conversation` field in the request body (default
`default`); it is created on first use. Only messages the store has not seen are appended, so a
client may send the whole history or just the newest turn. Requests for one conversation are
serialised; different conversations run side by side.
"""

from megacontext.serve.app import create_app, serve
from megacontext.serve.conversations import CONVERSATION_HEADER

__all__ = ["CONVERSATION_HEADER", "create_app", "serve"]
