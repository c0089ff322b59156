"""The coordinator's web face: a dashboard of studies and nodes, and a GA4GH WES 1.1 endpoint.

`federation serve --coordinator COORDINATOR.yaml` runs `app.create_app` under uvicorn, bound
to 127.0.0.1 unless the config's `dashboard.host` says otherwise. Every request carries a
token from the config's `dashboard.tokens` (a login cookie for pages, `Authorization: Bearer`
for the API); a missing or wrong token gets 401, a read-only token that asks to submit or
cancel gets 403. Fail closed: a server without tokens does not start.

Modules: `auth` (tokens and roles), `live` (the background reader that keeps the ledger in
step with the nodes and notices changes), `views` (the JSON documents every page shows),
`wes` (the GA4GH WES router and how study and task states map to WES states), `app` (pages,
the `/api/...` twin of each, files, cancel, server-sent events). Templates and the one plain
JavaScript file are in the package: no build step, nothing loaded from elsewhere.
"""
